"""Small file helpers shared by fetching and staging: streaming hashes and atomic placement.

Nothing half-written is ever visible under a final name: files and folders are built under a
unique `.<name>.<pid>-<uuid>.incomplete` name beside their destination and renamed into place only
when whole. A writer killed with SIGKILL cannot clean up, so the pid in the name lets the next
writer of the same destination remove what a dead process left (never a live one's).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from stages.errors import disk_full_cause

TEMP_RE = re.compile(r"\.(.+)\.([1-9]\d{0,8})-[0-9a-f]{12}\.incomplete")  # temp_sibling's names: name, pid


def sha256_file(path: Path) -> str:
    """sha256 of a file, streamed (never the whole file in memory)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def hash_stream(src, out=None, chunk: int = 1 << 20) -> tuple[int, str, str]:
    """(size, md5, sha256) of a readable binary stream in one pass, copying it to `out` when given."""
    md5, sha, size = hashlib.md5(), hashlib.sha256(), 0
    while data := src.read(chunk):
        md5.update(data)
        sha.update(data)
        size += len(data)
        if out is not None:
            out.write(data)
    return size, md5.hexdigest(), sha.hexdigest()


def loads_object(data: bytes | None) -> dict | None:
    """A JSON object read from git or disk, or None when there is none (no bytes, not JSON, not an object)."""
    try:
        value = json.loads(data) if data is not None else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def human_size(size: int) -> str:
    """Bytes for people: `812 B`, `28.3 KiB`, `5.4 MiB`, `1.2 GiB`."""
    if size < 1024:
        return f"{size} B"
    value, unit = size / 1024, "KiB"
    for bigger in ("MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"


def temp_sibling(dest: Path) -> Path:
    """A fresh temp name beside `dest` carrying this process's pid; first sweeps dead writers' temps of `dest`."""
    sweep_stale(dest)
    return dest.with_name(f".{dest.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.incomplete")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: nothing is sent, only whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        pass
    return True


def sweep_stale(dest: Path) -> list[Path]:
    """Remove the temp siblings of `dest` whose writer process is gone (killed mid-write); returns them.

    Only names of temp_sibling's shape for this very `dest` are touched, and only when their pid is
    not a live process: a concurrent writer's temp stays.
    """
    prefix = f".{dest.name}."
    try:  # a folder of thousands of models: the scan stays in C but for this destination's few names
        with os.scandir(dest.parent) as scan:
            names = [e.name for e in scan if e.name.startswith(prefix) and e.name.endswith(".incomplete")]
    except FileNotFoundError:
        return []
    stale = [dest.parent / name for name in names
             if (m := TEMP_RE.fullmatch(name)) and m.group(1) == dest.name and not _alive(int(m.group(2)))]
    for path in stale:
        remove(path)
    return stale


def final_path(path: str | os.PathLike) -> Path:
    """The path a temp path will have once placed: each `.<name>.<pid>-<uuid>.incomplete` part becomes `<name>`."""
    return Path(*(m.group(1) if (m := TEMP_RE.fullmatch(part)) else part for part in Path(path).parts))


def _name_disk_full(exc: BaseException, where: Path) -> None:
    """Make a disk-full OSError behind `exc` name the final path of the file being written (`where` when it names
    none: a bare write() error), so the CLI's one line says which file, not a temp name or a copy's source."""
    cause = disk_full_cause(exc)
    if cause is not None:
        cause.filename, cause.filename2 = str(final_path(cause.filename2 or cause.filename or where)), None


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def replace_dir(tmp: Path, dest: Path) -> None:
    """Move a finished folder into place, replacing any previous one without a moment of mixed content."""
    old = None
    if dest.exists():
        old = temp_sibling(dest)
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old is not None:
        remove(old)


@contextmanager
def building_dir(dest: Path) -> Iterator[Path]:
    """Yield a fresh temp folder beside `dest`; on success it replaces `dest`, on error it is removed."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(dest)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException as exc:
        remove(tmp)
        _name_disk_full(exc, dest)
        raise
    replace_dir(tmp, dest)


def dumps_stable(data: Any) -> str:
    """Canonical JSON (sorted keys, 2-space indent, trailing newline) so equal data gives equal bytes."""
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        _name_disk_full(exc, path)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, dumps_stable(data))
