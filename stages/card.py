"""Model cards: `registry/<format>/<name>.yaml`, parsed into a frozen schema at load.

A card is written by people, so every problem is reported as one line naming the file, the
field and the fix; unknown keys are errors (a typo must not silently drop a pin).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.errors import CardError

FORMATS = ("onnx", "tensorflow", "keras")
# DVC artifact names (and GTO's) allow lowercase letters, digits and inner '-'; dots would also
# break `cards.<name>` lookups. A card name is its artifact name, so it follows those rules.
NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
LICENSE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+-]*$")


class Fields:
    """Reads one mapping of a card, checking each field; `done()` rejects what was not read."""

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

    def sha256(self, name: str = "sha256", required: bool = True) -> str | None:
        if required and self.data.get(name) is None:
            self.seen.add(name)
            raise CardError(self.path, self.key(name), "missing (every file is pinned by its sha256)",
                            f"run `zoo pin {self.path}` to fetch the file and write its sha256")
        return self.str(name, required, SHA256_RE,
                        "write the file's full sha256 as 64 lowercase hex digits (`sha256sum FILE`)")

    def commit(self, name: str, required: bool = True) -> str | None:
        value = self.raw(name, required)
        if value is None:
            return None
        if not isinstance(value, str) or not COMMIT_RE.match(value):
            raise CardError(self.path, self.key(name), f"{value!r} is not a 40-hex commit (branches and tags move)",
                            f"pin the full commit id: run `zoo pin {self.path}`")
        return value

    def url(self, name: str, required: bool = True) -> str | None:
        value = self.str(name, required)
        if value is not None and not value.startswith("https://"):
            raise CardError(self.path, self.key(name), f"{value!r} is not an https:// URL",
                            "give the upstream https URL (mirrors are configured with ZOO_MIRROR, not in cards)")
        return value

    def number(self, name: str, required: bool = True) -> float | None:
        value = self.raw(name, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise CardError(self.path, self.key(name), f"expected a non-negative number, got {value!r}",
                            f"write e.g. `{name}: 1.0e-4`")
        return float(value)

    def boolean(self, name: str, default: bool = False) -> bool:
        value = self.raw(name, required=False)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise CardError(self.path, self.key(name), f"expected true or false, got {value!r}",
                            f"write `{name}: true` or `{name}: false`")
        return value

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


class DuplicateKey(Exception):
    """Raised by the loader when one mapping holds a key twice; load_yaml turns it into one line."""

    def __init__(self, key: Any, first: int, second: int):
        self.key, self.first, self.second = key, first, second
        super().__init__(f"key {key!r} on lines {first} and {second}")


@functools.cache
def unique_key_loader():
    """PyYAML's safe loader (the C one when PyYAML was built with libyaml) refusing a repeated key.

    YAML requires keys to be unique, but PyYAML silently keeps the last one: a card with two
    `sha256:` lines would pin the second while a reviewer reads the first. Built on first use, so
    importing this module does not import yaml.
    """
    import yaml

    class UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                seen: dict[Any, int] = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` then overrides: YAML's merge
                        continue
                    key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
                    try:
                        if key in seen:
                            raise DuplicateKey(key, seen[key], line)
                        seen[key] = line
                    except TypeError:  # an unhashable key: the base class reports it as invalid YAML
                        continue
            return super().construct_mapping(node, deep)

    return UniqueKeyLoader


def load_yaml(path: Path, shown: Path | None = None, *, what: str = "card", error=None) -> Any:
    """The one reader of YAML written by people (cards, params.yaml): UTF-8, valid YAML, no key twice.

    Each problem is one error naming the file and the line, never a UnicodeDecodeError or a
    silently dropped key. `shown` is the path to name (relative to the registry root); `what` is
    "card" or the file's name, used in the fixes; `error(where, problem, fix)` builds the
    exception (by default a CardError naming `shown`), so params.yaml gets its own error class.
    """
    import yaml

    shown = shown or path
    if error is None:
        def error(where, problem, fix):
            return CardError(shown, where, problem, fix)
    card = what == "card"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise error(None, "no such card" if card else "no such file",
                    "check the path (cards live at registry/<format>/<name>.yaml)" if card
                    else f"restore it: `git checkout -- {shown}`") from None
    except OSError as exc:
        raise error(None, f"cannot be read ({exc.strerror or exc})", "check the path and its permissions") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise error(f"line {line}", f"not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})",
                    f"save {'the card' if card else what} as UTF-8") from None
    try:
        return yaml.load(text, Loader=unique_key_loader())
    except DuplicateKey as exc:
        raise error(f"line {exc.second}", f"key {exc.key!r} is written twice (lines {exc.first} and {exc.second}), "
                    "and YAML would silently keep the last", "keep one of them") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else None
        problem = str(getattr(exc, "problem", None) or exc).splitlines()[0]
        raise error(where, f"not valid YAML: {problem}", "fix the YAML syntax") from None


def parse_card(path: Path, data: Any) -> Card:
    """Parse and check a card's data; `path` must be registry/<format>/<name>.yaml (relative or not)."""
    from stages.sources import parse_source

    fields = Fields(path, data)
    name = fields.str("name", pattern=NAME_RE,
                      hint="use lowercase letters, digits and inner '-' (as DVC artifact names), at most 64 characters")
    fmt = fields.str("format")
    if fmt not in FORMATS:
        raise CardError(path, "format", f"unknown format {fmt!r}", f"use one of: {', '.join(FORMATS)}")
    if path.stem != name:
        raise CardError(path, "name", f"{name!r} does not match the file name {path.name!r}",
                        f"rename the file to {name}.yaml or set `name: {path.stem}`")
    if path.parent.name != fmt:
        raise CardError(path, "format", f"{fmt!r} but the card is in {path.parent.name}/",
                        f"move the card to registry/{fmt}/ or fix `format:`")
    description = fields.str("description")
    license_id = fields.str("license", pattern=LICENSE_RE, hint="use an SPDX licence id such as apache-2.0 or mit")
    tags = fields.raw("tags", required=False) or []
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        raise CardError(path, "tags", f"expected a list of strings, got {tags!r}", "write `tags: [vision, classification]`")
    trust_code = fields.boolean("trust_code")
    source = parse_source(fields.sub("source"), fmt)
    if getattr(type_of(source), "runs_code", False) and not trust_code:
        raise CardError(path, "trust_code", f"kind {source.kind!r} runs third-party code and the card does not allow it",
                        "review the code at the pinned version, then add `trust_code: true` to the card")
    targets = _targets(path, fields, fmt, type_of(source))
    from stages import labels, preprocess

    declared_pre = preprocess.parse_card(fields.sub("preprocessing", required=False))
    declared_labels = labels.parse_card(fields)
    from stages import inputs

    declared_inputs = inputs.parse_card(fields)
    validation = Validation()
    sub = fields.sub("validation", required=False)
    if sub is not None:
        validation = Validation(atol=sub.number("atol", required=False), rtol=sub.number("rtol", required=False))
        sub.done()
    fields.done()
    return Card(name=name, format=fmt, description=description.strip(), license=license_id,
                tags=tuple(tags), source=source, validation=validation, trust_code=trust_code, path=path,
                targets=targets, preprocessing=declared_pre, labels=declared_labels,
                inputs=declared_inputs)


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


def _targets(path: Path, fields: Fields, fmt: str, kind) -> tuple[str, ...]:
    """`targets: [tensorflow, onnx]`: the card's own format plus formats its kind can also stage."""
    value = fields.raw("targets", required=False)
    if value is None:
        return ()
    allowed = tuple(getattr(kind, "extra_targets", ()))
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value) or len(set(value)) != len(value):
        raise CardError(path, "targets", f"expected a list of distinct formats, got {value!r}",
                        f"write e.g. `targets: [{fmt}{', ' + allowed[0] if allowed else ''}]`")
    if fmt not in value:
        raise CardError(path, "targets", f"{value!r} leaves out the card's own format {fmt!r}",
                        f"write `targets: [{fmt}, ...]`")
    extra = [t for t in value if t != fmt]
    bad = [t for t in extra if t not in allowed]
    if bad:
        raise CardError(path, "targets", f"kind {kind.kind!r} cannot also stage {bad[0]!r}",
                        f"targets besides {fmt!r} for this kind: {', '.join(allowed) or 'none'}")
    name = path.stem
    too_long = [t for t in extra if len(f"{name}-{t}") > 64]
    if too_long:
        raise CardError(path, "name", f"{name!r} is too long for the artifact name {name}-{too_long[0]}",
                        "shorten the name so `<name>-<target>` has at most 64 characters")
    return tuple(sorted(extra))


def type_of(source):
    from stages.sources import get_kind

    return get_kind(source.kind)


def load_card(path: Path | str, root: Path | None = None) -> Card:
    """Load a card; with `root`, `path` is relative to the registry root and stays so in `card.path`."""
    path = Path(path)
    return parse_card(path, load_yaml(root / path if root else path, path))


def find_cards(root: Path) -> list[Path]:
    """Every card file under root/registry, sorted; manifests and raw folders are not cards."""
    cards = []
    for fmt in FORMATS:
        folder = root / "registry" / fmt
        if folder.is_dir():
            cards.extend(sorted(p for p in folder.glob("*.yaml") if p.is_file()))
    return cards
