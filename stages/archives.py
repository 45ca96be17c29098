"""Safe reading of upstream archives (the ONNX zoo's .tar.gz, TF Hub's compressed SavedModels).

An archive is untrusted input. Every entry is checked before anything is read: absolute paths,
`..` components, links pointing out and device files are refused with the entry's name (tar links
and special files by Python's `tarfile.data_filter`), and only the entries asked for are
extracted, by name, into a folder we choose.
"""

from __future__ import annotations

import posixpath
import re
import shutil
import tarfile
import zipfile
import zlib
from pathlib import Path

from stages.errors import StagingError, UnsafeArchiveError


def check_entry_name(archive: Path, name: str) -> str:
    """Return the normalised relative name, or refuse one that would land outside the target folder."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise UnsafeArchiveError(f"{archive}: entry {name!r} has an absolute path",
                                 fix="refusing to extract it; the archive is malformed or malicious, get it from a trusted source")
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        raise UnsafeArchiveError(f"{archive}: entry {name!r} would extract outside the target folder ('..')",
                                 fix="refusing to extract it; the archive is malformed or malicious, get it from a trusted source")
    return posixpath.normpath("/".join(p for p in parts if p not in ("", ".")) or ".")


def _check_tar_member(archive: Path, member: tarfile.TarInfo, dest: Path) -> None:
    check_entry_name(archive, member.name)
    try:
        tarfile.data_filter(member, str(dest))
    except (tarfile.AbsoluteLinkError, tarfile.LinkOutsideDestinationError):
        raise UnsafeArchiveError(f"{archive}: link {member.name!r} -> {member.linkname!r} points outside the archive",
                                 fix="refusing to extract it; the archive is malformed or malicious") from None
    except tarfile.FilterError as exc:  # SpecialFileError: a device or fifo
        what = "is a device or fifo" if isinstance(exc, tarfile.SpecialFileError) else f"is refused: {exc}"
        raise UnsafeArchiveError(f"{archive}: entry {member.name!r} {what}",
                                 fix="refusing to extract it; the archive is malformed or malicious") from None


def open_tar(archive: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise StagingError(f"{archive}: not a readable tar archive ({exc})",
                           fix="the download is damaged or not the archive the card means; check `source.test_data`") from None


def extract_matching(archive: Path, pattern: re.Pattern, dest: Path, strip_to: re.Pattern) -> list[str]:
    """Extract regular files whose name matches `pattern` into `dest`.

    Every member is checked first (one bad entry refuses the whole archive). The destination name is
    the part of the member name matched by `strip_to` (e.g. `test_data_set_0/input_0.pb`), so the
    archive's top folder never decides where files land. Returns the relative names written.
    """
    written: list[str] = []
    with open_tar(archive) as tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise StagingError(f"{archive}: the archive is truncated or damaged ({exc})",
                               fix="refetch it (`dvc repro --force fetch@<name>`); if it persists the upstream file is bad") from None
        for member in members:
            _check_tar_member(archive, member, dest)
        for member in members:
            name = check_entry_name(archive, member.name)
            if not member.isfile() or not pattern.search(name):
                continue
            rel = strip_to.search(name).group(0)
            target = dest / rel
            if rel in written:
                raise StagingError(f"{archive}: two entries map to {rel!r}",
                                   fix="the archive holds two models' test data; point the card at one model's archive")
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            written.append(rel)
    return sorted(written)


def extract_zip(archive: Path, dest: Path) -> list[str]:
    """Extract a zip after checking every entry: no absolute paths, no '..', no symlinks."""
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            check_entry_name(archive, info.filename)
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise UnsafeArchiveError(f"{archive}: entry {info.filename!r} is a symbolic link",
                                         fix="refusing to extract it; the archive is malformed or malicious")
        names = []
        for info in infos:
            if info.is_dir():
                continue
            target = dest / check_entry_name(archive, info.filename)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                out.write(src.read())
            names.append(info.filename)
        return names
