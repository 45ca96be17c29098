"""Zoo releases: annotated `zoo-v<semver>` tags whose message is the release diff, and safe gc.

A release is refused, with what to do, unless the registry is exactly what a consumer will get:
a clean work tree, no stale DVC stage, no failed or missing validation, and every byte in the
remote.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from stages import diff as zdiff
from stages import gitio
from stages.errors import ReleaseRefused, ZooError

SEMVER_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?$")


def dvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    """Run this environment's DVC (python -m dvc) in the registry."""
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True)


def _dvc_json(root: Path, *args: str, what: str) -> dict:
    proc = dvc(root, *args, "--json")
    if proc.returncode != 0:
        first = (proc.stderr.strip().splitlines() or ["exit %d" % proc.returncode])[-1]
        raise ReleaseRefused(f"cannot check {what}: `dvc {' '.join(args)}` failed: {first}",
                             fix="fix the DVC error above (remote reachable? credentials set?) and retry")
    out = proc.stdout.strip()
    return json.loads(out[out.index("{"):]) if "{" in out else {}


def _short_list(items, n: int = 5) -> str:
    items = list(items)
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def check_releasable(root: Path) -> gitio.Snapshot:
    dirty = gitio.git(root, "status", "--porcelain").decode().splitlines()
    if dirty:
        raise ReleaseRefused(f"the work tree is dirty ({_short_list(line[3:] for line in dirty)})",
                             fix="commit or stash the changes (`git status`), then release")
    stale = _dvc_json(root, "status", what="the pipeline")
    if stale:
        raise ReleaseRefused(f"stale DVC stages: {_short_list(sorted(stale))}",
                             fix="run `dvc repro`, commit the shards' dvc.lock files (registry/_pipeline/) and the manifests, then release")
    snap = gitio.snapshot(root, "HEAD")
    unstaged = sorted(gitio.expected_artifacts(snap.index) - set(snap.manifests))
    if unstaged:
        raise ReleaseRefused(f"cards without a manifest (never staged): {_short_list(unstaged)}",
                             fix="run `dvc repro` and commit, or remove those cards")
    failed = sorted(n for n, m in snap.manifests.items() if not m.get("validation", {}).get("passed"))
    if failed:
        raise ReleaseRefused(f"manifests record a failed validation: {_short_list(failed)}",
                             fix="fix or remove those models; a release never ships a model that failed validation")
    missing = _dvc_json(root, "status", "--cloud", what="the remote")
    if missing:
        raise ReleaseRefused(f"data missing from the remote: {_short_list(sorted(missing))}",
                             fix="run `dvc push`, then release")
    return snap


def release(root: Path, version: str) -> tuple[str, str]:
    """Check, then tag `zoo-v<version>`; returns (tag, message). Tags are not pushed.

    Each model added or changed since the previous release also gets GTO's version tag
    `<name>@v<version>` on the same commit, so `dvc artifacts get`, GTO and DVC Studio's model
    registry see every model's versions; an unchanged model keeps its earlier version. One release
    at a time per repository (a lock in the git folder; a second one waits, then finds the tag), and
    all its tags land in one git transaction: a release killed midway leaves no tag at all.
    """
    if not SEMVER_RE.match(version):
        raise ReleaseRefused(f"{version!r} is not a semantic version", fix="use MAJOR.MINOR.PATCH, e.g. 1.2.0")
    with _release_lock(root):
        tag = f"zoo-v{version}"
        existing = gitio.release_tags(root)
        if tag in existing:
            raise ReleaseRefused(f"{tag} already exists", fix="releases are immutable; pick the next version")
        previous = existing[-1] if existing else None
        if previous and gitio.semver_key(tag) < gitio.semver_key(previous):
            raise ReleaseRefused(f"{tag} is older than the latest release {previous}", fix="pick a version above it")
        snap = check_releasable(root)
        if previous:
            result = zdiff.diff(gitio.snapshot(root, previous), snap)
            body = zdiff.render_markdown(result)
            new_versions = sorted({*result["added"], *result["changed"]})
        else:
            body = f"Initial release: {len(snap.manifests)} models.\n\n" + "".join(
                f"- `{n}` ({m.get('format')})\n" for n, m in sorted(snap.manifests.items()))
            new_versions = sorted(snap.manifests)
        _check_remote_bytes(root, snap, new_versions)
        message = f"zoo {tag[4:]}\n\n{body}"
        tags = {tag: message} | {  # GTO's per-artifact version tags: what `dvc artifacts get` resolves
            f"{name}@v{version}": f"Registering artifact {name} version v{version} (zoo release {tag})\n"
            for name in new_versions}
        _create_tags(root, snap.commit, tags)
    return tag, message


@contextmanager
def _release_lock(root: Path):
    """An exclusive lock on `<git dir>/zoo-release.lock` for one release at a time; the kernel drops it
    when its holder dies, so a killed release never blocks the next."""
    import fcntl

    git_dir = Path(gitio.git(root, "rev-parse", "--git-common-dir").decode().strip())
    path = git_dir if git_dir.is_absolute() else root / git_dir
    with open(path / "zoo-release.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("zoo release: another release is running in this repository; waiting for it", file=sys.stderr)
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _create_tags(root: Path, commit: str, tags: dict[str, str]) -> None:
    """Annotated tags on `commit`, all or none: tag objects first, then one `git update-ref` transaction."""
    import tempfile

    ident = gitio.git(root, "var", "GIT_COMMITTER_IDENT").decode().strip()
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, (name, message) in enumerate(tags.items()):
            path = Path(tmp) / f"{i}.tag"
            path.write_text(f"object {commit}\ntype commit\ntag {name}\ntagger {ident}\n\n{message}", encoding="utf-8")
            paths.append(str(path))
        oids = gitio.git(root, "hash-object", "-t", "tag", "-w", "--stdin-paths",
                         input="".join(f"{p}\n" for p in paths).encode()).decode().split()
    script = "start\n" + "".join(f"create refs/tags/{name} {oid}\n" for name, oid in zip(tags, oids)) + "prepare\ncommit\n"
    try:
        gitio.git(root, "update-ref", "--stdin", input=script.encode())
    except ZooError as exc:
        raise ReleaseRefused(f"the release's tags could not be written, none was: {exc}",
                             fix="a tag of that name exists (`git tag -l`): remove the stray tag or pick the next version") from None


def _check_remote_bytes(root: Path, snap: gitio.Snapshot, names: list[str]) -> None:
    """Every object of the models this release adds or changes, streamed from the remote and hashed
    (stages.audit): `dvc status --cloud` checks only that the objects exist."""
    from stages.audit import audit

    paths = set()
    for name in names:
        manifest = snap.manifests.get(name) or {}
        if manifest.get("format") and manifest.get("name"):
            paths |= {f"registry/{manifest['format']}/{manifest['name']}", f"registry/_raw/{manifest['name']}"}
    if not paths:
        return
    report = audit(root, snap.commit, remote=True, paths=paths)
    if report.ok:
        return
    problem = next(p for p in report.problems if not p.repaired)
    if problem.status == "unreadable":
        raise ReleaseRefused(f"cannot verify the remote's copy of {problem.path}: {problem.detail}",
                             fix="check that the remote is reachable, then release again")
    raise ReleaseRefused(f"the remote's copy of {problem.path} is {problem.status} ({problem.detail})",
                         fix="run `zoo audit --remote --repair` (or `dvc push` for a missing object), then release again")


def gc(root: Path, *, cloud: bool, yes: bool) -> str:
    """`dvc gc` that keeps every tag, every branch and the workspace (and the run-cache records)."""
    if not yes:
        raise ReleaseRefused("gc deletes cached data not used by any tag, branch or the workspace",
                             fix="rerun with --yes to confirm" + (" (and --cloud also cleans the remote)" if not cloud else ""))
    args = ["gc", "--workspace", "--all-tags", "--all-branches", "--force"] + (["--cloud"] if cloud else [])
    proc = dvc(root, *args)
    if proc.returncode != 0:
        raise ZooError(f"`dvc {' '.join(args)}` failed: {proc.stderr.strip()[-500:]}", fix="see DVC's message")
    return proc.stdout + proc.stderr
