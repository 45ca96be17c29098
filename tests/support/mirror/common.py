"""Helpers the fixture builders share (fixtures, torch_fixtures, tf_fixtures): hashing, placing bytes where
the mirror serves a URL, reading a folder, publishing a Hugging Face repo."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def place(root: Path, url: str, data: bytes) -> tuple[str, str]:
    """Put `data` where the mirror serves https `url`; returns (mirror-relative path, sha256).

    Same layout as tests.support.mirror.fixtures.publish, but atomic and a no-op when the bytes are
    already there: the builders may run again into a root a live mirror is serving.
    """
    assert url.startswith("https://"), url
    root = Path(root)
    rel = url[len("https://"):].split("?")[0]
    path = root / rel
    if not (path.is_file() and path.read_bytes() == data):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return rel, sha256_hex(data)


def read_dir(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`, by its posix path relative to it."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def hf_files(root: Path, repo: str, files: dict[str, bytes]) -> tuple[str, dict[str, str]]:
    """Add the repo commit; return it and {mirror path of each file's resolve URL: sha256}."""
    from tests.support.mirror.server import add_hf_repo

    commit = add_hf_repo(Path(root), repo, files)
    return commit, {f"huggingface.co/{repo}/resolve/{commit}/{name}": sha256_hex(data) for name, data in sorted(files.items())}
