"""stages.archives on hand-built archives: unsafe entries refused in one line, good ones extracted."""

from __future__ import annotations

import io
import re
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from stages.archives import extract_matching, extract_zip
from stages.errors import UnsafeArchiveError


def make_zip(path: Path, entries: list[tuple[str, bytes]], symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries:
            zf.writestr(name, data)
        if symlink is not None:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return path


def make_tar(path: Path, files: list[tuple[str, bytes]], extra: list[tarfile.TarInfo] = ()) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
    return path


def test_good_zip_extracts_every_file(tmp_path):
    archive = make_zip(tmp_path / "good.zip", [("repo-abc/hubconf.py", b"dependencies = []\n"),
                                               ("repo-abc/models/net.py", b"x = 1\n")])
    names = extract_zip(archive, tmp_path / "out")
    assert names == ["repo-abc/hubconf.py", "repo-abc/models/net.py"]
    assert (tmp_path / "out/repo-abc/models/net.py").read_bytes() == b"x = 1\n"


@pytest.mark.parametrize("entries,symlink,problem", [
    ([("../x", b"evil")], None, "entry '../x' would extract outside the target folder"),
    ([("/etc/x", b"evil")], None, "entry '/etc/x' has an absolute path"),
    ([], "repo/link", "entry 'repo/link' is a symbolic link"),
])
def test_unsafe_zip_is_refused_and_nothing_extracted(tmp_path, entries, symlink, problem):
    archive = make_zip(tmp_path / "evil.zip", [("ok.txt", b"fine"), *entries], symlink)
    with pytest.raises(UnsafeArchiveError, match=re.escape(f"{archive}: {problem}")) as info:
        extract_zip(archive, tmp_path / "out")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / "x").exists()


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def test_tar_extracts_only_the_matching_files_under_the_stripped_name(tmp_path):
    archive = make_tar(tmp_path / "a.tar.gz", [("top/model.onnx", b"m"), ("top/test_data_set_0/input_0.pb", b"i")],
                       [link("top/test_data_set_0/alias.pb", "input_0.pb")])  # a link pointing inside: fine
    written = extract_matching(archive, re.compile(r"\.pb$"), tmp_path / "out", re.compile(r"test_data_set_\d+/.*"))
    assert written == ["test_data_set_0/input_0.pb"]
    assert (tmp_path / "out/test_data_set_0/input_0.pb").read_bytes() == b"i"


@pytest.mark.parametrize("member,problem", [
    (link("top/a.pb", "/etc/passwd"), "link 'top/a.pb' -> '/etc/passwd' points outside the archive"),
    (link("top/a.pb", "../../secret"), "link 'top/a.pb' -> '../../secret' points outside the archive"),
    (link("top/a.pb", "../../secret", tarfile.LNKTYPE), "link 'top/a.pb' -> '../../secret' points outside"),
    (link("top/fifo", "", tarfile.FIFOTYPE), "entry 'top/fifo' is a device or fifo"),
    (link("top/../../evil.pb", "", tarfile.REGTYPE), "entry 'top/../../evil.pb' would extract outside the target"),
])
def test_unsafe_tar_entry_is_refused_in_one_line(tmp_path, member, problem):
    archive = make_tar(tmp_path / "evil.tar.gz", [("top/model.onnx", b"m")], [member])
    with pytest.raises(UnsafeArchiveError, match=re.escape(f"{archive}: {problem}")) as info:
        extract_matching(archive, re.compile(r"."), tmp_path / "out", re.compile(r".*"))
    assert "\n" not in str(info.value) and not (tmp_path / "out").exists()
