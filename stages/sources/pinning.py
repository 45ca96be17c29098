"""`zoo pin`'s network side, shared by the kinds' `pin` methods.

A branch or tag becomes its 40-hex commit; a file without a sha256 is fetched through verified
fetching (refusing LFS pointers and HTML pages) and hashed. Each kind's `pin(source, pinner,
changes)` edits its raw `source:` mapping with these; stages.pin writes the card back.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from stages.errors import FetchError
from stages.schema import COMMIT_RE, SHA256_RE  # noqa: F401 (the kinds' pinners import them from here)

GITHUB_RE = re.compile(r"^https://github\.com/([^/]+)/([^/]+)/(?:raw|blob)/([^/]+)/(.+)$")
GITHUB_RAW_RE = re.compile(r"^https://raw\.githubusercontent\.com/([^/]+)/([^/]+)/([^/]+)/(.+)$")
HF_URL_RE = re.compile(r"^https://huggingface\.co/([^/]+/[^/]+)/(?:resolve|blob)/([^/]+)/(.+)$")
OWNER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


class Pinner:
    """The network side of pinning; each call goes through the registry's fetching rules."""

    def github_commit(self, owner: str, repo: str, ref: str) -> str:
        from stages.fetch import get_text

        url = f"https://api.github.com/repos/{owner}/{repo}/commits/{ref}"
        sha = get_text(url, {"Accept": "application/vnd.github.sha"}).strip()
        if not COMMIT_RE.match(sha):
            raise FetchError(url, f"did not answer a commit id for {ref!r} (got {sha[:60]!r})",
                             fix="check the owner, repo and ref")
        return sha

    def hf_commit(self, repo: str, revision: str) -> str:
        from huggingface_hub import HfApi

        from stages import constants

        return HfApi(endpoint=constants.hf_endpoint()).model_info(repo, revision=revision).sha

    def url_sha256(self, url: str) -> str:
        from stages.fetch import download

        with tempfile.TemporaryDirectory() as tmp:
            return download(url, Path(tmp) / "file", None)[1]

    def hf_sha256(self, repo: str, revision: str, path: str) -> str:
        from stages.fetch import download_hf

        with tempfile.TemporaryDirectory() as tmp:
            return download_hf(repo, revision, path, Path(tmp) / "file", None)[1]


def pin_url(url: str, pinner: Pinner) -> str:
    """A URL at a moving ref, rewritten at its commit (GitHub raw URLs keep resolving LFS)."""
    for pattern, host in ((GITHUB_RE, "github"), (GITHUB_RAW_RE, "github"), (HF_URL_RE, "hf")):
        match = pattern.match(url)
        if not match:
            continue
        if host == "github":
            owner, repo, ref, path = match.groups()
            commit = ref if COMMIT_RE.match(ref) else pinner.github_commit(owner, repo, ref)
            return f"https://github.com/{owner}/{repo}/raw/{commit}/{path}"
        repo, ref, path = match.groups()
        commit = ref if COMMIT_RE.match(ref) else pinner.hf_commit(repo, ref)
        return f"https://huggingface.co/{repo}/resolve/{commit}/{path}"
    return url


def ref(source, key: str) -> str:
    """A branch, tag or commit as written (`ref: 2.0` is a YAML number, still a tag); unset means main.
    (The lenient validation let through only those: stages.schema.commit.)"""
    value = source.get(key)
    return "main" if value is None else str(value)


def missing_sha(node) -> bool:
    return not SHA256_RE.match(str(node.get("sha256") or ""))


def pin_revision(source, repo: str, pinner: Pinner, changes: list[str]) -> None:
    """A Hub repo's `revision:` (a branch or tag) becomes its commit."""
    revision = ref(source, "revision")
    if not COMMIT_RE.match(revision):
        source["revision"] = pinner.hf_commit(repo, revision)
        changes.append(f"source.revision {revision} -> {source['revision']}")


def pin_sha256(source, url: str, pinner: Pinner, changes: list[str]) -> None:
    """A file given by URL without its sha256: downloaded once, verified, hashed."""
    if missing_sha(source):
        source["sha256"] = pinner.url_sha256(url)
        changes.append(f"source.sha256 -> {source['sha256']}")
