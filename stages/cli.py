"""`zoo`: the registry's command line. Thin: parse, call stages.pipeline / stages.index, map errors.

Every `ZooError` becomes one line on stderr (`zoo: error: ...`, ending with the fix) and its exit
code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from stages import __version__, constants
from stages.errors import ZooError

HEAVY_MODULES = ("torch", "tensorflow", "transformers", "keras", "jax")


def _cmd_check(args) -> int:
    from stages import index

    cards = index.load_all(args.root)
    index.check(args.root)
    _check_dvc_yaml(args.root, cards)
    print(f"{len(cards)} cards ok; {index.INDEX} is up to date")
    return 0


def _check_dvc_yaml(root: Path, cards) -> None:
    """Every converter a card uses must have its foreach block in dvc.yaml."""
    import yaml

    from stages.convert import for_kind
    from stages.errors import IndexStaleError
    from stages.sources import get_kind

    stages = (yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8")) or {}).get("stages", {})
    for card in cards:
        converter = for_kind(get_kind(card.kind).converter)
        block = stages.get(converter.stage) or {}
        if block.get("foreach") != f"${{converters.{converter.name}}}":
            raise IndexStaleError(f"dvc.yaml has no `{converter.stage}` block iterating ${{converters.{converter.name}}}"
                                  f" (needed by {card.path})", fix="restore the block from the README's pipeline section")


def _cmd_index(args) -> int:
    from stages import index

    changed = index.write(args.root)
    print(f"{index.INDEX} {'updated' if changed else 'already up to date'}")
    return 0


def _cmd_fetch(args) -> int:
    from stages.pipeline import fetch_card

    print(fetch_card(args.root, Path(args.card), args.pins).relative_to(args.root).as_posix())
    return 0


def _cmd_stage(args) -> int:
    from stages.pipeline import stage_card

    print(stage_card(args.root, Path(args.card)).relative_to(args.root).as_posix())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description="A git + DVC model registry.")
    parser.add_argument("--version", action="version", version=f"zoo {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step")
    parser.add_argument("--root", type=Path, default=None, help="registry checkout (default: ZOO_ROOT or .)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("check", help="validate every card, the index and dvc.yaml (CI runs it)").set_defaults(func=_cmd_check)
    sub.add_parser("index", help="regenerate registry/index.json from the cards").set_defaults(func=_cmd_index)
    fetch = sub.add_parser("fetch", help="download a card's pinned files into registry/_raw/<name> (a DVC stage)")
    fetch.add_argument("card", help="registry/<format>/<name>.yaml")
    fetch.add_argument("--pins", help="the card's pins fingerprint from registry/index.json (dvc.yaml passes it)")
    fetch.set_defaults(func=_cmd_fetch)
    stage = sub.add_parser("stage", help="stage a card from its raw files, validate it, write its manifest (a DVC stage)")
    stage.add_argument("card", help="registry/<format>/<name>.yaml")
    stage.set_defaults(func=_cmd_stage)
    return parser


def _record_timing(args, started: float) -> None:
    path = constants.timings_file()
    if path is None:
        return
    entry = {"command": args.command, "work_s": round(time.perf_counter() - started, 6),
             "heavy_modules": sorted(m for m in HEAVY_MODULES if m in sys.modules)}
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="zoo: %(levelname)s: %(message)s")
    started = time.perf_counter()
    try:
        args.root = (args.root or constants.root()).resolve()
        code = args.func(args)
    except ZooError as exc:
        print(f"zoo: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("zoo: interrupted; nothing was placed under a final name", file=sys.stderr)
        return 130
    _record_timing(args, started)
    return code
