"""The PyTorch zoos: torchvision, timm, torch.hub repositories and TorchServe `.mar` archives.

Each kind resolves a card to pinned files; building the model and exporting it to ONNX is the
torch converter's job (stages.convert.torch_export). Nothing here imports torch at module level:
only resolving a torchvision card's weights enum does, at fetch time.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Any

from stages.errors import CardError
from stages.sources import hub, register
from stages.sources.base import RemoteFile, SourceKind, parse_shape

TORCH_HUB_PREFIX_RE = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")


@dataclass(frozen=True)
class TorchvisionSpec:
    kind: str
    model: str
    weights: str
    url: str | None = None
    sha256: str | None = None
    input_shape: tuple[int, ...] | None = None


@register
class Torchvision(SourceKind):
    """`model: resnet50`, `weights: IMAGENET1K_V2`: URL and hash prefix from torchvision's weights enum."""

    kind, converter, formats = "torchvision", "torch", ("onnx",)
    describes = frozenset({"preprocessing", "labels"})  # from the source's own metadata

    @classmethod
    def parse(cls, fields, fmt: str) -> TorchvisionSpec:
        return TorchvisionSpec(
            kind=cls.kind, model=fields.str("model", pattern=re.compile(r"^[a-z0-9_]+$")),
            weights=fields.str("weights", pattern=re.compile(r"^[A-Z0-9_]+$"),
                               hint="write the enum member, e.g. IMAGENET1K_V2"),
            url=fields.url("url", required=False), sha256=fields.sha256(required=False),
            input_shape=parse_shape(fields))

    @staticmethod
    def weights_enum(spec: TorchvisionSpec):
        from torchvision.models import get_model_weights

        try:
            return get_model_weights(spec.model)[spec.weights]
        except (ValueError, KeyError) as exc:
            raise CardError("source", "source.weights", f"torchvision has no {spec.model} weights {spec.weights}: {exc}",
                            "check `model:` and `weights:` against torchvision.models") from None

    @classmethod
    def remote_files(cls, spec: TorchvisionSpec) -> list[RemoteFile]:
        url = spec.url or cls.weights_enum(spec).url
        name = posixpath.basename(url)
        prefix = TORCH_HUB_PREFIX_RE.search(name)
        if spec.sha256 is None and prefix is None:
            raise CardError("source", "source.sha256", f"{name} carries no sha256 prefix",
                            "pin the file's full sha256 in the card")
        return [RemoteFile("weights", name, spec.sha256, url=url, sha256_prefix=prefix.group(1) if prefix else None)]


@dataclass(frozen=True)
class TimmSpec:
    kind: str
    model: str
    revision: str

    @property
    def repo(self) -> str:
        return f"timm/{self.model}"


@register
class Timm(SourceKind):
    """`model: resnet50.a1_in1k`, `revision: <40 hex>`: the `timm/<model>` repo on the Hub."""

    kind, converter, formats = "timm", "torch", ("onnx",)
    describes = frozenset({"preprocessing", "labels"})  # from the source's own metadata

    @classmethod
    def parse(cls, fields, fmt: str) -> TimmSpec:
        model = fields.str("model", pattern=re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)?$"),
                           hint="write timm's name with its pretrained tag, e.g. resnet50.a1_in1k")
        return TimmSpec(kind=cls.kind, model=model, revision=hub.check_revision(fields))

    @classmethod
    def remote_files(cls, spec: TimmSpec) -> list[RemoteFile]:
        files = hub.repo_files(spec.repo, spec.revision)
        return hub.select(spec.repo, spec.revision, files, required=("config.json",))


@dataclass(frozen=True)
class TorchHubSpec:
    kind: str
    repo: str
    ref: str
    sha256: str
    entrypoint: str
    kwargs: tuple = ()
    input_shape: tuple[int, ...] | None = None
    weights: Any = None  # optional {url, sha256}: a state dict loaded after the entrypoint

    @property
    def url(self) -> str:
        return f"https://github.com/{self.repo}/archive/{self.ref}.zip"


@register
class TorchHub(SourceKind):
    """A torch.hub repository at a pinned commit: runs its hubconf.py, so it needs `trust_code: true`."""

    kind, converter, formats = "torchhub", "torch", ("onnx",)
    runs_code = True

    @classmethod
    def parse(cls, fields, fmt: str) -> TorchHubSpec:
        repo = fields.str("repo", pattern=re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$"), hint="write owner/name")
        ref = fields.commit("ref")
        kwargs = fields.raw("kwargs", required=False) or {}
        if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
            raise CardError(fields.path, "source.kwargs", f"expected a mapping, got {kwargs!r}",
                            "write e.g. `kwargs: {weights: null}`")
        weights = None
        sub = fields.sub("weights", required=False)
        if sub is not None:
            weights = (sub.url("url"), sub.sha256())
            sub.done()
        return TorchHubSpec(kind=cls.kind, repo=repo, ref=ref, sha256=fields.sha256(),
                            entrypoint=fields.str("entrypoint", pattern=re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")),
                            kwargs=tuple(sorted(kwargs.items())), input_shape=parse_shape(fields, required=True),
                            weights=weights)

    @classmethod
    def remote_files(cls, spec: TorchHubSpec) -> list[RemoteFile]:
        files = [RemoteFile("code", f"{spec.repo.split('/')[1]}-{spec.ref}.zip", spec.sha256, url=spec.url)]
        if spec.weights:
            files.append(RemoteFile("weights", posixpath.basename(spec.weights[0]), spec.weights[1], url=spec.weights[0]))
        return files

    @classmethod
    def pins(cls, spec: TorchHubSpec) -> dict[str, Any]:
        pins = super().pins(spec)
        pins["kwargs"] = dict(spec.kwargs)
        return pins


@dataclass(frozen=True)
class TorchServeSpec:
    kind: str
    url: str
    sha256: str
    input_shape: tuple[int, ...]


@register
class TorchServe(SourceKind):
    """A TorchServe `.mar` (a zip with MAR-INF/MANIFEST.json); eager archives run code: `trust_code`."""

    kind, converter, formats = "torchserve", "torch", ("onnx",)
    describes = frozenset({"labels"})  # index_to_name.json, TorchServe's label file

    @classmethod
    def parse(cls, fields, fmt: str) -> TorchServeSpec:
        url = fields.url("url")
        if not url.endswith(".mar"):
            raise CardError(fields.path, "source.url", f"{url!r} is not a .mar archive", "point it at the .mar file")
        return TorchServeSpec(kind=cls.kind, url=url, sha256=fields.sha256(), input_shape=parse_shape(fields, required=True))

    @classmethod
    def remote_files(cls, spec: TorchServeSpec) -> list[RemoteFile]:
        return [RemoteFile("archive", posixpath.basename(spec.url), spec.sha256, url=spec.url)]


TASKS = ("feature-extraction", "text-classification", "token-classification", "image-classification",
         "fill-mask", "question-answering")


@dataclass(frozen=True)
class HuggingFaceSpec:
    kind: str
    framework: str
    repo: str
    revision: str
    task: str
    from_pytorch: bool | None = None  # tensorflow only: build the TF model from the repo's PyTorch weights


FRAMEWORK_FORMATS = {"pytorch": "onnx", "tensorflow": "tensorflow"}


@register
class HuggingFace(SourceKind):
    """A Hugging Face Hub model at a pinned commit, built with transformers' Auto classes.

    `framework: pytorch` is exported to ONNX by the torch converter; `framework: tensorflow` is
    built with the TFAuto classes and frozen by the tensorflow converter (format tensorflow, with an
    optional ONNX target through tf2onnx).
    """

    kind, converter, formats = "huggingface", "torch", ("onnx", "tensorflow")
    describes = frozenset({"preprocessing", "labels"})  # from the source's own metadata
    extra_targets = ("onnx",)

    @classmethod
    def parse(cls, fields, fmt: str) -> HuggingFaceSpec:
        framework = fields.str("framework")
        if framework not in FRAMEWORK_FORMATS:
            raise CardError(fields.path, "source.framework", f"unknown framework {framework!r}",
                            "use `framework: pytorch` or `framework: tensorflow`")
        if FRAMEWORK_FORMATS[framework] != fmt:
            raise CardError(fields.path, "format", f"framework {framework!r} is staged as format "
                            f"{FRAMEWORK_FORMATS[framework]!r}, not {fmt!r}",
                            f"set `format: {FRAMEWORK_FORMATS[framework]}` and move the card to "
                            f"registry/{FRAMEWORK_FORMATS[framework]}/ (add `targets:` for more formats)")
        task = fields.str("task")
        if task not in TASKS:
            raise CardError(fields.path, "source.task", f"unknown task {task!r}", f"use one of: {', '.join(TASKS)}")
        from_pytorch = None
        if framework == "tensorflow":
            from_pytorch = fields.boolean("from_pytorch", default=False) or None
        return HuggingFaceSpec(kind=cls.kind, framework=framework, repo=hub.parse_repo(fields),
                               revision=hub.check_revision(fields), task=task, from_pytorch=from_pytorch)

    @classmethod
    def converter_for(cls, spec: HuggingFaceSpec) -> str:
        return "tensorflow" if spec.framework == "tensorflow" else "torch"

    @classmethod
    def remote_files(cls, spec: HuggingFaceSpec) -> list[RemoteFile]:
        files = hub.repo_files(spec.repo, spec.revision)
        optional = hub.TOKENIZER_FILES + ("generation_config.json",)
        if spec.framework == "tensorflow" and not spec.from_pytorch:
            return hub.select(spec.repo, spec.revision, files, required=("config.json",), optional=optional,
                              weights=hub.TF_WEIGHT_PREFERENCE)
        return hub.select(spec.repo, spec.revision, files, required=("config.json",), optional=optional)
