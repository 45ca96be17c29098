"""registry/index.json and the pipeline shards, generated from the cards.

Adding a model is adding a card and running `zoo index`; nobody edits a pipeline file per model.
The index lists every card (its file, format, kind, pins and pipeline shard, `dvcfile`) and which
converter stages it; `zoo index` renders from it the shards, registry/_pipeline/<NNNN>/dvc.yaml
(stages/shards.py), with each converter block's `deps:` (the card, its raw folder, the code the
stage runs as computed by stages.deps, then the converter's pins files), so a code change reruns
exactly the stages that run that code; and the root dvc.yaml's `artifacts:` section.

The fetch stage of a card depends on its pins only, not on the card file, so editing a card's
description restages it but never downloads again. It does so through its command line:
`zoo fetch <card> --pins <pins>`, where `pins` is a short hash of the card's source pins. A
changed command reruns a DVC stage, and a string in the command costs DVC nothing to compare.
`zoo check` fails when any of these files is out of date.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stages.card import Card, find_cards, load_card
from stages.convert import CONVERTERS, for_card
from stages.errors import CardError, IndexStaleError
from stages.files import dumps_stable, write_text_atomic
from stages.indexfile import INDEX, pins_hash, strip_none
from stages.schema import NAME_FIX, NAME_RE
from stages.sources import get_kind

# The cards' JSON Schema (`zoo schema`), for editors: `# yaml-language-server: $schema=../card.schema.json`
CARD_SCHEMA = Path("registry") / "card.schema.json"
PACKAGE = __name__.partition(".")[0]
# What `python -m stages stage <card>` runs of ours: the package and the pipeline, plus what is
# imported by name, out of the import closure's sight: the converter's module (stages.convert)
# and every source kind's module (stages.sources loads them all to parse any card; see
# stage_roots). cli.py (and __main__.py, which only calls it) is a dispatcher importing every
# command's module: walking it would make every stage depend on everything, so it is no root.
STAGE_ROOTS = (PACKAGE, f"{PACKAGE}.pipeline")


def load_all(root: Path) -> list[Card]:
    """Every card under root/registry, parsed; duplicate names across formats are refused, and so are
    values `zoo index` could not copy into the pipeline as they are (`refuse_interpolation`)."""
    cards, seen = [], {}
    for path in find_cards(root):
        rel = path.relative_to(root)
        if not NAME_RE.fullmatch(rel.stem):  # before reading: the stem reaches the stages' commands
            raise CardError(shown_path(rel), "name", f"the file name {rel.stem!r} is not a model name",
                            f"name the file <name>.yaml after the card's `name:`; {NAME_FIX}")
        card = load_card(rel, root)
        refuse_interpolation(card)
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


def shown_path(rel: Path) -> str:
    """A path for a one-line message: as it is, or quoted when it holds a newline or another control character."""
    text = rel.as_posix()
    return text if text.isprintable() else repr(text)


def refuse_interpolation(card: Card) -> None:
    """The description and tags are copied into dvc.yaml's `artifacts:`, where DVC interpolates `${...}`:
    `${nope}` would break every `dvc` command in the registry, `${onnx.atol}` read params.yaml."""
    for field, value in (("description", card.description), *((f"tags[{i}]", t) for i, t in enumerate(card.tags))):
        if "${" in value:
            raise CardError(card.path, field, "'${' would be read by DVC as an interpolation (the value is copied "
                            "into dvc.yaml's artifacts)", "write it without `${` (e.g. `$ {`)")


def card_schema_text() -> str:
    """registry/card.schema.json as `zoo index` writes it (what `zoo schema` prints)."""
    from stages.card import json_schema
    from stages.schema import dumps

    return dumps(json_schema())


def build(cards: list[Card]) -> dict[str, Any]:
    from stages import shards

    count = shards.shard_count(len(cards))
    index: dict[str, Any] = {"cards": {}, "converters": {name: {} for name in CONVERTERS}, "shards": count}
    for card in sorted(cards, key=lambda c: c.name):
        kind = get_kind(card.kind)
        card_file = card.path.as_posix()
        pins = strip_none(kind.pins(card.source))
        index["cards"][card.name] = {"card": card_file, "dvcfile": shards.dvcfile(card.name, count),
                                     "format": card.format, "kind": card.kind,
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
    """Per converter block of the shards: its whole `deps:` list, as `zoo index` writes it."""
    code = code_deps(root)
    return {c.stage: ["${item.card}", "registry/_raw/${key}", *code[name], *c.pins] for name, c in CONVERTERS.items()}


def _dvc_yaml(root: Path):
    from stages.yamlio import RoundTrip

    yaml = RoundTrip(indent=(2, 4, 2))  # the hand-written root pipeline keeps its comments and order
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
    if pipeline is None:
        pipeline = {}
    if not isinstance(pipeline, dict):
        raise IndexStaleError(f"{path}: not a mapping", fix="restore dvc.yaml from git (`git checkout -- dvc.yaml`)")
    return yaml, pipeline


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _unsharded(pipeline) -> list[str]:
    """The root dvc.yaml's card stages of the unsharded layout (foreach blocks over the index)."""
    from stages.shards import stage_names

    stages = pipeline.get("stages") or {}
    return [name for name in stages if name in stage_names()] if isinstance(stages, dict) else []


def _pipeline(root: Path, cards: list[Card]) -> tuple[dict, dict[str, str], dict[str, str]]:
    """The index, the shards' texts and {card name: its shard dvc.yaml}."""
    from stages import shards

    built = build(cards)
    where = {name: entry["dvcfile"] for name, entry in built["cards"].items()}
    return built, shards.render(built, stage_deps(root)), where


def write(root: Path) -> bool:
    """Write the index, the pipeline shards (moving lock entries of cards whose shard changed) and
    the root dvc.yaml's artifacts section; returns whether anything changed. Also writes
    registry/card.schema.json, the cards' JSON Schema. A root dvc.yaml of the unsharded layout
    loses its card stages (and its `vars:` of the index): their lock entries move to the shards."""
    from stages import shards

    cards = load_all(root)
    yaml, pipeline = _dvc_yaml(root)  # read before anything is written: no half-updated registry
    built, texts, where = _pipeline(root, cards)
    changed = False
    for path, text in ((root / INDEX, dumps_stable(built)), (root / CARD_SCHEMA, card_schema_text())):
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            write_text_atomic(path, text)
            changed = True
    changed |= shards.write(root, texts, where, {name: e["pins"] for name, e in built["cards"].items()})
    edited = False
    for name in _unsharded(pipeline):
        del pipeline["stages"][name]
        edited = True
    if "stages" in pipeline and not pipeline["stages"]:
        del pipeline["stages"]
    varlist = pipeline.get("vars")
    if isinstance(varlist, list) and INDEX.as_posix() in varlist:
        varlist.remove(INDEX.as_posix())
        if not varlist:
            del pipeline["vars"]
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
    from stages import shards

    cards = load_all(root)
    built, texts, where = _pipeline(root, cards)
    path = root / INDEX
    if not path.exists() or path.read_text(encoding="utf-8") != dumps_stable(built):
        raise IndexStaleError(f"{INDEX} does not match the cards in registry/",
                              fix="run `zoo index` and commit the result")
    path = root / CARD_SCHEMA
    if not path.exists() or path.read_text(encoding="utf-8") != card_schema_text():
        raise IndexStaleError(f"{CARD_SCHEMA} does not match the card schema (`zoo schema`: stages/card.py and "
                              "the source kinds)", fix="run `zoo index` and commit the result")
    pipeline = _dvc_yaml(root)[1]
    unsharded = _unsharded(pipeline)
    if unsharded:
        raise IndexStaleError(f"dvc.yaml: `{unsharded[0]}` is a card stage of the unsharded layout (the cards' "
                              f"stages live in {shards.PIPELINE_DIR}/)", fix="run `zoo index` (it moves them and "
                              "their lock entries) and commit the result")
    if _plain(pipeline.get("artifacts") or {}) != artifacts(cards):
        raise IndexStaleError("dvc.yaml's artifacts section does not match the cards in registry/",
                              fix="run `zoo index` and commit the result")
    check_deps(root)
    shards.check(root, texts, where)


def check_deps(root: Path) -> None:
    """Each shard's converter blocks' deps must be what `zoo index` computes from the code as it is
    now: a module a stage runs but does not depend on would let DVC keep outputs of older code."""
    from stages import shards
    from stages.yamlio import load_yaml

    wanted = stage_deps(root)
    for rel, folder in shards.on_disk(root).items():
        if not (folder / "dvc.yaml").is_file():
            continue

        def unreadable(where, problem, fix, rel=rel):
            return IndexStaleError(f"{rel}: {where + ': ' if where else ''}{problem}", fix="run `zoo index`")

        data = load_yaml(folder / "dvc.yaml", Path(rel), what="pipeline shard", error=unreadable)
        blocks = (data.get("stages") if isinstance(data, dict) else None) or {}
        for stage, block in blocks.items() if isinstance(blocks, dict) else ():
            if stage not in wanted or not isinstance(block, dict) or not isinstance(block.get("do"), dict):
                continue
            listed = block["do"].get("deps") or []
            if listed != wanted[stage]:
                missing = [d for d in wanted[stage] if d not in listed]
                extra = [d for d in listed if d not in wanted[stage]]
                what = "; ".join(part for part in (f"missing {', '.join(missing)}" if missing else "",
                                                   f"not run by it {', '.join(extra)}" if extra else "") if part)
                raise IndexStaleError(f"{rel}'s `{stage}` deps do not match the code it runs ({what or 'order'})",
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
        if len(parts) >= 4 and parts[0] == "registry" and parts[1] != "_pipeline":  # cards, manifests are shallower
            folder = "/".join(parts[:3])
            found[folder] = found.get(folder, 0) + 1
    return found
