"""The card schema's building blocks: a frozen pydantic base model, reusable field types, and the
one translator from pydantic's ValidationError to the registry's one-line CardError.

A card is written by people, so every problem is one line naming the file, the line, the field
path (`source.sha256`), the problem and the fix. Each field type carries its own fix: its
validator raises `invalid(problem, fix)` (a PydanticCustomError holding both), and `Hint`
metadata says what to write when a required field is missing. Pydantic's own errors (a missing
key, an unknown key, a mapping that is a list) are translated here, in `translate`, and nowhere
else; rules that span fields (stages.card) raise through `card_error`, the same path.

In a fix, `{key}` stands for the field's own key and `{card}` for the card's path.

`zoo pin` validates a `source:` section in a lenient mode (`validate(..., pinning=True)`): errors
about pins it resolves (a missing or malformed sha256, a branch where a commit belongs, a URL at
a moving branch: `invalid(..., pin=True)` or a missing field marked `Hint(pin=True)`) are let
through; any other is reported as usual.

This module is a leaf: stages.card and every source kind build their models from it.
"""

from __future__ import annotations

import json
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from annotated_types import Ge, MinLen
from pydantic import (BaseModel, BeforeValidator, ConfigDict, PlainSerializer, StringConstraints, ValidationError,
                      model_validator)
from pydantic_core import PydanticCustomError

from stages.errors import CardError
from stages.yamlio import Lines, line_of

# DVC artifact names (and GTO's) allow lowercase letters, digits and inner '-'; dots would also
# break `cards.<name>` lookups. A card name is its artifact name, so it follows those rules.
NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
LICENSE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+-]*$")

SHA256_FIX = "write the file's full sha256 as 64 lowercase hex digits (`sha256sum FILE`), or run `zoo pin {card}`"
COMMIT_FIX = "pin the full commit id: run `zoo pin {card}`"
URL_FIX = "give the upstream https URL (mirrors are configured with ZOO_MIRROR, not in cards)"
NAME_FIX = "use lowercase letters, digits and inner '-' (as DVC artifact names), at most 64 characters"
LICENSE_FIX = "use an SPDX licence id such as apache-2.0 or mit"
MAPPING_FIX = "write it as `key: value` lines"


def invalid(problem: str, fix: str, *, at: tuple | None = None, pin: bool = False) -> PydanticCustomError:
    """A field's own error: what is wrong and what to write instead. `at` reports it at another key
    path of the card (absolute, e.g. `("format",)`) when a section's rule is about a top-level field;
    `pin` marks what `zoo pin` resolves (let through while pinning)."""
    ctx: dict[str, Any] = {"problem": problem, "fix": fix}
    if at is not None:
        ctx["at"] = tuple(at)
    if pin:
        ctx["pin"] = True
    return PydanticCustomError("zoo_card", "{problem}", ctx)


@dataclass(frozen=True)
class Hint:
    """Field metadata (`Annotated[..., Hint(...)]`): the problem and fix when the field is missing,
    and the fix for any of pydantic's own errors on it."""

    fix: str | None = None
    missing: str | None = None
    missing_fix: str | None = None
    pin: bool = False  # `zoo pin` writes it: may be missing while pinning


class Schema(BaseModel):
    """Base of every card section: unknown keys are errors, instances are frozen (and hashable
    when their values are), and a key written with no value (`sha256:`) counts as absent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {str(k): v for k, v in data.items() if v is not None}
        return data


# ----------------------------------------------------------------------------- field types

def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise invalid(f"expected a non-empty string, got {value!r}", "write `{key}: <text>`")
    return value


Text = Annotated[str, StringConstraints(min_length=1), BeforeValidator(_text)]


def matching(regex: re.Pattern, fix: str, *, problem: str = "is malformed") -> Any:
    """A string matching `regex` (anchored); anything else is `'<value>' <problem>; <fix>`."""

    def check(value: Any) -> str:
        if not isinstance(value, str) or not regex.match(value):
            _text(value)
            raise invalid(f"{value!r} {problem}", fix)
        return value

    return Annotated[str, StringConstraints(pattern=regex.pattern), BeforeValidator(check), Hint(fix=fix)]


def one_of(values: tuple[str, ...], what: str, fix: str | None = None) -> Any:
    """One of a few words (an enum in the JSON Schema)."""

    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in values:
            raise invalid(f"unknown {what} {value!r}", fix or f"use one of: {', '.join(values)}")
        return value

    return Annotated[typing.Literal[values], BeforeValidator(check)]


def _sha256(value: Any) -> str:
    if not isinstance(value, str):
        raise invalid(f"expected 64 lowercase hex digits, got {value!r}", SHA256_FIX, pin=True)
    if not SHA256_RE.match(value):
        raise invalid(f"{value!r} is malformed", SHA256_FIX, pin=True)
    return value


Sha256 = Annotated[str, StringConstraints(pattern=SHA256_RE.pattern), BeforeValidator(_sha256),
                   Hint(fix=SHA256_FIX, missing="missing (every file is pinned by its sha256)",
                        missing_fix="run `zoo pin {card}` to fetch the file and write its sha256", pin=True)]


def commit(moves: str = "branches and tags move", fix: str = COMMIT_FIX) -> Any:
    """A 40-hex commit id; a branch or tag (what `zoo pin` resolves) is refused, saying why (`moves`)."""

    def check(value: Any) -> str:
        if not isinstance(value, str) or not COMMIT_RE.match(value):
            branch = isinstance(value, (str, int, float)) and not isinstance(value, bool)  # `ref: 2.0` is a tag
            raise invalid(f"{value!r} is not a 40-hex commit ({moves})", fix, pin=branch)
        return value

    return Annotated[str, StringConstraints(pattern=COMMIT_RE.pattern), BeforeValidator(check), Hint(fix=fix)]


Commit = commit()


def _https(value: Any) -> str:
    _text(value)
    if not value.startswith("https://"):
        raise invalid(f"{value!r} is not an https:// URL", URL_FIX)
    return value


HttpsUrl = Annotated[str, StringConstraints(pattern=r"^https://"), BeforeValidator(_https), Hint(fix=URL_FIX)]


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise invalid(f"expected a non-negative number, got {value!r}", "write e.g. `{key}: 1.0e-4`")
    return float(value)


Number = Annotated[float, Ge(0), BeforeValidator(_number)]


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise invalid(f"expected true or false, got {value!r}", "write `{key}: true` or `{key}: false`")
    return value


Flag = Annotated[bool, BeforeValidator(_flag)]


def shape(example: str = "[1, 3, 224, 224] (the leading dim is the batch)") -> Any:
    """A non-empty list of positive ints, as a tuple; `example` is what the fix suggests."""

    def check(value: Any) -> tuple[int, ...]:
        if not isinstance(value, (list, tuple)) or not value or not all(
                isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in value):
            raise invalid(f"expected a list of positive ints, got {value!r}", f"write e.g. `{{key}}: {example}`")
        return tuple(value)

    return Annotated[tuple[Annotated[int, Ge(1)], ...], MinLen(1), BeforeValidator(check)]


def mapping(example: str, values: tuple[type, ...] | None = None, what: str = "a mapping") -> Any:
    """A mapping of names to values (`kwargs: {alpha: 0.35}`), kept as a sorted tuple of (name, value)
    pairs so the spec stays frozen, and dumped as a mapping again (the pins the index and the
    manifest record); `values` restricts the values' types (None: anything)."""

    def check(value: Any) -> tuple[tuple[str, Any], ...]:
        if not isinstance(value, dict) or not all(
                isinstance(k, str) and (values is None or isinstance(v, values)) for k, v in value.items()):
            raise invalid(f"expected {what}, got {value!r}", f"write e.g. `{{key}}: {example}`")
        return tuple(sorted(value.items()))

    shown = dict[str, Any] if values is None else dict[str, typing.Union[values]]
    return Annotated[tuple[tuple[str, Any], ...], BeforeValidator(check, json_schema_input_type=shown),
                     PlainSerializer(dict, return_type=shown)]


Shape = shape()
CardName = matching(NAME_RE, NAME_FIX)
LicenseId = matching(LICENSE_RE, LICENSE_FIX)


# ----------------------------------------------------------------------------- the translator

def field_name(loc: tuple) -> str:
    """`('source', 'test_data', 'url')` -> `source.test_data.url`; list items as `tags[1]`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def card_error(path: Path | str, loc: tuple, problem: str, fix: str, lines: Lines | None = None) -> CardError:
    """The one-line CardError for the field at `loc` (a key path of the card): file, line, field,
    problem, fix. Every card error built from the schema, or by a rule across fields, ends here."""
    loc = tuple(loc)
    key = next((str(p) for p in reversed(loc) if isinstance(p, str)), "")
    fix = fix.replace("{key}", key).replace("{card}", str(path))
    return CardError(path, field_name(loc) or None, problem, fix, line=line_of(lines, loc))


def _input_model(metadata) -> Any:
    """The model a field is written as when a validator turns it into something else
    (`BeforeValidator(f, json_schema_input_type=Model)`), or None."""
    for item in metadata:
        written = getattr(item, "json_schema_input_type", None)
        if isinstance(item, BeforeValidator) and _is_model(written):
            return written
    return None


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated and Optional (down to the model a field is written as, if any); a union of
    several models is left as it is."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            written = _input_model(annotation.__metadata__)
            if written is not None:
                return written
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _at(model: type[BaseModel], loc: tuple) -> tuple[Any, Any]:
    """(the type at `loc` inside `model`, the FieldInfo of its last key when it is a model field)."""
    current, info = model, None
    for part in loc:
        current = _unwrap(current)
        if _is_model(current):
            info = current.model_fields.get(part) if isinstance(part, str) else None
            if info is None:
                return None, None
            current = _input_model(info.metadata) or info.annotation
        elif typing.get_origin(current) in (list, tuple, dict, set, frozenset):
            args = [a for a in typing.get_args(current) if a is not Ellipsis]
            current, info = (args[-1] if args else Any), None
        else:
            return None, None
    return current, info


def _hint(model: type[BaseModel], loc: tuple) -> Hint:
    info = _at(model, loc)[1]
    hints = [m for m in (info.metadata if info is not None else ()) if isinstance(m, Hint)]
    return hints[-1] if hints else Hint()


def _known(model: type[BaseModel], loc: tuple) -> list[str]:
    owner = _unwrap(_at(model, loc)[0])
    return sorted(owner.model_fields) if _is_model(owner) else []


def pinnable(model: type[BaseModel], err: dict) -> bool:
    """Whether `zoo pin` resolves what this error is about (a pin missing, malformed or moving)."""
    ctx = err.get("ctx") or {}
    if ctx.get("pin"):
        return True
    return err["type"] == "missing" and _hint(model, tuple(err["loc"])).pin


def translate(path: Path | str, exc: ValidationError, model: type[BaseModel], lines: Lines | None = None,
              prefix: tuple = (), err: dict | None = None) -> CardError:
    """pydantic's ValidationError (of `model`, validating the card's section at `prefix`) as the
    card's one-line CardError, about its first problem (fields in declaration order, then unknown
    keys), or about `err`, one of its errors."""
    err = err or exc.errors(include_url=False)[0]
    rel = tuple(err["loc"])
    loc, ctx, kind, value = (*prefix, *rel), err.get("ctx") or {}, err["type"], err.get("input")
    if "problem" in ctx and "fix" in ctx:  # a field type's own error (invalid())
        return card_error(path, ctx.get("at", loc), ctx["problem"], ctx["fix"], lines)
    hint = _hint(model, rel)
    if kind == "missing":
        problem, fix = hint.missing or "missing", hint.missing_fix or "add `{key}:` to the card"
    elif kind == "extra_forbidden":
        problem = "unknown key"
        fix = f"remove it or fix its spelling (known here: {', '.join(_known(model, rel[:-1]))})"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        problem, fix = f"expected a mapping, got {type(value).__name__}", MAPPING_FIX
    elif kind in ("list_type", "tuple_type"):
        problem, fix = f"expected a list, got {value!r}", hint.fix or "write it as `[a, b]` or `- item` lines"
    elif kind == "string_pattern_mismatch":
        problem, fix = f"{value!r} is malformed", hint.fix or f"match {ctx.get('pattern')}"
    else:
        message = err["msg"]
        problem = f"{message[:1].lower()}{message[1:]}, got {value!r}"
        fix = hint.fix or "see the README's section on model cards"
    return card_error(path, loc, problem, fix, lines)


def validate(model: type[BaseModel], data: Any, path: Path | str, *, lines: Lines | None = None,
             prefix: tuple = (), context: dict | None = None, pinning: bool = False) -> Any:
    """`model` validated from a card's section (at key path `prefix`), or its one-line CardError.

    `pinning`: `zoo pin`'s lenient mode; errors about pins (see `pinnable`) pass, and the result is
    None when there were any (the section is not a spec yet)."""
    try:
        return model.model_validate(data, context={**(context or {}), "pinning": pinning})
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        left = [e for e in errors if not pinnable(model, e)] if pinning else errors
        if not left:
            return None
        raise translate(path, exc, model, lines, prefix, err=left[0]) from None


def dumps(schema: dict) -> str:
    """A JSON Schema as the registry writes it: sorted keys, 2-space indent, a trailing newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
