"""The one small interface every source kind implements, and the one thing every builder returns.

A source kind (one module under stages/sources/, registered with `@register`) declares everything
about its part of a card's life:
- `spec`: the pydantic model (stages.schema) of its `source:` section, whose instances are its
  frozen specs (all pins, no network); stages.card validates the section with it, and `zoo
  schema` describes it;
- `pin`: what `zoo pin` resolves in that section (a branch to a commit, a file to its sha256);
- `remote_files`: the spec as the exact files to fetch, each with its hash; fetching itself is
  shared (stages.fetch): a kind never opens a socket of its own;
- `converter` (`converter_for`): which conversion path stages it (a key of stages.convert.CONVERTERS);
- `build`: the source model from the raw files, as a `SourceModel`, which every converter
  validates the staged files against.
Nothing else in the registry names a kind: adding one is adding a module here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar


@dataclass(frozen=True)
class RemoteFile:
    """One pinned upstream file: either an https URL or a file in a Hugging Face repo at a commit."""

    role: str
    filename: str  # name in the raw folder (may contain '/' for a repo's sub-folders)
    sha256: str | None  # None only when another pin verifies the bytes (below)
    url: str | None = None
    hf_repo: str | None = None
    hf_revision: str | None = None
    hf_path: str | None = None
    sha256_prefix: str | None = None  # torch.hub's convention: the file name carries a sha256 prefix
    git_sha1: str | None = None  # a small file in a Hugging Face repo at a commit: its git blob id
    md5: str | None = None  # an upstream that publishes only an md5 (Keras applications): checked too
    moved_hint: str | None = None  # what to do when the URL answers 403/404/410 (a hub that migrated)

    def describe(self) -> str:
        if self.url:
            return self.url
        return f"hf://{self.hf_repo}@{self.hf_revision}/{self.hf_path}"

    def record(self) -> dict[str, Any]:
        """What the raw folder's `_fetch.json` and the manifest say about this file."""
        out = {"role": self.role, "filename": self.filename}
        if self.url:
            out["url"] = self.url
        else:
            out.update(hf_repo=self.hf_repo, hf_revision=self.hf_revision, hf_path=self.hf_path)
        if self.md5:
            out["md5"] = self.md5
        return out


@dataclass
class SourceModel:
    """A source model as the converters see it, whatever its framework.

    `reference` runs the SOURCE model (numpy feeds by input name -> numpy outputs by name): every
    staged file is compared with it, and it computes the golden data. `native` is what the
    kind's converter exports or freezes: a `torch.nn.Module` taking the inputs positionally and
    returning a tuple in `outputs` order, or a TensorFlow ConcreteFunction called by keyword.
    """

    inputs: list  # [stages.inputs.TensorSpec], in the model's positional order
    outputs: list[str]
    reference: Callable[[dict[str, Any]], dict[str, Any]]
    native: Any = None
    described: str = ""  # what the reference is, in the manifest ("pytorch model", "tensorflow SavedModel ...")
    text: bool = False  # a transformer text model (token ids, attention mask)
    vocab: int | None = None  # a text model's vocabulary size (token ids are drawn below it)
    declared: tuple = ()  # validation inputs the source itself implies (stages.inputs.Declared)
    keras_model: Any = None  # a Keras model, also staged as model.keras / model.h5
    side_files: dict[str, Path] = field(default_factory=dict)  # staged beside the model
    info: dict[str, Any] = field(default_factory=dict)  # manifest extras (architecture, ...)
    labels: list[str] | None = None  # a classifier's class names, in output order (labels.txt)
    preprocessing: dict[str, Any] | None = None  # from the source's metadata (stages.preprocess)

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    @property
    def dynamic(self) -> dict[str, dict[int, str]]:
        """Symbolic dims by input: {name: {axis: dim name}} (what an exporter marks dynamic)."""
        return {spec.name: {i: d for i, d in enumerate(spec.shape) if isinstance(d, str)}
                for spec in self.inputs if any(isinstance(d, str) for d in spec.shape)}


class SourceKind(ABC):
    """Base class of a card's `source.kind`; subclasses register with @stages.sources.register."""

    kind: ClassVar[str]
    converter: ClassVar[str]  # the staging path (a key of stages.convert.CONVERTERS)
    formats: ClassVar[tuple[str, ...]]  # formats a card of this kind may declare

    # The kind's `source:` section as a pydantic model (a stages.schema.Schema: unknown keys refused,
    # frozen, hashable); a validated instance is the spec every other method takes. Validation gets
    # the card's format in its context (`info.context["format"]`) for rules that depend on it.
    spec: ClassVar[type]

    @classmethod
    @abstractmethod
    def remote_files(cls, spec: Any) -> list[RemoteFile]:
        """The exact files to fetch. May ask the hub which files a pinned revision holds."""

    # What the source's own metadata gives ("preprocessing", "labels"); a card must declare the rest.
    describes: ClassVar[frozenset[str]] = frozenset()
    extra_targets: ClassVar[tuple[str, ...]] = ()  # formats a card may add with `targets:` (staged too)

    @classmethod
    def converter_for(cls, spec: Any) -> str:
        """The converter that stages this spec (a kind spanning frameworks picks by spec)."""
        return cls.converter

    @classmethod
    def converters(cls) -> tuple[str, ...]:
        """Every converter `converter_for` may pick (their dvc.yaml stages depend on this module)."""
        return (cls.converter,)

    runs_code: ClassVar[bool] = False  # building it runs third-party code: the card needs `trust_code: true`

    @classmethod
    def pin(cls, source, pinner, changes: list[str]) -> None:
        """`zoo pin`: resolve the moving references in the raw `source:` mapping in place (ruamel's,
        so the card keeps its comments), appending what changed to `changes`; `pinner` is
        stages.sources.pinning.Pinner. stages.pin has validated the mapping with `spec` in its
        lenient mode first: every field but the pins (stages.schema.pinnable) is as `spec` says."""

    @classmethod
    def build(cls, card, raw, settings: dict, workdir: Path) -> SourceModel:
        """The source model from the card's raw files (verified on access), for the converter."""
        from stages.errors import StagingError

        raise StagingError(f"{card.path}: kind {cls.kind!r} has no model builder; its converter "
                           f"({cls.converter}) stages the raw files as they are", fix="this is a registry bug")

    @classmethod
    def pins(cls, spec: Any) -> dict[str, Any]:
        """The spec as plain data: what the index tracks for the fetch stage and the manifest records."""
        return {k: v for k, v in spec.model_dump().items() if v is not None}
