"""Small file helpers shared by fetching and staging: streaming hashes and atomic placement.

Nothing half-written is ever visible under a final name: files and folders are built under a
unique `*.incomplete` name beside their destination and renamed into place only when whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """sha256 of a file, streamed in 1 MiB chunks (never the whole file in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def temp_sibling(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:12]}.incomplete")


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
    except BaseException:
        remove(tmp)
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
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, dumps_stable(data))
