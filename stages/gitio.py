"""Reading the registry's state at any git revision, from git alone (no checkout, no DVC, no download).

Two git processes per revision, whatever the number of models: `git ls-tree` lists the registry's
blobs and one `git cat-file --batch` reads the index and every manifest.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.errors import GitError

MANIFEST_RE = re.compile(r"^registry/([a-z]+)/([a-z0-9-]+)\.manifest\.json$")
RELEASE_TAG_RE = re.compile(r"^zoo-v(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?$")


def git(repo: Path, *args: str, input: bytes | None = None) -> bytes:
    proc = subprocess.run(["git", "-C", str(repo), *args], input=input, capture_output=True)
    if proc.returncode != 0:
        first = proc.stderr.decode(errors="replace").strip().splitlines()[:1]
        raise GitError(f"`git {' '.join(args)}` failed in {repo}: {first[0] if first else proc.returncode}",
                       fix="check the revision name (a tag such as zoo-v1.0.0, a branch or a commit)")
    return proc.stdout


def rev_parse(repo: Path, rev: str) -> str:
    return git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").decode().strip()


@dataclass
class Snapshot:
    """The registry at one revision: its index (cards and pins) and its manifests, by model name."""

    rev: str
    commit: str
    index: dict[str, Any] = field(default_factory=dict)
    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)


def _cat_blobs(repo: Path, oids: list[str]) -> list[bytes]:
    out = git(repo, "cat-file", "--batch", input="".join(f"{o}\n" for o in oids).encode())
    blobs, pos = [], 0
    for _ in oids:
        header_end = out.index(b"\n", pos)
        size = int(out[pos:header_end].split()[2])
        start = header_end + 1
        blobs.append(out[start:start + size])
        pos = start + size + 1
    return blobs


def read_paths(repo: Path, commit: str, paths: list[str]) -> dict[str, bytes | None]:
    """{path: bytes, or None when `commit` has no such file} for a few named files: one git process."""
    if not paths:
        return {}
    out = git(repo, "cat-file", "--batch", input="".join(f"{commit}:{p}\n" for p in paths).encode())
    found: dict[str, bytes | None] = {}
    pos = 0
    for path in paths:
        header_end = out.index(b"\n", pos)
        header = out[pos:header_end].split()
        if header[-1] == b"missing" or header[1] != b"blob":
            found[path], pos = None, header_end + 1
            continue
        start = header_end + 1
        size = int(header[2])
        found[path] = out[start:start + size]
        pos = start + size + 1
    return found


def read_tree(repo: Path, commit: str, keep, under: tuple[str, ...] = ("registry",)) -> dict[str, bytes]:
    """{path: bytes} of the blobs under the paths `under` at `commit` whose path `keep(path)` accepts:
    two git processes, whatever their number."""
    listing = git(repo, "ls-tree", "-r", "-z", "--full-tree", commit, "--", *under).split(b"\0")
    wanted: list[tuple[str, str]] = []
    for entry in filter(None, listing):
        meta, path = entry.decode().split("\t", 1)
        if keep(path):
            wanted.append((path, meta.split()[2]))
    return dict(zip((path for path, _ in wanted), _cat_blobs(repo, [oid for _, oid in wanted]))) if wanted else {}


def snapshot(repo: Path, rev: str) -> Snapshot:
    commit = rev_parse(repo, rev)
    snap = Snapshot(rev=rev, commit=commit)
    blobs = read_tree(repo, commit, lambda path: path == "registry/index.json" or bool(MANIFEST_RE.match(path)))
    for path, blob in blobs.items():
        data = json.loads(blob)
        if path == "registry/index.json":
            snap.index = data
        else:
            fmt, name = MANIFEST_RE.match(path).groups()
            snap.manifests[(fmt, name)] = data
    cards = snap.index.get("cards", {})
    # by artifact name: a card's own format under its name, a target (`targets:`) as <name>-<format>
    snap.manifests = {name if cards.get(name, {}).get("format", fmt) == fmt else f"{name}-{fmt}": data
                      for (fmt, name), data in snap.manifests.items()}
    return snap


def expected_artifacts(index: dict) -> set[str]:
    """Every manifest a staged zoo must have: each card's, and `<name>-<format>` for each target."""
    cards = index.get("cards", {})
    out = set(cards)
    for entries in index.get("converters", {}).values():
        for name, entry in entries.items():
            if name in cards and entry.get("format") != cards[name].get("format"):
                out.add(f"{name}-{entry['format']}")
    return out


def release_tags(repo: Path) -> list[str]:
    """`zoo-v<semver>` tags, oldest version first (pre-releases before their release)."""
    tags = [t for t in git(repo, "tag", "--list", "zoo-v*").decode().split() if RELEASE_TAG_RE.match(t)]
    return sorted(tags, key=semver_key)


def semver_key(tag: str) -> tuple:
    major, minor, patch, pre = RELEASE_TAG_RE.match(tag).groups()
    return (int(major), int(minor), int(patch), pre is None, pre or "")
