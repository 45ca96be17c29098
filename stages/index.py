"""registry/index.json: what dvc.yaml's `foreach` blocks iterate over, generated from the cards.

Adding a model is adding a card and running `zoo index`; nobody edits dvc.yaml per model.
The fetch stage of a card depends on its pins only, not on the card file, so editing a card's
description restages it but never downloads again. It does so through its command line:
`zoo fetch <card> --pins <pins>`, where `pins` is a short hash of the card's source pins. A
changed command reruns a DVC stage, and a string in the command costs DVC nothing to compare,
where a params dependency into this file costs a parse and a tree walk per stage.
`zoo check` fails when this file is out of date.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stages.card import Card, find_cards, load_card
from stages.convert import CONVERTERS, for_card
from stages.errors import CardError, IndexStaleError
from stages.files import dumps_stable, write_text_atomic
from stages.sources import get_kind

INDEX = Path("registry") / "index.json"


def _strip_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):  # JSON has no tuples: compare pins as they read back
        return [_strip_none(v) for v in value]
    return value


def load_all(root: Path) -> list[Card]:
    """Every card under root/registry, parsed; duplicate names across formats are refused."""
    cards, seen = [], {}
    for path in find_cards(root):
        card = load_card(path.relative_to(root), root)
        if card.name in seen:
            raise CardError(card.path, "name", f"{card.name!r} is already used by {seen[card.name]}",
                            "model names are unique across formats; rename one of the cards")
        seen[card.name] = card.path
        cards.append(card)
    for card in cards:  # `<name>-onnx` is the artifact of a card's ONNX target: no card may take it
        for target in card.targets:
            clash = card.target_artifact(target)
            if clash in seen:
                raise CardError(seen[clash], "name", f"{clash!r} is the artifact name of {card.path}'s {target} target",
                                "rename one of the cards")
    return cards


def pins_hash(pins: dict[str, Any]) -> str:
    """A short, stable fingerprint of a card's source pins (what its fetch stage's command carries)."""
    import hashlib

    return hashlib.sha256(dumps_stable(pins).encode()).hexdigest()[:16]


def build(cards: list[Card]) -> dict[str, Any]:
    index: dict[str, Any] = {"cards": {}, "converters": {name: {} for name in CONVERTERS}}
    for card in sorted(cards, key=lambda c: c.name):
        kind = get_kind(card.kind)
        card_file = card.path.as_posix()
        pins = _strip_none(kind.pins(card.source))
        index["cards"][card.name] = {"card": card_file, "format": card.format, "kind": card.kind,
                                     "source": pins, "pins": pins_hash(pins)}
        for target in (card.format, *card.targets):
            index["converters"][for_card(card, target).name][card.name] = {"card": card_file, "format": target}
    return index


def artifacts(cards: list[Card]) -> dict[str, Any]:
    """dvc.yaml's `artifacts:` section: every staged model, for `dvc artifacts`, GTO and DVC Studio."""
    out = {}
    for card in sorted(cards, key=lambda c: c.name):
        for target in (card.format, *card.targets):
            out[card.target_artifact(target)] = {
                "path": card.target_dir(target).as_posix(), "type": "model", "desc": card.description,
                "labels": sorted({*card.tags, target, card.kind})}
    return dict(sorted(out.items()))


def _dvc_yaml(root: Path):
    from ruamel.yaml import YAML

    yaml = YAML()  # round-trip: the hand-written pipeline keeps its comments and order
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml, yaml.load((root / "dvc.yaml").read_text(encoding="utf-8"))


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))


def write(root: Path) -> bool:
    """Write the index and dvc.yaml's artifacts section; returns whether either changed."""
    import io

    cards = load_all(root)
    text, path = dumps_stable(build(cards)), root / INDEX
    changed = not path.exists() or path.read_text(encoding="utf-8") != text
    if changed:
        write_text_atomic(path, text)
    yaml, pipeline = _dvc_yaml(root)
    wanted = artifacts(cards)
    if _plain(pipeline.get("artifacts") or {}) != wanted:
        if wanted:
            pipeline["artifacts"] = wanted
        else:
            pipeline.pop("artifacts", None)
        out = io.StringIO()
        yaml.dump(pipeline, out)
        write_text_atomic(root / "dvc.yaml", out.getvalue())
        changed = True
    return changed


def check(root: Path) -> None:
    cards = load_all(root)
    path = root / INDEX
    if not path.exists() or path.read_text(encoding="utf-8") != dumps_stable(build(cards)):
        raise IndexStaleError(f"{INDEX} does not match the cards in registry/",
                              fix="run `zoo index` and commit the result")
    if _plain(_dvc_yaml(root)[1].get("artifacts") or {}) != artifacts(cards):
        raise IndexStaleError("dvc.yaml's artifacts section does not match the cards in registry/",
                              fix="run `zoo index` and commit the result")


def read(root: Path) -> dict[str, Any]:
    try:
        return json.loads((root / INDEX).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexStaleError(f"{INDEX} is missing", fix="run `zoo index` and commit the result") from None


def check_card_pins(root: Path, card: Card, pins: str | None = None) -> None:
    """A stage reads the card but DVC tracked the index's pins (and the fetch command's): all must agree."""
    entry = read(root)["cards"].get(card.name)
    expected = _strip_none(get_kind(card.kind).pins(card.source))
    if (entry is None or entry.get("source") != expected or entry.get("card") != card.path.as_posix()
            or (pins is not None and pins != pins_hash(expected))):
        raise IndexStaleError(f"{INDEX} is out of date for {card.path}",
                              fix="run `zoo index`, commit it, then `dvc repro`")
