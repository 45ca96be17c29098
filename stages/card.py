"""Model cards: `registry/<format>/<name>.yaml`, parsed into a frozen schema at load.

A card is written by people, so every problem is reported as one line naming the file, the
line, the field and the fix; unknown keys are errors (a typo must not silently drop a pin).

The card is declared with pydantic (`CardModel`, built from stages.schema's field types); its
`source:` section is validated by the model of its kind, found through the kind registry
(stages.sources), so adding a kind needs no edit here. Rules across fields (the name matches the
file, the format its folder, `trust_code` for kinds that run code, `targets:` the kind allows)
follow, through the same translator. `parse_card` returns the frozen `Card` dataclass the rest of
the registry uses. `json_schema()` is the card's JSON Schema (`zoo schema`, registry/card.schema.json).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, Field, ValidationInfo, WithJsonSchema, field_validator

from stages import schema
from stages.errors import CardError
from stages.yamlio import Lines, line_of, load_yaml, load_yaml_lines  # noqa: F401 (load_yaml: its old home)

FORMATS = ("onnx", "tensorflow", "keras")


class Fields:
    """Reads one mapping of a card, checking each field; `done()` rejects what was not read.

    What is left of the hand-written card reader: the `preprocessing:`, `labels:` and `inputs:`
    sections are still parsed with it by their own modules (stages.preprocess, stages.labels,
    stages.inputs); everything else is declared with pydantic (CardModel, the kinds' `spec`).
    """

    def __init__(self, path: Path, mapping: Any, prefix: str = ""):
        self.path, self.prefix = path, prefix
        if not isinstance(mapping, dict):
            where = prefix.rstrip(".") or None
            raise CardError(path, where, f"expected a mapping, got {type(mapping).__name__}",
                            "write it as `key: value` lines")
        self.data, self.seen = mapping, set()

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def raw(self, name: str, required: bool = True) -> Any:
        self.seen.add(name)
        if name not in self.data or self.data[name] is None:
            if required:
                raise CardError(self.path, self.key(name), "missing", f"add `{name}:` to the card")
            return None
        return self.data[name]

    def str(self, name: str, required: bool = True, pattern: re.Pattern | None = None, hint: str = "") -> str | None:
        value = self.raw(name, required)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise CardError(self.path, self.key(name), f"expected a non-empty string, got {value!r}",
                            f"write `{name}: <text>`")
        if pattern is not None and not pattern.match(value):
            raise CardError(self.path, self.key(name), f"{value!r} is malformed", hint or f"match {pattern.pattern}")
        return value

    def number(self, name: str, required: bool = True) -> float | None:
        value = self.raw(name, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise CardError(self.path, self.key(name), f"expected a non-negative number, got {value!r}",
                            f"write e.g. `{name}: 1.0e-4`")
        return float(value)

    def sub(self, name: str, required: bool = True) -> Fields | None:
        value = self.raw(name, required)
        return None if value is None else Fields(self.path, value, f"{self.key(name)}.")

    def done(self) -> None:
        unknown = sorted(set(map(str, self.data)) - self.seen)
        if unknown:
            known = ", ".join(sorted(self.seen))
            raise CardError(self.path, self.key(unknown[0]), "unknown key",
                            f"remove it or fix its spelling (known here: {known})")


@dataclass(frozen=True)
class Validation:
    """Tolerances for comparing the staged model with its reference; None means params.yaml's default."""

    atol: float | None = None
    rtol: float | None = None


@dataclass(frozen=True)
class Card:
    name: str
    format: str
    description: str
    license: str
    tags: tuple[str, ...]
    source: Any  # the source kind's own frozen spec (see stages.sources)
    validation: Validation = field(default_factory=Validation)
    trust_code: bool = False  # run third-party code (hubconf.py, a .mar's model.py, remote code)
    path: Path = Path()
    targets: tuple[str, ...] = ()  # formats staged besides `format` (e.g. onnx for a TensorFlow card)
    # For sources without such metadata: how inputs are prepared (stages.preprocess) and the class names.
    preprocessing: dict | None = field(default=None, hash=False, compare=False)
    labels: tuple[str, ...] | None = None
    # What validation feeds the model where its own declaration is not enough (stages.inputs).
    inputs: tuple | None = field(default=None, hash=False, compare=False)

    @property
    def kind(self) -> str:
        return self.source.kind

    @property
    def staged_dir(self) -> Path:
        return Path("registry") / self.format / self.name

    @property
    def manifest_path(self) -> Path:
        return Path("registry") / self.format / f"{self.name}.manifest.json"

    @property
    def raw_dir(self) -> Path:
        return raw_dir(self.name)

    def target_dir(self, fmt: str) -> Path:
        return Path("registry") / fmt / self.name

    def target_manifest(self, fmt: str) -> Path:
        return Path("registry") / fmt / f"{self.name}.manifest.json"

    def target_artifact(self, fmt: str) -> str:
        """The DVC artifact name of a staged format: the card's name, or `<name>-<format>` for a target."""
        return self.name if fmt == self.format else f"{self.name}-{fmt}"


def raw_dir(name: str) -> Path:
    """Raw upstream files of a card: a DVC output of its fetch stage, pushed like everything else."""
    return Path("registry") / "_raw" / name


def card_path(fmt: str, name: str) -> Path:
    return Path("registry") / fmt / f"{name}.yaml"


# ----------------------------------------------------------------------------- the card's schema

def _tags(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(t, str) and t for t in value):
        raise schema.invalid(f"expected a list of strings, got {value!r}", "write `tags: [vision, classification]`")
    return tuple(value)


def _kind(value: Any) -> str:
    from stages.sources import kinds

    known = kinds()
    if not (isinstance(value, str) and value.strip()):
        raise schema.invalid(f"expected a non-empty string, got {value!r}", "write `kind: <kind>`")
    if value not in known:
        raise schema.invalid(f"unknown kind {value!r}", f"use one of: {', '.join(sorted(known))}")
    return value


class SourceHead(schema.Schema):
    """`source:` as the card model sees it: a mapping with a registered `kind`; the whole section is
    then validated by that kind's own model (`SourceKind.spec`), found through the kind registry."""

    model_config = ConfigDict(extra="allow")

    kind: Annotated[str, BeforeValidator(_kind)] = Field(description="the source kind (stages/sources/)")


class ValidationSection(schema.Schema):
    """Tolerances for comparing the staged model with its source; params.yaml's defaults otherwise."""

    atol: schema.Number | None = Field(None, description="absolute tolerance")
    rtol: schema.Number | None = Field(None, description="relative tolerance")


# Sections parsed by their own modules (stages.preprocess, stages.labels, stages.inputs): the model
# checks their outer shape; their JSON Schema is spelled out in `json_schema()`.
Section = Annotated[dict[str, Any], WithJsonSchema({"type": "object"})]


class CardModel(schema.Schema):
    """A model card, `registry/<format>/<name>.yaml`."""

    model_config = ConfigDict(title="zoo model card")

    name: schema.CardName = Field(description="the model's name: the file's name and its DVC artifact name")
    format: schema.one_of(FORMATS, "format") = Field(description="the staged format (the card's folder)")
    description: schema.Text = Field(description="one line on what the model is")
    license: schema.LicenseId = Field(description="SPDX licence id, e.g. apache-2.0")
    tags: Annotated[tuple[str, ...], BeforeValidator(_tags)] = Field((), description="labels for the artifact")
    trust_code: schema.Flag = Field(False, description="allow running third-party code (torchhub, eager .mar, remote code)")
    source: SourceHead = Field(description="where the model comes from, pinned; its fields depend on `kind`")
    targets: Annotated[tuple[str, ...], WithJsonSchema({"type": "array", "items": {"enum": list(FORMATS)},
                                                        "uniqueItems": True})] | None = Field(
        None, description="formats staged: the card's own and those its kind can add (e.g. [tensorflow, onnx])")
    preprocessing: Section | None = Field(None, description="how inputs are prepared, for sources that do not say")
    labels: Any = Field(None, description="class names in output order, or a named set")
    inputs: Section | None = Field(None, description="what validation feeds where the model's declaration is not enough")
    validation: ValidationSection | None = Field(None, description="tolerances (default: params.yaml)")

    @field_validator("targets", mode="before")
    @classmethod
    def _distinct_formats(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, list) and all(isinstance(t, str) for t in value) and len(set(value)) == len(value):
            return tuple(value)
        fmt, source = info.data.get("format", "<format>"), info.data.get("source")
        allowed = tuple(getattr(type_of(source), "extra_targets", ())) if source is not None else ()
        raise schema.invalid(f"expected a list of distinct formats, got {value!r}",
                             f"write e.g. `targets: [{fmt}{', ' + allowed[0] if allowed else ''}]`")


@contextlib.contextmanager
def _located(path: Path, lines: Lines | None):
    """A CardError from a section parsed field by field (stages.card.Fields) gains its line."""
    try:
        yield
    except CardError as exc:
        line = line_of(lines, tuple(exc.field.split("."))) if exc.field and exc.line is None else None
        if line is None or exc.path != str(path):
            raise
        raise CardError(exc.path, exc.field, exc.problem, exc.fix, line=line) from None


def parse_source(path: Path, kind, raw: Any, fmt: str, lines: Lines | None = None, *, pinning: bool = False) -> Any:
    """A card's `source:` section as its kind's frozen spec, validated by the kind's model (`spec`);
    `pinning`: `zoo pin`'s lenient mode (pins may be missing; None when any is)."""
    return schema.validate(kind.spec, raw, path, lines=lines, prefix=("source",), context={"format": fmt},
                           pinning=pinning)


def parse_card(path: Path, data: Any, lines: Lines | None = None) -> Card:
    """Parse and check a card's data; `path` must be registry/<format>/<name>.yaml (relative or not).
    `lines` (from stages.yamlio.load_yaml_lines) lets each error name its line."""
    from stages import inputs, labels, preprocess
    from stages.sources import get_kind

    top = schema.validate(CardModel, data, path, lines=lines)

    def fail(loc: tuple, problem: str, fix: str) -> CardError:
        return schema.card_error(path, loc, problem, fix, lines)

    name, fmt = top.name, top.format
    if path.stem != name:
        raise fail(("name",), f"{name!r} does not match the file name {path.name!r}",
                   f"rename the file to {name}.yaml or set `name: {path.stem}`")
    if path.parent.name != fmt:
        raise fail(("format",), f"{fmt!r} but the card is in {path.parent.name}/",
                   f"move the card to registry/{fmt}/ or fix `format:`")
    kind = get_kind(top.source.kind)
    if fmt not in kind.formats:
        raise fail(("format",), f"{fmt!r} is not a format that kind {kind.kind!r} stages",
                   f"use format: {' or '.join(kind.formats)}")
    source = parse_source(path, kind, data["source"], fmt, lines)
    if getattr(kind, "runs_code", False) and not top.trust_code:
        raise fail(("trust_code",), f"kind {kind.kind!r} runs third-party code and the card does not allow it",
                   "review the code at the pinned version, then add `trust_code: true` to the card")
    targets = _targets(path.stem, top, kind, fail)
    with _located(path, lines):  # sections still parsed by their own modules, field by field
        fields = Fields(path, data)
        declared_pre = preprocess.parse_card(fields.sub("preprocessing", required=False))
        declared_labels = labels.parse_card(fields)
        declared_inputs = inputs.parse_card(fields)
    validation = Validation(atol=top.validation.atol, rtol=top.validation.rtol) if top.validation else Validation()
    return Card(name=name, format=fmt, description=top.description.strip(), license=top.license,
                tags=top.tags, source=source, validation=validation, trust_code=top.trust_code, path=path,
                targets=targets, preprocessing=declared_pre, labels=declared_labels, inputs=declared_inputs)


def missing_metadata(card: Card) -> list[str]:
    """What a card must declare because its source kind does not describe it: preprocessing, labels."""
    kind = type_of(card.source)
    describes = getattr(kind, "describes", frozenset())
    missing = []
    if card.preprocessing is None and "preprocessing" not in describes:
        missing.append("preprocessing")
    from stages.labels import is_classifier

    if card.labels is None and is_classifier(card) and "labels" not in describes:
        missing.append("labels")
    return missing


def _targets(name: str, top: CardModel, kind, fail) -> tuple[str, ...]:
    """`targets: [tensorflow, onnx]`: the card's own format plus formats its kind can also stage."""
    value, fmt = top.targets, top.format
    if value is None:
        return ()
    allowed = tuple(getattr(kind, "extra_targets", ()))
    if fmt not in value:
        raise fail(("targets",), f"{list(value)!r} leaves out the card's own format {fmt!r}",
                   f"write `targets: [{fmt}, ...]`")
    extra = [t for t in value if t != fmt]
    bad = [t for t in extra if t not in allowed]
    if bad:
        raise fail(("targets",), f"kind {kind.kind!r} cannot also stage {bad[0]!r}",
                   f"targets besides {fmt!r} for this kind: {', '.join(allowed) or 'none'}")
    too_long = [t for t in extra if len(f"{name}-{t}") > 64]
    if too_long:
        raise fail(("name",), f"{name!r} is too long for the artifact name {name}-{too_long[0]}",
                   "shorten the name so `<name>-<target>` has at most 64 characters")
    return tuple(sorted(extra))


def type_of(source):
    from stages.sources import get_kind

    return get_kind(source.kind)


def load_card(path: Path | str, root: Path | None = None) -> Card:
    """Load a card; with `root`, `path` is relative to the registry root and stays so in `card.path`."""
    path = Path(path)
    data, lines = load_yaml_lines(root / path if root else path, path)
    return parse_card(path, data, lines)


def find_cards(root: Path) -> list[Path]:
    """Every card file under root/registry, sorted; manifests and raw folders are not cards."""
    cards = []
    for fmt in FORMATS:
        folder = root / "registry" / fmt
        if folder.is_dir():
            cards.extend(sorted(p for p in folder.glob("*.yaml") if p.is_file()))
    return cards


def _section_schemas() -> dict[str, dict]:
    """JSON Schema of the sections still parsed field by field by their own modules, from their constants."""
    from stages import inputs, labels, preprocess

    numbers = {"type": "array", "minItems": 1, "items": {"type": "number"}}
    preprocessing = {
        "type": "object", "additionalProperties": False, "required": ["type"],
        "description": "how inputs are prepared, for sources that do not say (image, text or tensor; README)",
        "properties": {
            "type": {"enum": list(preprocess.TYPES)}, "source": {"type": "string"},
            "note": {"type": "string", "description": "tensor: what the model's inputs hold"},
            "tokenizer": {"type": "string"}, "max_length": {"type": "number", "minimum": 0},
            "layout": {"enum": list(preprocess.LAYOUTS)}, "color": {"enum": list(preprocess.COLORS)},
            "interpolation": {"enum": list(preprocess.INTERPOLATIONS)},
            "size": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 2, "maxItems": 2,
                     "description": "[height, width]"},
            "resize": {"type": "integer", "minimum": 1, "description": "the shorter side before the centre crop"},
            "scale": {"type": "number", "minimum": 0}, "mean": numbers, "std": numbers},
        "allOf": [
            {"if": {"properties": {"type": {"const": "tensor"}}},
             "then": {"required": ["note"], "propertyNames": {"enum": ["type", "source", "note"]}}},
            {"if": {"properties": {"type": {"const": "text"}}},
             "then": {"required": ["tokenizer", "max_length"],
                      "propertyNames": {"enum": ["type", "source", "tokenizer", "max_length"]}}},
            {"if": {"properties": {"type": {"const": "image"}}},
             "then": {"required": ["layout", "color", "interpolation", "size", "scale", "mean", "std"]}},
        ]}
    labels_schema = {"description": "class names in output order, or a named set",
                     "anyOf": [{"enum": list(labels.NAMED)},
                               {"type": "array", "minItems": 1, "items": {"type": ["string", "integer"]}}]}
    dim = {"anyOf": [{"type": "integer", "minimum": 1}, {"enum": list(inputs.SYMBOLS)}]}
    inputs_schema = {
        "type": "object", "description": "per input name: what validation feeds (README, Validation inputs)",
        "additionalProperties": {
            "type": "object", "additionalProperties": False, "minProperties": 1,
            "properties": {"shape": {"type": "array", "items": dim},
                           "value": {"description": "a number, or a rectangular nested list of numbers"},
                           "range": {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "number"},
                                     "description": "[low, high) for integers"}}}}
    return {"preprocessing": preprocessing, "labels": labels_schema, "inputs": inputs_schema}


def json_schema() -> dict[str, Any]:
    """The cards' JSON Schema (draft 2020-12; `zoo schema`, registry/card.schema.json), for editors.

    `source:` is one of the kinds' models (`SourceKind.spec`, told apart by their `kind` constant).
    What JSON Schema cannot say (the name matches the file, the targets the kind allows, a URL's
    file name) only `zoo check` checks.
    """
    from pydantic.json_schema import models_json_schema

    from stages.sources import kinds

    specs = [cls.spec for _, cls in sorted(kinds().items())]
    refs, top = models_json_schema([(m, "validation") for m in (CardModel, *specs)], ref_template="#/$defs/{model}")
    defs = dict(top.get("$defs", {}))
    root = defs.pop(refs[(CardModel, "validation")]["$ref"].rsplit("/", 1)[-1])
    defs.pop(SourceHead.__name__, None)
    source = root["properties"]["source"]
    root["properties"]["source"] = {"description": source.get("description", ""),
                                    "oneOf": [refs[(spec, "validation")] for spec in specs]}
    for key, fragment in _section_schemas().items():
        root["properties"][key] = fragment
    if defs:
        root["$defs"] = defs
    root["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return root
