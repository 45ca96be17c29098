"""registry/index.json: what dvc.yaml's `foreach` blocks iterate over, generated from the cards.

Adding a model is adding a card and running `zoo index`; nobody edits dvc.yaml per model.
The fetch stage of a card depends on its pins only, not on the card file, so editing a card's
description restages it but never downloads again. It does so through its command line:
`zoo fetch <card> --pins <pins>`, where `pins` is a short hash of the card's source pins. A
changed command reruns a DVC stage, and a string in the command costs DVC nothing to compare,
where a params dependency into this file costs a parse and a tree walk per stage.
`zoo check` fails when this file is out of date.

`zoo index` also writes dvc.yaml's generated parts: its `artifacts:` section, and each converter
block's `deps:` (the card, its raw folder, the code the stage runs as computed by stages.deps,
then the converter's pins files), so a code change reruns exactly the stages that run that code.
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
# The cards' JSON Schema (`zoo schema`), for editors: `# yaml-language-server: $schema=../card.schema.json`
CARD_SCHEMA = Path("registry") / "card.schema.json"
PACKAGE = __name__.partition(".")[0]
# What `python -m stages stage <card>` runs of ours: the package and the pipeline, plus what is
# imported by name, out of the import closure's sight: the converter's module (stages.convert)
# and every source kind's module (stages.sources loads them all to parse any card; see
# stage_roots). cli.py (and __main__.py, which only calls it) is a dispatcher importing every
# command's module: walking it would make every stage depend on everything, so it is no root.
STAGE_ROOTS = (PACKAGE, f"{PACKAGE}.pipeline")


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


def card_schema_text() -> str:
    """registry/card.schema.json as `zoo index` writes it (what `zoo schema` prints)."""
    from stages.card import json_schema
    from stages.schema import dumps

    return dumps(json_schema())


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


def code_dir(root: Path) -> Path:
    """The package whose imports are walked: the registry's own copy (what DVC hashes), or, for a
    root without one (the tests' bare roots), the package running now, which is the same code."""
    own = root / PACKAGE
    return own if (own / "__init__.py").is_file() else Path(__file__).resolve().parent


def stage_roots(converter: str) -> tuple[str, ...]:
    """STAGE_ROOTS, the converter's module and the modules of the kinds it stages (their builders),
    read from the kinds registry: a new kind module joins its converters' deps by registering, and a
    change to one kind's module reruns only the stages of its converters."""
    from stages.convert import TARGET_CONVERTERS
    from stages.sources import kinds

    modules = set()
    for cls in kinds().values():
        targets = {TARGET_CONVERTERS[(fmt, t)] for fmt in cls.formats for t in cls.extra_targets
                   if (fmt, t) in TARGET_CONVERTERS}
        if converter in {*cls.converters(), *targets}:
            modules.add(cls.__module__)
    own = CONVERTERS[converter].module
    return (*STAGE_ROOTS, own, *sorted(m for m in modules if m.startswith(f"{PACKAGE}.")))


def code_deps(root: Path) -> dict[str, list[str]]:
    """Per converter: the files of the package its stage runs, sorted (see stages.deps)."""
    from stages.deps import closure

    package, parsed = code_dir(root), {}
    return {name: closure(package, stage_roots(name), parsed) for name in CONVERTERS}


def stage_deps(root: Path) -> dict[str, list[str]]:
    """Per converter block of dvc.yaml: its whole `deps:` list, as `zoo index` writes it."""
    code = code_deps(root)
    return {c.stage: ["${item.card}", "registry/_raw/${key}", *code[name], *c.pins] for name, c in CONVERTERS.items()}


def _blocks(pipeline) -> dict[str, Any]:
    """dvc.yaml's converter blocks that exist (`zoo check` names a missing one on its own)."""
    stages = pipeline.get("stages") or {}
    names = {c.stage for c in CONVERTERS.values()}
    return {name: block["do"] for name, block in stages.items()
            if name in names and isinstance(block, dict) and isinstance(block.get("do"), dict)}


def _dvc_yaml(root: Path):
    from stages.yamlio import RoundTrip

    yaml = RoundTrip(indent=(2, 4, 2))  # the hand-written pipeline keeps its comments and order
    path = root / "dvc.yaml"

    def unreadable(problem: str) -> IndexStaleError:
        return IndexStaleError(f"{path}: not a readable pipeline ({problem})",
                               fix="restore dvc.yaml from git (`git checkout -- dvc.yaml`)")

    try:
        pipeline = yaml.load(path.read_text(encoding="utf-8"), unreadable)
    except FileNotFoundError:
        raise IndexStaleError(f"{path}: no dvc.yaml here", fix="run zoo in the registry's checkout (or pass "
                              "--root / set ZOO_ROOT), or restore dvc.yaml from git") from None
    except UnicodeDecodeError as exc:
        raise unreadable(str(exc).splitlines()[0][:200]) from None
    if not isinstance(pipeline, dict):
        raise IndexStaleError(f"{path}: not a mapping", fix="restore dvc.yaml from git (`git checkout -- dvc.yaml`)")
    return yaml, pipeline


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))


def write(root: Path) -> bool:
    """Write the index, dvc.yaml's artifacts section and its converter blocks' deps; returns
    whether anything changed. Also writes registry/card.schema.json, the cards' JSON Schema."""
    cards = load_all(root)
    yaml, pipeline = _dvc_yaml(root)  # read before anything is written: no half-updated registry
    changed = False
    for path, text in ((root / INDEX, dumps_stable(build(cards))), (root / CARD_SCHEMA, card_schema_text())):
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            write_text_atomic(path, text)
            changed = True
    edited, computed = False, stage_deps(root)
    for stage, do in _blocks(pipeline).items():
        if _plain(do.get("deps")) != computed[stage]:
            do["deps"] = computed[stage]
            edited = True
    wanted = artifacts(cards)
    if _plain(pipeline.get("artifacts") or {}) != wanted:
        if wanted:
            pipeline["artifacts"] = wanted
        else:
            pipeline.pop("artifacts", None)
        edited = True
    if edited:
        write_text_atomic(root / "dvc.yaml", yaml.dumps(pipeline))
        changed = True
    return changed


def check(root: Path) -> None:
    cards = load_all(root)
    path = root / INDEX
    if not path.exists() or path.read_text(encoding="utf-8") != dumps_stable(build(cards)):
        raise IndexStaleError(f"{INDEX} does not match the cards in registry/",
                              fix="run `zoo index` and commit the result")
    path = root / CARD_SCHEMA
    if not path.exists() or path.read_text(encoding="utf-8") != card_schema_text():
        raise IndexStaleError(f"{CARD_SCHEMA} does not match the card schema (`zoo schema`: stages/card.py and "
                              "the source kinds)", fix="run `zoo index` and commit the result")
    pipeline = _dvc_yaml(root)[1]
    if _plain(pipeline.get("artifacts") or {}) != artifacts(cards):
        raise IndexStaleError("dvc.yaml's artifacts section does not match the cards in registry/",
                              fix="run `zoo index` and commit the result")
    check_deps(root, pipeline)


def check_deps(root: Path, pipeline=None) -> None:
    """Each converter block's deps must be what `zoo index` computes from the code as it is now:
    a module a stage runs but does not depend on would let DVC keep outputs of older code."""
    pipeline = _dvc_yaml(root)[1] if pipeline is None else pipeline
    wanted = stage_deps(root)
    for stage, do in _blocks(pipeline).items():
        listed = _plain(do.get("deps")) or []
        if listed != wanted[stage]:
            missing = [d for d in wanted[stage] if d not in listed]
            extra = [d for d in listed if d not in wanted[stage]]
            what = "; ".join(part for part in (f"missing {', '.join(missing)}" if missing else "",
                                               f"not run by it {', '.join(extra)}" if extra else "") if part)
            raise IndexStaleError(f"dvc.yaml's `{stage}` deps do not match the code it runs ({what or 'order'})",
                                  fix="run `zoo index` and commit the result")


def tracked_outputs(root: Path) -> dict[str, int]:
    """DVC outputs git tracks anyway: {output folder: files}, for every file in git under
    registry/_raw/<name>/ or a staged folder registry/<format>/<name>/.

    The root .gitignore keeps them out of `git add -A` (by static rules: DVC writes its own lines
    only after a repro that succeeds as a whole), but `git add -f`, or a commit made before those
    rules, still gets them in: git then holds model bytes and DVC refuses to restage the output.
    A root outside git (the tests' bare roots) has none.
    """
    import subprocess

    try:
        proc = subprocess.run(["git", "ls-files", "-z", "--", "registry"], cwd=root, capture_output=True)
    except FileNotFoundError:  # no git on this machine: nothing can be tracked
        return {}
    found: dict[str, int] = {}
    for path in proc.stdout.decode(errors="replace").split("\0") if proc.returncode == 0 else ():
        parts = path.split("/")
        if len(parts) >= 4 and parts[0] == "registry":  # cards, manifests, .gitignore files are shallower
            folder = "/".join(parts[:3])
            found[folder] = found.get(folder, 0) + 1
    return found


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
