"""The ONNX model zoo: a model file staged as it is, plus optional reference test data.

The zoo's GitHub repository (onnx/models) keeps files in Git LFS and is deprecated; it is
mirrored on the Hugging Face Hub (onnxmodelzoo/*). A card pins either a URL at a commit, or a
Hugging Face repo + 40-hex revision + file path. `test_data` points at the zoo's archive
(`<model>.tar.gz`, holding `test_data_set_*/input_*.pb` and `output_*.pb`) in the same way.
"""

from __future__ import annotations

import posixpath
import re
from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit

from pydantic import AfterValidator, Field, ValidationInfo, computed_field, model_validator

from stages import schema
from stages.sources import register
from stages.sources.base import RemoteFile, SourceKind

REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
MOVING_REF_RE = re.compile(r"/(raw|blob|resolve)/(main|master|HEAD|latest)/")
ARCHIVES = (".tar.gz", ".tgz", ".tar")


def _url(url: str) -> str:
    if MOVING_REF_RE.search(url):
        raise schema.invalid(f"{url!r} points at a moving branch",
                             "replace the branch with its 40-hex commit: run `zoo pin {card}`", pin=True)
    if _file_name(unquote(urlsplit(url).path)) is None:
        raise schema.invalid(f"{url!r} {_NO_NAME}", "give the URL of the file itself, e.g. https://.../<commit>/.../model.onnx")
    return url


def _path(path: str) -> str:
    if path.startswith("/") or ".." in path.split("/"):
        raise schema.invalid(f"{path!r} is not a path inside the repo", "give a relative path such as `resnet50-v1-7.onnx`")
    if _file_name(path) is None:
        raise schema.invalid(f"{path!r} {_NO_NAME}", "give the path of the file itself, such as `resnet50-v1-7.onnx`")
    return path


FileUrl = Annotated[schema.HttpsUrl, AfterValidator(_url)]  # a file by URL, at a commit
RepoPath = Annotated[schema.Text, AfterValidator(_path)]  # a file's path inside the card's Hugging Face repo


class FileRef(schema.Schema):
    """A pinned file: `url` alone, or `file` inside the card's Hugging Face repo at its revision."""

    sha256: schema.Sha256
    url: FileUrl | None = None
    file: RepoPath | None = None


class OnnxZooSpec(schema.Schema):
    """`source:` of an onnx-zoo card: the model file's `url`, or `repo` + `revision` + `file`, with its
    `sha256` (the spec's `model`), and optional `test_data` in the same form."""

    kind: Literal["onnx-zoo"]
    repo: schema.matching(REPO_RE, "write `repo: owner/name`") | None = None
    revision: schema.Commit | None = None
    sha256: schema.Sha256 = Field(exclude=True)  # these three are the spec's `model`
    url: FileUrl | None = Field(None, exclude=True)
    file: RepoPath | None = Field(None, exclude=True)
    test_data: FileRef | None = None

    @computed_field
    @property
    def model(self) -> FileRef:
        return FileRef.model_construct(sha256=self.sha256, url=self.url, file=self.file)

    @model_validator(mode="after")
    def _one_form(self, info: ValidationInfo) -> OnnxZooSpec:
        if self.revision and not self.repo:
            raise schema.invalid("missing (a revision needs its repo)",
                                 "add `repo: onnxmodelzoo/<name>` or remove `revision:`", at=("source", "repo"))
        if self.repo and not self.revision:
            raise schema.invalid("missing", "add `revision:` to the card (a 40-hex commit; `zoo pin` resolves a branch)",
                                 at=("source", "revision"), pin=True)
        hf = self.repo is not None
        for where, ref in ((("source",), self), (("source", "test_data"), self.test_data)):
            if ref is None:
                continue
            if hf and ref.url is not None:
                raise schema.invalid("a Hugging Face card names files with `file:`",
                                     "use `file: <path in the repo>`, or drop `repo`/`revision` and pin a URL",
                                     at=(*where, "url"))
            if not hf and ref.file is not None:
                raise schema.invalid("`file:` needs `repo:` and `revision:`",
                                     "add the Hugging Face repo and its 40-hex revision, or give `url:` instead",
                                     at=(*where, "file"))
            key = "file" if hf else "url"
            if getattr(ref, key) is None:
                raise schema.invalid("missing", f"add `{key}:` to the card", at=(*where, key))
        if self.test_data is not None and not _basename(self.test_data).endswith(ARCHIVES):
            raise schema.invalid("expected the zoo's .tar.gz archive",
                                 "point it at <model>.tar.gz, which holds test_data_set_*/", at=("source", "test_data"))
        if not _basename(self.model).endswith(".onnx"):
            raise schema.invalid(f"{_basename(self.model)!r} is not an .onnx file", "point it at the zoo's .onnx file",
                                 at=("source", "url" if self.url else "file"))
        return self


_NO_NAME = "does not end in a file name (raw files are saved under it; '_*' names are the registry's own)"


def _file_name(path: str) -> str | None:
    """The raw file's name: the path's last part, unless empty, `.`, `..` or `_*` (the registry's own files)."""
    name = posixpath.basename(path)
    return None if not name or name in {".", ".."} or name.startswith("_") else name


def _basename(ref: FileRef) -> str:
    """The name a parsed FileRef's file is saved under; parsing refused the refs that have none."""
    name = _file_name(unquote(urlsplit(ref.url).path) if ref.url else ref.file)
    if name is None:
        raise ValueError(f"cannot name a raw file after {ref!r}")
    return name


@register
class OnnxZoo(SourceKind):
    """An ONNX model zoo file, by URL at a commit or in a Hugging Face repo at a revision; staged as it is."""

    kind, converter, formats = "onnx-zoo", "onnx_zoo", ("onnx",)
    spec = OnnxZooSpec

    @classmethod
    def remote_files(cls, spec: OnnxZooSpec) -> list[RemoteFile]:
        files = [("model", spec.model)] + ([("test_data", spec.test_data)] if spec.test_data else [])
        out = []
        for role, ref in files:
            if ref.url:
                out.append(RemoteFile(role, _basename(ref), ref.sha256, url=ref.url))
            else:
                out.append(RemoteFile(role, _basename(ref), ref.sha256, hf_repo=spec.repo,
                                      hf_revision=spec.revision, hf_path=ref.file))
        return out

    @classmethod
    def pin(cls, source, pinner, changes: list[str]) -> None:
        """A repo revision becomes its commit; a URL at a moving ref is rewritten at its commit; files get sha256s."""
        from stages.sources.pinning import COMMIT_RE, ref

        hf = None
        repo = source.get("repo")
        if repo:
            revision = ref(source, "revision")
            if not COMMIT_RE.match(revision):
                source["revision"] = pinner.hf_commit(repo, revision)
                changes.append(f"source.revision {revision} -> {source['revision']}")
            hf = (repo, str(source["revision"]))
        _pin_file(source, "source", hf, pinner, changes)
        if source.get("test_data") is not None:
            _pin_file(source["test_data"], "source.test_data", hf, pinner, changes)


def _pin_file(node, where: str, hf: tuple[str, str] | None, pinner, changes: list[str]) -> None:
    from stages.sources.pinning import SHA256_RE, missing_sha, pin_url

    if hf is None:
        url = node.get("url")
        if not url:
            return
        pinned = pin_url(url, pinner)
        if pinned != url:
            node["url"] = pinned
            changes.append(f"{where}.url -> {pinned}")
            node["sha256"] = None if not SHA256_RE.match(str(node.get("sha256") or "")) else node["sha256"]
        if missing_sha(node):
            node["sha256"] = pinner.url_sha256(node["url"])
            changes.append(f"{where}.sha256 -> {node['sha256']}")
    elif node.get("file") and missing_sha(node):
        node["sha256"] = pinner.hf_sha256(hf[0], hf[1], node["file"])
        changes.append(f"{where}.sha256 -> {node['sha256']}")
