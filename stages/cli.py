"""`zoo`: the registry's command line. Thin: parse, call stages.pipeline / stages.index, map errors.

Every `ZooError` becomes one line on stderr (`zoo: error: ...`, ending with the fix) and its
family's exit code (stages.errors.ExitCode); anything else is a bug: one line `zoo: internal
error: ...` and exit 70, its traceback only with `-v`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from stages import __version__, constants
from stages.errors import ExitCode, ZooError

HEAVY_MODULES = ("torch", "tensorflow", "transformers", "keras", "jax")


def _cmd_check(args) -> int:
    from stages.check import check
    from stages.index import INDEX

    cards, warnings = check(args.root)
    for warning in warnings:
        print(f"zoo: warning: {warning}", file=sys.stderr)
    print(f"{len(cards)} cards ok; {INDEX} is up to date")
    return 0


def _cmd_index(args) -> int:
    from stages import index

    changed = index.write(args.root)
    from stages.indexfile import read

    shards = read(args.root)["shards"]
    print(f"{index.INDEX}, {index.CARD_SCHEMA}, the pipeline shards ({shards} under registry/_pipeline/) and "
          f"dvc.yaml's artifacts {'updated' if changed else 'already up to date'}")
    return 0


def _cmd_schema(args) -> int:
    from stages.index import card_schema_text

    sys.stdout.write(card_schema_text())
    return 0


def _cmd_fetch(args) -> int:
    from stages.pipeline import fetch_card

    print(fetch_card(args.root, Path(args.card), args.pins).relative_to(args.root).as_posix())
    return 0


def _cmd_stage(args) -> int:
    from stages.card import load_card
    from stages.convert import for_card
    from stages.frameworks import only_framework
    from stages.pipeline import stage_card

    card = load_card(Path(args.card), args.root)
    only_framework(for_card(card, args.target).name, from_pytorch=bool(getattr(card.source, "from_pytorch", None)))
    print(stage_card(args.root, Path(args.card), args.target).relative_to(args.root).as_posix())
    return 0


def _cmd_pin(args) -> int:
    from stages.pin import pin_card

    for card in args.cards:
        changes = pin_card(args.root, Path(card))
        print(f"{card}: " + ("; ".join(changes) if changes else "already fully pinned"))
    if any(args.cards):
        print("next: `zoo index`, `zoo check`, `dvc repro`")
    return 0


def _cmd_remove(args) -> int:
    from stages.prune import remove_model

    for name in args.names:
        print(f"{name}: removed " + ", ".join(remove_model(args.root, name)))
    print("next: commit; older releases keep these models (`zoo gc` keeps every tag's data)")
    return 0


def _cmd_diff(args) -> int:
    from stages import diff, gitio

    result = diff.diff(gitio.snapshot(args.root, args.rev_a), gitio.snapshot(args.root, args.rev_b))
    render = diff.render_json if args.json else diff.render_markdown if args.markdown else diff.render_table
    sys.stdout.write(render(result))
    return 0


def _cmd_verify(args) -> int:
    from stages.verify import verify

    for folder in args.folders:  # a failing model raises VerifyError: its message and exit code
        path = Path(folder)
        result = verify(path if path.is_absolute() else args.root / path)
        if args.json:
            print(json.dumps(result, sort_keys=True))
            continue
        print(f"{result['model']}: {result['bytes']['files']} files match the manifest (size and sha256)")
        for filename, rec in result["files"].items():
            print(f"{result['model']}: {filename} on {result['sets']} golden set(s): max abs {rec['max_abs_error']}, "
                  f"max rel {rec['max_rel_error']} (atol {rec['atol']}, rtol {rec['rtol']}) ok")
    return 0


def _cmd_run(args) -> int:
    from stages.run import render, run

    path = Path(args.folder)
    result = run(path if path.is_absolute() else args.root / path, args.inputs, args.top_k)
    result["model"] = Path(args.folder).as_posix().removeprefix("registry/")
    sys.stdout.write(json.dumps(result, indent=2, sort_keys=True) + "\n" if args.json else render(result))
    return 0


def _cmd_upstream(args) -> int:
    from stages import index, upstream
    from stages.errors import ModelNotFound

    cards = index.load_all(args.root)
    if args.names:
        unknown = sorted(set(args.names) - {c.name for c in cards})
        if unknown:
            raise ModelNotFound(f"registry/*/{unknown[0]}.yaml: no card named {unknown[0]!r}",
                                fix="check `ls registry/*/`")
        cards = [c for c in cards if c.name in args.names]
    rows = upstream.check(args.root, cards)
    sys.stdout.write(json.dumps(rows, indent=2, sort_keys=True) + "\n" if args.json else upstream.render_table(rows))
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def _cmd_release(args) -> int:
    from stages.release import release

    tag, message = release(args.root, args.version)
    print(message)
    print(f"tagged {tag} (and <model>@v{args.version} for each new or changed model); publish with "
          f"`git push origin --tags` (the data is already in the remote)")
    return 0


def _cmd_gc(args) -> int:
    from stages.release import gc

    sys.stdout.write(gc(args.root, cloud=args.cloud, yes=args.yes))
    return 0


def _cmd_audit(args) -> int:
    from stages.audit import audit, default_rev, render
    from stages.errors import ExitCode

    report = audit(args.root, args.rev or default_rev(args.root), remote=args.remote, repair=args.repair)
    sys.stdout.write(json.dumps(report.as_json(), indent=2, sort_keys=True) + "\n" if args.json else render(report))
    if not report.ok:
        print("zoo audit: repair with `zoo audit --repair` (from the cache into the remote with --remote, or "
              "from the remote into the cache), or restage with `dvc repro -f -s <stage>` then `dvc push`",
              file=sys.stderr)
    return 0 if report.ok else int(ExitCode.INTEGRITY)


def _cmd_pull(args) -> int:
    from stages.files import human_size
    from stages.pull import pull

    from stages.errors import ConfigError

    out = Path(args.out).resolve() if args.out else None
    if out is not None and out.exists() and not out.is_dir():
        raise ConfigError(f"--out {args.out}: a file, not a folder", fix="name a folder (it is created when missing)")
    for got in pull(args.root, args.names, rev=args.rev, raw=args.raw, out=out, force=args.force):
        where = os.path.relpath(got.dest) if got.dest.is_relative_to(Path.cwd()) else str(got.dest)  # as typed
        at = f" ({args.rev})" if args.rev else ""
        what = "every md5 matches its DVC listing" if got.target.raw else "every sha256 matches its manifest"
        how = "already there" if got.unchanged else (f"{got.fetched} object(s) from the remote" if got.fetched
                                                     else "from the cache")
        print(f"{where}{at}: {got.files} files, {human_size(got.bytes)}, {what} ({how})")
    return 0


def _cmd_catalog(args) -> int:
    from stages.catalog import build
    from stages.errors import ConfigError

    upstream = None
    if args.upstream:
        try:
            upstream = json.loads(Path(args.upstream).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{args.upstream}: not readable as `zoo upstream --json` output ({exc})",
                              fix="write it with `zoo upstream --json > FILE`, or leave --upstream out") from None
    index = build(args.root, args.rev, args.out and Path(args.out).resolve(), upstream)
    print(f"zoo catalog: {index}")
    return 0


def _positive(text: str) -> int:
    """argparse type: a whole number >= 1 (a local cluster of 0 workers would wait forever)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of workers >= 1")
    return value


def _cmd_repro(args) -> int:
    from stages.errors import ExitCode, StagingError
    from stages.repro import repro, summary, table

    results, merge_error = repro(args.root, args.targets, workers=args.workers or (None if args.scheduler else os.cpu_count()),
                    scheduler=args.scheduler, isolation=args.isolation, keep_going=not args.fail_fast,
                    memory_limit=args.memory_limit)
    if results:
        sys.stdout.write(table(results))
        ok, failed = summary(results)
        print(f"zoo repro: {ok} card(s) staged, {failed} failed" + (
            " (rerun `zoo repro` to retry them; `dvc repro` runs them on one core)" if failed else ""), flush=True)
    if merge_error:
        raise StagingError(f"{args.root}: the final `dvc repro` here failed: {merge_error}",
                           fix="run `dvc repro` in the checkout to see why; what the workers staged is in the cache")
    return int(ExitCode.STAGING) if results and summary(results)[1] else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description="A git + DVC model registry.")
    parser.add_argument("--version", action="version", version=f"zoo {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step")
    parser.add_argument("--root", type=Path, default=None, help="registry checkout (default: ZOO_ROOT or .)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("check", help="validate every card, the index and dvc.yaml (CI runs it)").set_defaults(func=_cmd_check)
    sub.add_parser("index", help="regenerate registry/index.json (and card.schema.json) from the cards"
                   ).set_defaults(func=_cmd_index)
    sub.add_parser("schema", help="print the cards' JSON Schema (editors validate and complete cards with it)"
                   ).set_defaults(func=_cmd_schema)
    fetch = sub.add_parser("fetch", help="download a card's pinned files into registry/_raw/<name> (a DVC stage)")
    fetch.add_argument("card", help="registry/<format>/<name>.yaml")
    fetch.add_argument("--pins", help="the card's pins fingerprint from registry/index.json (dvc.yaml passes it)")
    fetch.set_defaults(func=_cmd_fetch)
    stage = sub.add_parser("stage", help="stage a card from its raw files, validate it, write its manifest (a DVC stage)")
    stage.add_argument("card", help="registry/<format>/<name>.yaml")
    stage.add_argument("--target", help="stage one of the card's `targets:` (e.g. onnx) instead of its own format")
    stage.set_defaults(func=_cmd_stage)
    pin = sub.add_parser("pin", help="resolve branches/tags to commits and missing sha256s, written into the cards")
    pin.add_argument("cards", nargs="+", help="registry/<format>/<name>.yaml ...")
    pin.set_defaults(func=_cmd_pin)
    rm = sub.add_parser("remove", help="remove models: card, manifest, staged and raw folders, lock entries")
    rm.add_argument("names", nargs="+", help="model names")
    rm.set_defaults(func=_cmd_remove)
    diff = sub.add_parser("diff", help="what changed between two zoo revisions (reads git only)")
    diff.add_argument("rev_a", help="older revision: a zoo-v* tag, branch or commit")
    diff.add_argument("rev_b", nargs="?", default="HEAD", help="newer revision (default HEAD)")
    style = diff.add_mutually_exclusive_group()
    style.add_argument("--json", action="store_true", help="machine-readable output")
    style.add_argument("--markdown", action="store_true", help="Markdown for release notes")
    diff.set_defaults(func=_cmd_diff)
    rel = sub.add_parser("release", help="tag zoo-v<version> after checking the zoo is clean, staged, valid and pushed")
    rel.add_argument("version", help="semantic version, e.g. 1.2.0")
    rel.set_defaults(func=_cmd_release)
    gcp = sub.add_parser("gc", help="dvc gc keeping every tag, branch and the workspace")
    gcp.add_argument("--cloud", action="store_true", help="also delete unused data from the remote")
    gcp.add_argument("--yes", action="store_true", help="confirm the deletion")
    gcp.set_defaults(func=_cmd_gc)
    ver = sub.add_parser("verify", help="run staged models on their golden data (test_data_set_*) and report the errors")
    ver.add_argument("folders", nargs="+", help="registry/<format>/<name> ...")
    ver.add_argument("--json", action="store_true", help="machine-readable output")
    ver.set_defaults(func=_cmd_verify)
    runp = sub.add_parser("run", help="run a staged ONNX model on image files or texts with its recorded "
                                      "preprocessing: top-k labels, or the embedding's shape and norm")
    runp.add_argument("folder", help="registry/onnx/<name>")
    runp.add_argument("inputs", nargs="+", metavar="INPUT", help="image files (PNG, JPEG) or texts, by the model")
    runp.add_argument("--top-k", type=int, default=5, help="how many classes to show (default 5)")
    runp.add_argument("--json", action="store_true", help="machine-readable output")
    runp.set_defaults(func=_cmd_run)
    up = sub.add_parser("upstream", help="does every card's pinned upstream still serve the same bytes? "
                                         "(ok, moved, changed, gone; exit 1 unless all ok)")
    up.add_argument("names", nargs="*", help="card names (default: every card)")
    up.add_argument("--json", action="store_true", help="machine-readable output")
    up.set_defaults(func=_cmd_upstream)
    aud = sub.add_parser("audit", help="check every object of a release in the DVC cache (or the remote) against "
                                       "its md5 and the manifests' sha256; exit 8 when any is missing or corrupted")
    aud.add_argument("rev", nargs="?", help="a release tag, branch or commit (default: the latest zoo-v* release, "
                                            "or HEAD before the first)")
    aud.add_argument("--remote", action="store_true", help="audit the DVC remote itself (streamed and hashed; "
                                                           "nothing is written here)")
    aud.add_argument("--repair", action="store_true", help="put verified copies back: from the cache into the "
                                                           "remote (with --remote), or from the remote into the cache")
    aud.add_argument("--json", action="store_true", help="machine-readable output")
    aud.set_defaults(func=_cmd_audit)
    pul = sub.add_parser("pull", help="pull staged models by name (one shard read, not the whole zoo) and check "
                                      "every file against its manifest")
    pul.add_argument("names", nargs="+", help="model names: resnet50, onnx/resnet50, <name>-onnx for a target")
    pul.add_argument("--rev", help="a release tag, branch or commit: that revision's files (default: the work tree's "
                                   "dvc.lock); without --out they replace the model's folder here")
    pul.add_argument("--raw", action="store_true", help="the raw upstream folder (registry/_raw/<name>) instead")
    pul.add_argument("--out", help="put each folder under this folder (<out>/<format>/<name>, <out>/_raw/<name>) "
                                   "instead of its place in the registry")
    pul.add_argument("--force", action="store_true", help="replace a folder even when it holds files that are "
                                                          "neither in the pull nor in the DVC cache (local edits)")
    pul.set_defaults(func=_cmd_pull)
    cat = sub.add_parser("catalog", help="build a static website of the zoo from git alone (index, a page per "
                                         "model, releases with charts); open catalog/index.html")
    cat.add_argument("--rev", help="a release tag, branch or commit (default: the working tree)")
    cat.add_argument("--out", help="output folder (default: catalog/, ignored by git)")
    cat.add_argument("--upstream", metavar="FILE", help="`zoo upstream --json` output, for the upstream column")
    cat.set_defaults(func=_cmd_catalog)
    rep = sub.add_parser("repro", help="restage what is stale in parallel on Dask (a local cluster or yours), "
                                       "merged through DVC's run-cache; `dvc repro` stays the one-core way")
    rep.add_argument("targets", nargs="*", help="card names (resnet50, onnx/resnet50, <name>-onnx) or DVC stage "
                                                "addresses (default: every stale stage)")
    where = rep.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_positive, help="start a local Dask cluster of N single-threaded worker "
                                                   "processes (default: the number of cores)")
    where.add_argument("--scheduler", help="use a running Dask cluster, e.g. tcp://10.0.0.5:8786")
    rep.add_argument("--isolation", choices=("cache", "remote"), help="cache: tasks share this checkout's DVC "
                     "cache (default with --workers); remote: tasks share nothing but the DVC remote (default "
                     "with --scheduler)")
    rep.add_argument("--fail-fast", action="store_true", help="stop at the first failing card (default: keep going)")
    rep.add_argument("--keep-going", action="store_true", help="the default: one failing card never stops the others")
    rep.add_argument("--memory-limit", help="per worker, e.g. 6GB: passed to Dask's workers, and a task whose "
                                            "processes exceed it is killed and reported")
    rep.set_defaults(func=_cmd_repro)
    return parser


def _record_timing(args, started: float) -> None:
    path = constants.timings_file()
    if path is None:
        return
    from stages.timing import PHASES

    entry = {"command": args.command, "card": getattr(args, "card", None),
             "work_s": round(time.perf_counter() - started, 6),
             "phases": {k: round(v, 6) for k, v in PHASES.items()},
             "heavy_modules": sorted(m for m in HEAVY_MODULES if m in sys.modules)}
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Run one command: an exit code and, on failure, exactly one line on stderr, never a traceback.

    A ZooError is the user's to fix: `zoo: error: <what, where>; <fix>` and the exit code of its
    family, its class's `exit_code` (stages.errors.ExitCode; a message that spans lines is joined,
    so scripts and DVC's log show all of it). Anything else is a bug in the registry, not in the
    input: one line saying so and exit 70 (EX_SOFTWARE in sysexits.h), and `-v` re-raises it for the
    traceback a report needs. argparse's usage errors exit 2 (ExitCode.USAGE) before this.
    """
    from stages.errors import ConfigError, DiskFullError, disk_full_cause

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="zoo: %(levelname)s: %(message)s")
    started = time.perf_counter()

    def one_line(exc: BaseException) -> str:
        return " ".join(part.strip() for part in str(exc).splitlines() if part.strip())

    def no_space(exc: BaseException) -> int | None:
        cause = disk_full_cause(exc)
        if cause is None:
            return None
        written = getattr(cause, "filename2", None) or cause.filename  # a copy names its source first
        where = f" writing {written}" if written else ""
        error = DiskFullError(f"no space left{where} ({cause.strerror or 'file too large'}); the step stopped "
                              "and nothing half-written is under a final name",
                              fix="free disk space (or raise the file-size or disk quota limit) and run the command again")
        print(f"zoo: error: {one_line(error)}", file=sys.stderr)
        return int(DiskFullError.exit_code)

    try:
        root = args.root or constants.root()
        if not root.is_dir():
            raise ConfigError(f"{root}: the registry root is not a folder",
                              fix="check --root or ZOO_ROOT (default: the current folder)")
        args.root = root.resolve()
        code = args.func(args)
        _record_timing(args, started)
    except ZooError as exc:
        if (code := no_space(exc)) is not None:
            return code
        print(f"zoo: error: {one_line(exc)}", file=sys.stderr)
        return int(type(exc).exit_code)  # the class's family code, never one set on an instance
    except KeyboardInterrupt:
        print("zoo: interrupted; nothing was placed under a final name", file=sys.stderr)
        return 130
    except Exception as exc:
        if (code := no_space(exc)) is not None:
            return code
        if args.verbose:
            raise
        detail = one_line(exc)
        print(f"zoo: internal error: {type(exc).__name__}{': ' + detail if detail else ''} (a registry bug; "
              "rerun with -v to see the traceback, and report it)", file=sys.stderr)
        return int(ExitCode.INTERNAL)
    return code
