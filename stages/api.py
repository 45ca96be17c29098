"""Use a staged model from another repository, at a pinned zoo release.

    from stages.api import download
    model = download("resnet50", "models/resnet50", repo="https://github.com/org/zoo", release="zoo-v1.0.0")
    model.path / "model.onnx"; model.commit; model.files   # what was returned, at which commit

The same path as `zoo pull` (stages.pull), so its cost does not grow with the zoo: the release's
index, one shard's `dvc.lock`, the manifest and `.dvc/config` are read from git (a local repository
directly; a URL through a shallow clone without file contents, `--filter=blob:none`, whose four
files are then fetched, where the server allows partial clones), and the folder's objects come from
the release's DVC remote through DVC's own config and remote filesystem. This module used `dvc.api`
(DVCFileSystem) before, which collects every stage of the repository first: 5.7 s for one tiny
model of a 200-card zoo, against 0.54 to 0.78 s now (two runs of `make bench`, section `pull`).

Every file is checked against the manifest of that release before it is returned, so the caller
knows exactly which bytes it got; `dest` is replaced whole, or left as it was on any error.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from stages.errors import GitError, ModelNotFound, ZooError  # noqa: F401  (ModelNotFound: importable from here)


@dataclass(frozen=True)
class StagedModel:
    name: str
    format: str
    release: str          # the revision asked for (a zoo-v* tag, branch or commit)
    commit: str           # the git commit it resolved to
    path: Path            # the local folder with the staged files
    files: dict[str, str]  # relative path -> sha256, checked against the release's manifest
    manifest: dict[str, Any]


def latest_release(repo: str) -> str:
    """The highest `zoo-v<semver>` tag of a registry (a local path or a git URL)."""
    from stages.gitio import RELEASE_TAG_RE, semver_key

    proc = subprocess.run(["git", "ls-remote", "--tags", "--refs", repo, "zoo-v*"], capture_output=True, text=True)
    if proc.returncode != 0:
        first = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise GitError(f"`git ls-remote {repo}` failed: {first}",
                       fix="check the repository URL or path and your git credentials")
    out = proc.stdout
    tags = [line.split("refs/tags/")[1] for line in out.splitlines() if "refs/tags/" in line]
    tags = [t for t in tags if RELEASE_TAG_RE.match(t)]
    if not tags:
        raise ModelNotFound(f"{repo} has no zoo-v* release tags", fix="pass release=<branch or commit> or tag a release")
    return max(tags, key=semver_key)


def _spelling(name: str, format: str | None) -> str:
    return name if format is None or "/" in name else f"{format}/{name}"


@contextmanager
def _revision(repo: str, release: str, work: Path) -> Iterator[tuple[Any, Path | None]]:
    """(stages.pull.Revision at `release`, the repository's own .dvc folder when it has one on disk)."""
    from stages.pull import Revision

    local = Path(repo)
    if local.is_dir():
        yield Revision.of(local, release), (local / ".dvc" if (local / ".dvc").is_dir() else None)
        return
    clone = work / "registry.git"
    attempts = (["--depth", "1", "--branch", release], [])  # a tag or branch; a commit needs the history
    for extra in attempts:
        proc = subprocess.run(["git", "clone", "-q", "--bare", "--filter=blob:none", *extra, repo, str(clone)],
                              capture_output=True, text=True)
        if proc.returncode == 0:
            break
        shutil.rmtree(clone, ignore_errors=True)
    else:
        first = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise GitError(f"`git clone {repo}` failed: {first}",
                       fix="check the repository URL and your git credentials, and the release name")
    yield Revision.of(clone, release), None


def manifest(name: str, *, repo: str, release: str | None = None, format: str | None = None,
             remote_config: dict | None = None) -> dict[str, Any]:
    """The manifest of one staged model at a release (git only: nothing is downloaded)."""
    from stages.pull import locate

    release = release or latest_release(repo)
    with tempfile.TemporaryDirectory(prefix="zoo-api-") as tmp, _revision(repo, release, Path(tmp)) as (revision, _):
        return locate(revision, [_spelling(name, format)])[0].manifest


def download(name: str, dest: Path | str, *, repo: str, release: str | None = None, format: str | None = None,
             remote_config: dict | None = None) -> StagedModel:
    """Download one staged model at a release into `dest` (replaced whole), verified against its manifest.

    `name` is any spelling `zoo pull` takes (`resnet50`, `onnx/resnet50`, `<name>-onnx`); `format`
    picks a format for a bare name (default: the card's own). `remote_config` is merged into the
    release's default DVC remote (e.g. `{"endpointurl": ...}`), as `dvc get --remote-config` does."""
    from stages.pull import Objects, locate, materialize
    from stages.remote import cache_store, load_config

    release = release or latest_release(repo)
    with tempfile.TemporaryDirectory(prefix="zoo-api-") as tmp, _revision(repo, release, Path(tmp)) as (revision, dvc):
        found = locate(revision, [_spelling(name, format)])
        dvc_dir = Path(tmp) / ".dvc"
        dvc_dir.mkdir()
        config_text = revision.read([".dvc/config"])[".dvc/config"]
        (dvc_dir / "config").write_bytes(config_text or b"")
        config = load_config(dvc_dir, local_dvc_dir=dvc, remote_config=remote_config)
        objects = Objects(config, cache_store(config, dvc_dir), notes=lambda line: None)
        dest = Path(dest).resolve()
        got = materialize(found, [dest], objects, force=True)[0]
    target = got.target
    files = {rel: rec["sha256"] for rel, rec in found[0].manifest["files"].items()}
    return StagedModel(name=target.name, format=target.fmt, release=release, commit=revision.commit, path=dest,
                       files=files, manifest=found[0].manifest)
