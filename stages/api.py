"""Use a staged model from another repository, at a pinned zoo release, through `dvc.api`.

    from stages.api import download
    model = download("resnet50", "models/resnet50", repo="https://github.com/org/zoo", release="zoo-v1.0.0")
    model.path / "model.onnx"; model.commit; model.files   # what was returned, at which commit

Every file is checked against the manifest of that release before it is returned, so the caller
knows exactly which bytes it got.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.errors import ModelNotFound, ZooError
from stages.files import building_dir, sha256_file


@dataclass(frozen=True)
class StagedModel:
    name: str
    format: str
    release: str          # the revision asked for (a zoo-v* tag, branch or commit)
    commit: str           # the git commit it resolved to
    path: Path            # the local folder with the staged files
    files: dict[str, str]  # relative path -> sha256, checked against the release's manifest
    manifest: dict[str, Any]


def _fs(repo: str, release: str | None, remote_config: dict | None):
    from dvc.api import DVCFileSystem

    return DVCFileSystem(repo, rev=release, remote_config=remote_config)


def latest_release(repo: str) -> str:
    """The highest `zoo-v<semver>` tag of a registry (a local path or a git URL)."""
    import subprocess

    from stages.gitio import RELEASE_TAG_RE, semver_key

    out = subprocess.run(["git", "ls-remote", "--tags", "--refs", repo, "zoo-v*"],
                         capture_output=True, text=True, check=True).stdout
    tags = [line.split("refs/tags/")[1] for line in out.splitlines() if "refs/tags/" in line]
    tags = [t for t in tags if RELEASE_TAG_RE.match(t)]
    if not tags:
        raise ModelNotFound(f"{repo} has no zoo-v* release tags", fix="pass release=<branch or commit> or tag a release")
    return max(tags, key=semver_key)


def manifest(name: str, *, repo: str, release: str | None = None, format: str = "onnx",
             remote_config: dict | None = None) -> dict[str, Any]:
    fs = _fs(repo, release, remote_config)
    path = f"/registry/{format}/{name}.manifest.json"
    if not fs.exists(path):
        raise ModelNotFound(f"{repo}@{release or 'HEAD'}: no staged model registry/{format}/{name}",
                            fix="check the name and format against that release's registry/ folder")
    return json.loads(fs.read_text(path))


def download(name: str, dest: Path | str, *, repo: str, release: str | None = None, format: str = "onnx",
             remote_config: dict | None = None) -> StagedModel:
    """Download one staged model at a release into `dest` (replaced whole), verified against its manifest."""
    release = release or latest_release(repo)
    fs = _fs(repo, release, remote_config)
    data = manifest(name, repo=repo, release=release, format=format, remote_config=remote_config)
    dest = Path(dest)
    with building_dir(dest) as tmp:
        for rel in sorted(data["files"]):  # exactly the files the release's manifest lists
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(f"/registry/{format}/{name}/{rel}", str(tmp / rel))
        got = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        expected = {rel: rec["sha256"] for rel, rec in data["files"].items()}
        if got != expected:
            bad = sorted(set(got.items()) ^ set(expected.items()))
            raise ZooError(f"{name}@{release}: downloaded files differ from the release's manifest ({bad[:3]})",
                           fix="the remote holds other bytes than the release recorded; report it to the registry")
    commit = fs.repo.scm.resolve_rev(release) if hasattr(fs, "repo") else release
    return StagedModel(name=name, format=format, release=release, commit=commit, path=dest, files=got, manifest=data)
