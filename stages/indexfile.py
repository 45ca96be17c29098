"""registry/index.json as the stages read it: the card's pins and its shard, nothing that generates them.

The DVC stages import this module (through stages.pipeline), so it is part of every stage's code
dependencies: it stays small, and it imports neither stages.index (which writes the index and the
shards) nor stages.shards, so retuning how the pipeline is generated or sharded restages nothing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from stages.card import Card
from stages.errors import IndexStaleError
from stages.files import dumps_stable
from stages.sources import get_kind

INDEX = Path("registry") / "index.json"


def strip_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):  # JSON has no tuples: compare pins as they read back
        return [strip_none(v) for v in value]
    return value


def pins_hash(pins: dict[str, Any]) -> str:
    """A short, stable fingerprint of a card's source pins (what its fetch stage's command carries)."""
    return hashlib.sha256(dumps_stable(pins).encode()).hexdigest()[:16]


def read(root: Path) -> dict[str, Any]:
    try:
        return json.loads((root / INDEX).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexStaleError(f"{INDEX} is missing", fix="run `zoo index` and commit the result") from None


def check_card_pins(root: Path, card: Card, pins: str | None = None) -> None:
    """A stage reads the card but DVC tracked the index's pins (and the fetch command's): all must agree."""
    entry = read(root)["cards"].get(card.name)
    expected = strip_none(get_kind(card.kind).pins(card.source))
    if (entry is None or entry.get("source") != expected or entry.get("card") != card.path.as_posix()
            or (pins is not None and pins != pins_hash(expected))):
        raise IndexStaleError(f"{INDEX} is out of date for {card.path}",
                              fix="run `zoo index`, commit it, then `dvc repro`")


def address_of(root: Path, name: str, stage: str) -> str:
    """A card's stage as DVC addresses it, from the index (`<shard>/dvc.yaml:<stage>@<name>`); the
    bare `<stage>@<name>` when the index does not have it (fix hints only use this)."""
    try:
        entry = json.loads((root / INDEX).read_text(encoding="utf-8"))["cards"][name]
        return f"{entry['dvcfile']}:{stage}@{name}"
    except (OSError, ValueError, KeyError, TypeError):
        return f"{stage}@{name}"
