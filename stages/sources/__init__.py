"""Registry of source kinds (`source.kind` in a card): one module per kind.

Every module of this package is imported on first use of the registry, and each kind module
registers its class with `@register`: adding a kind is adding a module, with no table to edit.
Modules here import only the standard library at module level, so that parsing cards, `zoo
check` and the ONNX stages never pay for an ecosystem's heavy framework. Helpers shared by
several kinds live in modules whose names start with `_` (torch, TensorFlow builders), in
`hub` (the Hugging Face Hub) and in `pinning` (`zoo pin`'s network side).
"""

from __future__ import annotations

import pkgutil
from importlib import import_module

from stages.sources.base import RemoteFile, SourceKind, SourceModel

_KINDS: dict[str, type[SourceKind]] = {}
_LOADED = False


def register(cls: type[SourceKind]) -> type[SourceKind]:
    if cls.kind in _KINDS:
        raise RuntimeError(f"source kind {cls.kind!r} registered twice")
    _KINDS[cls.kind] = cls
    return cls


def kinds() -> dict[str, type[SourceKind]]:
    """Every registered kind, by name (importing this package's modules on first call)."""
    global _LOADED
    if not _LOADED:
        for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
            import_module(f"{__name__}.{module}")  # a kind module registers its class when imported
        _LOADED = True
    return dict(_KINDS)


def get_kind(kind: str) -> type[SourceKind]:
    return kinds()[kind]


__all__ = ["RemoteFile", "SourceKind", "SourceModel", "get_kind", "kinds", "register"]
