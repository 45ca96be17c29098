"""Registry of source kinds (`source.kind` in a card): one module per ecosystem.

Modules here import only the standard library at module level, so that parsing cards, `zoo
check` and the ONNX stages never pay for an ecosystem's heavy framework.
"""

from __future__ import annotations

from importlib import import_module

from stages.errors import CardError
from stages.sources.base import RemoteFile, SourceKind

_BUILTIN = ("stages.sources.onnx_zoo", "stages.sources.torch_zoos", "stages.sources.tensorflow")
_KINDS: dict[str, type[SourceKind]] = {}


def register(cls: type[SourceKind]) -> type[SourceKind]:
    if cls.kind in _KINDS:
        raise RuntimeError(f"source kind {cls.kind!r} registered twice")
    _KINDS[cls.kind] = cls
    return cls


def kinds() -> dict[str, type[SourceKind]]:
    for module in _BUILTIN:  # each registers its kinds on first import (a no-op afterwards)
        import_module(module)
    return dict(_KINDS)


def get_kind(kind: str) -> type[SourceKind]:
    return kinds()[kind]


def parse_source(fields, fmt: str):
    """Parse a card's `source:` section with its kind's parser; rejects unknown kinds and keys."""
    kind = fields.str("kind")
    known = kinds()
    if kind not in known:
        raise CardError(fields.path, "source.kind", f"unknown kind {kind!r}",
                        f"use one of: {', '.join(sorted(known))}")
    cls = known[kind]
    if fmt not in cls.formats:
        raise CardError(fields.path, "format", f"{fmt!r} is not a format that kind {kind!r} stages",
                        f"use format: {' or '.join(cls.formats)}")
    spec = cls.parse(fields, fmt)
    fields.done()
    return spec


__all__ = ["RemoteFile", "SourceKind", "get_kind", "kinds", "parse_source", "register"]
