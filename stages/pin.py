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

from stages.card import COMMIT_RE, SHA256_RE, Fields, load_yaml
from stages.errors import CardError, FetchError
from stages.files import write_text_atomic

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


def _ref(fields: Fields, key: str) -> str:
    """A branch, tag or commit as written (`ref: 2.0` is a YAML number, still a tag); unset means main."""
    value = fields.raw(key, required=False)
    if value is None:
        return "main"
    if isinstance(value, (bool, dict, list)):
        raise CardError(fields.path, fields.key(key), f"expected a branch, tag or commit, got {value!r}",
                        f"write `{key}: <40-hex commit>`, or a branch or tag for zoo pin to resolve")
    return str(value)


def _pin_file(fields: Fields, hf: tuple[str, str] | None, pinner: Pinner, changes: list[str]) -> None:
    node, where = fields.data, fields.prefix.rstrip(".")
    if hf is None:
        url = fields.url("url", required=False)
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
    elif fields.str("file", required=False) and not SHA256_RE.match(str(node.get("sha256") or "")):
        node["sha256"] = pinner.hf_sha256(hf[0], hf[1], node["file"])
        changes.append(f"{where}.sha256 -> {node['sha256']}")


def pin_onnx_zoo(fields: Fields, pinner: Pinner, changes: list[str]) -> None:
    source, hf = fields.data, None
    repo = fields.str("repo", required=False, pattern=OWNER_NAME_RE, hint="write `repo: owner/name`")
    if repo:
        revision = _ref(fields, "revision")
        if not COMMIT_RE.match(revision):
            source["revision"] = pinner.hf_commit(repo, revision)
            changes.append(f"source.revision {revision} -> {source['revision']}")
        hf = (repo, str(source["revision"]))
    _pin_file(fields, hf, pinner, changes)
    test_data = fields.sub("test_data", required=False)
    if test_data is not None:
        _pin_file(test_data, hf, pinner, changes)


def _missing_sha(node) -> bool:
    return not SHA256_RE.match(str(node.get("sha256") or ""))


def pin_hub_revision(fields: Fields, pinner: Pinner, changes: list[str]) -> None:
    """timm and huggingface cards: a branch or tag revision becomes its commit."""
    from stages.sources.hub import REPO_RE

    source = fields.data
    if source.get("kind") == "timm":
        repo = f"timm/{fields.str('model')}"
    else:
        repo = fields.str("repo", pattern=REPO_RE, hint="write `repo: owner/name` as on the Hub")
    revision = _ref(fields, "revision")
    if not COMMIT_RE.match(revision):
        source["revision"] = pinner.hf_commit(repo, revision)
        changes.append(f"source.revision {revision} -> {source['revision']}")


def pin_torchhub(fields: Fields, pinner: Pinner, changes: list[str]) -> None:
    source = fields.data
    owner, name = fields.str("repo", pattern=OWNER_NAME_RE, hint="write `repo: owner/name` (the GitHub repository)"
                             ).split("/", 1)
    ref = _ref(fields, "ref")
    if not COMMIT_RE.match(ref):
        source["ref"] = pinner.github_commit(owner, name, ref)
        changes.append(f"source.ref {ref} -> {source['ref']}")
        source["sha256"] = None
    if _missing_sha(source):
        source["sha256"] = pinner.url_sha256(f"https://github.com/{owner}/{name}/archive/{source['ref']}.zip")
        changes.append(f"source.sha256 -> {source['sha256']}")


def pin_url_file(fields: Fields, pinner: Pinner, changes: list[str]) -> None:
    """torchserve cards (and torchvision ones, whose full sha256 is optional): hash the file."""
    source = fields.data
    torchvision = source.get("kind") == "torchvision"
    url = fields.url("url", required=not torchvision)
    if url is None:
        from stages.sources.torch_zoos import Torchvision, TorchvisionSpec

        url = Torchvision.weights_enum(TorchvisionSpec("torchvision", fields.str("model"), fields.str("weights"))).url
    if _missing_sha(source):
        source["sha256"] = pinner.url_sha256(url)
        changes.append(f"source.sha256 -> {source['sha256']}")


def pin_tfhub(fields: Fields, pinner: Pinner, changes: list[str]) -> None:
    """tfhub cards: hash the compressed SavedModel the handle serves (following tfhub.dev's redirects)."""
    from stages.sources.tensorflow import TFHUB_FORMAT_QUERY

    source = fields.data
    handle = fields.url("handle")
    if _missing_sha(source):
        source["sha256"] = pinner.url_sha256(f"{handle}?{TFHUB_FORMAT_QUERY}")
        changes.append(f"source.sha256 -> {source['sha256']}")


def pin_keras(fields: Fields, pinner: Pinner, changes: list[str]) -> None:
    """keras cards: hash the weight file Keras names (Keras publishes md5s, or nothing, for most)."""
    from stages.sources.tensorflow import keras_weights_file

    source = fields.data
    if _missing_sha(source):
        application = fields.str("application")
        shape = fields.raw("input_shape", required=False)
        if shape is not None and not (isinstance(shape, list) and all(isinstance(d, int) for d in shape)):
            raise CardError(fields.path, fields.key("input_shape"), f"expected a list of integers, got {shape!r}",
                            "write e.g. `input_shape: [224, 224, 3]`")
        kwargs = fields.raw("kwargs", required=False) or {}
        if not isinstance(kwargs, dict):
            raise CardError(fields.path, fields.key("kwargs"), f"expected a mapping, got {kwargs!r}",
                            "write e.g. `kwargs: {alpha: 1.0}`")
        url, _, _ = keras_weights_file(application, fields.boolean("include_top", default=True),
                                       tuple(shape) if shape else None, dict(kwargs))
        source["sha256"] = pinner.url_sha256(fields.url("url", required=False) or url)
        changes.append(f"source.sha256 -> {source['sha256']}")


PINNERS = {"onnx-zoo": pin_onnx_zoo, "tfhub": pin_tfhub, "keras": pin_keras, "timm": pin_hub_revision, "huggingface": pin_hub_revision,
           "torchhub": pin_torchhub, "torchserve": pin_url_file, "torchvision": pin_url_file}


def pin_card(root: Path, card_path: Path, pinner: Pinner | None = None) -> list[str]:
    """Pin one card in place; returns what changed (empty when it was already fully pinned).

    The card is first read by the one YAML reader every command uses (UTF-8, valid YAML, no key
    written twice, a mapping with a `source:` mapping), then again by ruamel to edit it in place;
    each field a pinner reads is checked as it is read, since the card is not complete enough to
    parse yet. Any CardError is reported against this card.
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    Fields(card_path, load_yaml(root / card_path, card_path)).sub("source")  # a check only: ruamel edits the card
    yaml = YAML()  # round-trip: keeps comments, key order and quoting
    yaml.preserve_quotes = True
    yaml.width = 4096
    path = root / card_path
    try:
        data = yaml.load(path.read_text(encoding="utf-8"))
    except YAMLError as exc:  # what PyYAML accepts ruamel should too; if not, still one line
        problem = str(getattr(exc, "problem", None) or exc).splitlines()[0]
        raise CardError(card_path, None, f"not valid YAML for editing: {problem}", "fix the YAML syntax") from None
    source = Fields(card_path, data).sub("source")
    kind = source.data.get("kind")
    if not isinstance(kind, str) or kind not in PINNERS:
        raise CardError(card_path, "source.kind", f"cannot pin kind {kind!r}", f"kinds zoo pin knows: {', '.join(PINNERS)}")
    changes: list[str] = []
    try:
        PINNERS[kind](source, pinner or Pinner(), changes)
    except CardError as exc:  # sources' helpers name "source" (they do not know the card): name the card
        if exc.path == str(card_path):
            raise
        raise CardError(card_path, exc.field, exc.problem, exc.fix) from None
    if changes:
        out = io.StringIO()
        yaml.dump(data, out)
        write_text_atomic(path, out.getvalue())
    return changes
