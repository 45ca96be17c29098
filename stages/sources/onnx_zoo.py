"""The ONNX model zoo: a model file staged as it is, plus optional reference test data.

The zoo's GitHub repository (onnx/models) keeps files in Git LFS and is deprecated; it is
mirrored on the Hugging Face Hub (onnxmodelzoo/*). A card pins either a URL at a commit, or a
Hugging Face repo + 40-hex revision + file path. `test_data` points at the zoo's archive
(`<model>.tar.gz`, holding `test_data_set_*/input_*.pb` and `output_*.pb`) in the same way.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from stages.errors import CardError
from stages.sources import register
from stages.sources.base import RemoteFile, SourceKind

REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
MOVING_REF_RE = re.compile(r"/(raw|blob|resolve)/(main|master|HEAD|latest)/")


@dataclass(frozen=True)
class FileRef:
    """A pinned file: `url` alone, or `file` inside the card's Hugging Face repo at its revision."""

    sha256: str
    url: str | None = None
    file: str | None = None


@dataclass(frozen=True)
class OnnxZooSpec:
    kind: str
    model: FileRef
    repo: str | None = None
    revision: str | None = None
    test_data: FileRef | None = None


def _file_ref(fields, hf: bool) -> FileRef:
    """Read `url` or `file` (+ `sha256`) from a mapping, according to the card's form."""
    sha = fields.sha256()
    if hf:
        if "url" in fields.data:
            raise CardError(fields.path, fields.key("url"), "a Hugging Face card names files with `file:`",
                            "use `file: <path in the repo>`, or drop `repo`/`revision` and pin a URL")
        path = fields.str("file")
        if path.startswith("/") or ".." in path.split("/"):
            raise CardError(fields.path, fields.key("file"), f"{path!r} is not a path inside the repo",
                            "give a relative path such as `resnet50-v1-7.onnx`")
        if _file_name(path) is None:
            raise CardError(fields.path, fields.key("file"), f"{path!r} {_NO_NAME}",
                            "give the path of the file itself, such as `resnet50-v1-7.onnx`")
        return FileRef(sha256=sha, file=path)
    if "file" in fields.data:
        raise CardError(fields.path, fields.key("file"), "`file:` needs `repo:` and `revision:`",
                        "add the Hugging Face repo and its 40-hex revision, or give `url:` instead")
    url = fields.url("url")
    if MOVING_REF_RE.search(url):
        raise CardError(fields.path, fields.key("url"), f"{url!r} points at a moving branch",
                        f"replace the branch with its 40-hex commit: run `zoo pin {fields.path}`")
    if _file_name(unquote(urlsplit(url).path)) is None:
        raise CardError(fields.path, fields.key("url"), f"{url!r} {_NO_NAME}",
                        "give the URL of the file itself, e.g. https://.../<commit>/.../model.onnx")
    return FileRef(sha256=sha, url=url)


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
    kind = "onnx-zoo"
    converter = "onnx-zoo"
    formats = ("onnx",)

    @classmethod
    def parse(cls, fields, fmt: str) -> OnnxZooSpec:
        repo = fields.str("repo", required=False, pattern=REPO_RE, hint="write `repo: owner/name`")
        revision = fields.commit("revision", required=repo is not None)
        if revision and not repo:
            raise CardError(fields.path, "source.repo", "missing (a revision needs its repo)",
                            "add `repo: onnxmodelzoo/<name>` or remove `revision:`")
        hf = repo is not None
        model = _file_ref(fields, hf)
        test_data = None
        sub = fields.sub("test_data", required=False)
        if sub is not None:
            test_data = _file_ref(sub, hf)
            sub.done()
            if not _basename(test_data).endswith((".tar.gz", ".tgz", ".tar")):
                raise CardError(fields.path, "source.test_data", "expected the zoo's .tar.gz archive",
                                "point it at <model>.tar.gz, which holds test_data_set_*/")
        spec = OnnxZooSpec(kind=cls.kind, model=model, repo=repo, revision=revision, test_data=test_data)
        if not _basename(model).endswith(".onnx"):
            raise CardError(fields.path, "source.url" if model.url else "source.file",
                            f"{_basename(model)!r} is not an .onnx file", "point it at the zoo's .onnx file")
        return spec

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
