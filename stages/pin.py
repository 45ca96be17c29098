"""`zoo pin`: resolve a card's moving references into pins, written back into the card.

Needs network access (or ZOO_MIRROR). A branch or tag becomes its 40-hex commit; a file without
a sha256 is fetched through verified fetching (refusing LFS pointers and HTML pages) and hashed.
The card is edited with ruamel's round-trip mode so its comments and key order survive.
"""

from __future__ import annotations

import io
import re
import tempfile
from pathlib import Path

from stages.card import COMMIT_RE, SHA256_RE
from stages.errors import CardError, FetchError
from stages.files import write_text_atomic

GITHUB_RE = re.compile(r"^https://github\.com/([^/]+)/([^/]+)/(?:raw|blob)/([^/]+)/(.+)$")
GITHUB_RAW_RE = re.compile(r"^https://raw\.githubusercontent\.com/([^/]+)/([^/]+)/([^/]+)/(.+)$")
HF_URL_RE = re.compile(r"^https://huggingface\.co/([^/]+/[^/]+)/(?:resolve|blob)/([^/]+)/(.+)$")


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


def _pin_file(node, hf: tuple[str, str] | None, pinner: Pinner, changes: list[str], where: str) -> None:
    if hf is None:
        url = node.get("url")
        if not url:
            return
        pinned = pin_url(url, pinner)
        if pinned != url:
            node["url"] = pinned
            changes.append(f"{where}.url -> {pinned}")
            node["sha256"] = None if not SHA256_RE.match(str(node.get("sha256") or "")) else node["sha256"]
        if not SHA256_RE.match(str(node.get("sha256") or "")):
            node["sha256"] = pinner.url_sha256(node["url"])
            changes.append(f"{where}.sha256 -> {node['sha256']}")
    elif node.get("file") and not SHA256_RE.match(str(node.get("sha256") or "")):
        node["sha256"] = pinner.hf_sha256(hf[0], hf[1], node["file"])
        changes.append(f"{where}.sha256 -> {node['sha256']}")


def pin_onnx_zoo(source, pinner: Pinner, changes: list[str]) -> None:
    hf = None
    if source.get("repo"):
        revision = str(source.get("revision") or "main")
        if not COMMIT_RE.match(revision):
            source["revision"] = pinner.hf_commit(source["repo"], revision)
            changes.append(f"source.revision {revision} -> {source['revision']}")
        hf = (source["repo"], source["revision"])
    _pin_file(source, hf, pinner, changes, "source")
    if source.get("test_data"):
        _pin_file(source["test_data"], hf, pinner, changes, "source.test_data")


def _missing_sha(node) -> bool:
    return not SHA256_RE.match(str(node.get("sha256") or ""))


def pin_hub_revision(source, pinner: Pinner, changes: list[str]) -> None:
    """timm and huggingface cards: a branch or tag revision becomes its commit."""
    repo = f"timm/{source.get('model')}" if source.get("kind") == "timm" else source.get("repo")
    revision = str(source.get("revision") or "main")
    if not COMMIT_RE.match(revision):
        source["revision"] = pinner.hf_commit(repo, revision)
        changes.append(f"source.revision {revision} -> {source['revision']}")


def pin_torchhub(source, pinner: Pinner, changes: list[str]) -> None:
    owner, name = str(source.get("repo")).split("/", 1)
    ref = str(source.get("ref") or "main")
    if not COMMIT_RE.match(ref):
        source["ref"] = pinner.github_commit(owner, name, ref)
        changes.append(f"source.ref {ref} -> {source['ref']}")
        source["sha256"] = None
    if _missing_sha(source):
        source["sha256"] = pinner.url_sha256(f"https://github.com/{owner}/{name}/archive/{source['ref']}.zip")
        changes.append(f"source.sha256 -> {source['sha256']}")


def pin_url_file(source, pinner: Pinner, changes: list[str]) -> None:
    """torchserve cards (and torchvision ones, whose full sha256 is optional): hash the file."""
    url = source.get("url")
    if url is None and source.get("kind") == "torchvision":
        from stages.sources.torch_zoos import Torchvision, TorchvisionSpec

        url = Torchvision.weights_enum(TorchvisionSpec("torchvision", source["model"], source["weights"])).url
    if url and _missing_sha(source):
        source["sha256"] = pinner.url_sha256(url)
        changes.append(f"source.sha256 -> {source['sha256']}")


def pin_tfhub(source, pinner: Pinner, changes: list[str]) -> None:
    """tfhub cards: hash the compressed SavedModel the handle serves (following tfhub.dev's redirects)."""
    from stages.sources.tensorflow import TFHUB_FORMAT_QUERY

    if source.get("handle") and _missing_sha(source):
        source["sha256"] = pinner.url_sha256(f"{source['handle']}?{TFHUB_FORMAT_QUERY}")
        changes.append(f"source.sha256 -> {source['sha256']}")


def pin_keras(source, pinner: Pinner, changes: list[str]) -> None:
    """keras cards: hash the weight file Keras names (Keras publishes md5s, or nothing, for most)."""
    from stages.sources.tensorflow import keras_weights_file

    if _missing_sha(source):
        shape = tuple(source["input_shape"]) if source.get("input_shape") else None
        url, _, _ = keras_weights_file(str(source.get("application")), bool(source.get("include_top", True)), shape,
                                       dict(source.get("kwargs") or {}))
        source["sha256"] = pinner.url_sha256(source.get("url") or url)
        changes.append(f"source.sha256 -> {source['sha256']}")


PINNERS = {"onnx-zoo": pin_onnx_zoo, "tfhub": pin_tfhub, "keras": pin_keras, "timm": pin_hub_revision, "huggingface": pin_hub_revision,
           "torchhub": pin_torchhub, "torchserve": pin_url_file, "torchvision": pin_url_file}


def pin_card(root: Path, card_path: Path, pinner: Pinner | None = None) -> list[str]:
    """Pin one card in place; returns what changed (empty when it was already fully pinned)."""
    from ruamel.yaml import YAML

    yaml = YAML()  # round-trip: keeps comments, key order and quoting
    yaml.preserve_quotes = True
    yaml.width = 4096
    path = root / card_path
    data = yaml.load(path.read_text(encoding="utf-8"))
    source = data.get("source") if hasattr(data, "get") else None
    kind = source.get("kind") if hasattr(source, "get") else None
    if kind not in PINNERS:
        raise CardError(card_path, "source.kind", f"cannot pin kind {kind!r}", f"kinds zoo pin knows: {', '.join(PINNERS)}")
    changes: list[str] = []
    PINNERS[kind](source, pinner or Pinner(), changes)
    if changes:
        out = io.StringIO()
        yaml.dump(data, out)
        write_text_atomic(path, out.getvalue())
    return changes
