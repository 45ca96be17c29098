"""`make bench`: the pipeline's overhead against bare DVC, and parallel staging with `zoo repro`.

Prints (never asserts; targets are read by people), one table per section, and writes every
number to .bench/results.json:

- bare: bare DVC with trivial stages (`echo` into a file): first `dvc repro` (seconds, seconds per
  stage), no-op `dvc repro` and `dvc status` (median of 3), with the stages in ONE dvc.yaml and
  sharded in files of 20 stages (shards/<NNNN>/dvc.yaml, `wdir: ../..`, as the registry's shards);
- registry: the registry with generated tiny ONNX-zoo cards (2 stages each: fetch + stage): the
  same timings, its shard files, the ratio of its no-op repro to bare DVC's sharded one at the same
  stage count (target <= 1.2x), DVC's per-stage overhead (first repro minus the stages' own work,
  recorded by every stage with ZOO_TIMINGS), `zoo fetch` / `zoo stage` run directly (process start
  and imports beyond the work; heavy frameworks imported: none expected), and `zoo diff`;
- demo: the demo zoo's first staging, serial `dvc repro` against `zoo repro --workers 2`, on two
  fresh identical registries; then both with nothing stale;
- remote: the demo zoo staged by `zoo repro --workers 2` with `--isolation remote` (local S3
  server) against `--isolation cache`: the per-card cost of clone, pull, push and run-cache;
- frameworks: the phases of one stage per PyTorch and TensorFlow demo model, and `zoo run`;
- catalog: `zoo catalog` from git alone at 200 cards and each size;
- pull: one model out of staged, pushed and tagged zoos of 200 and 2,000 cards (`--pull-cards`;
  tests/support/pull_zoo.py builds them), from fresh clones, each way a consumer can: `dvc pull` by
  path and by stage address, `zoo pull` (and with `--rev --out`), `dvc get`/`dvc import --rev` and
  `stages.api.download` from outside, against the floor: DVC's S3 filesystem alone reading the
  model's objects (target: `zoo pull` under 0.5 s beyond that, and within 1.2x across sizes).

    python -m tests.bench                      # 200 and 1,000 cards; bare DVC at 400 and 2,000 stages
    python -m tests.bench --quick              # 40 and 80 cards: checks that everything runs
    python -m tests.bench --cards 100 --only bare,registry
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tests.support import sandbox
from tests.support.mirror import fixtures
from tests.support.mirror.server import MirrorServer

WORK = Path(".bench").resolve()
SECTIONS = ("bare", "registry", "demo", "remote", "frameworks", "catalog", "pull")
CATALOG_TARGET_S = 2.0  # `zoo catalog` of 200 cards, from git only
STAGES_PER_FILE = 20  # bare DVC's sharded layout
TARGET_RATIO = 1.2  # the registry's no-op `dvc repro` against bare DVC's, same stage count


def options(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--cards", default="200,1000",
                        help="registry sizes, comma-separated (default 200,1000); bare DVC is measured at the "
                             "same stage counts (2 per card), in one dvc.yaml at the smallest only")
    parser.add_argument("--quick", action="store_true", help="40 and 80 cards: a quick check that the bench runs")
    parser.add_argument("--pull-cards", default="200,2000",
                        help="zoo sizes of the pull section, comma-separated (default 200,2000)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"sections, comma-separated: {','.join(SECTIONS)}")
    args = parser.parse_args(argv)
    args.cards = [40, 80] if args.quick else sorted(int(n) for n in args.cards.split(","))
    args.pull_cards = [40, 80] if args.quick else sorted(int(n) for n in args.pull_cards.split(","))
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.only) - set(SECTIONS)
    if unknown:
        parser.error(f"--only: unknown section(s) {', '.join(sorted(unknown))}; choose from {','.join(SECTIONS)}")
    return args


def timed(args, cwd, env, repeat=3) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        sandbox.run(args, cwd, env)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def once(args, cwd, env) -> tuple[float, str]:
    """Seconds of one run, and its stdout."""
    started = time.perf_counter()
    out = sandbox.run(args, cwd, env).stdout
    return time.perf_counter() - started, out


def save(results: dict) -> None:
    """Written after every section, so a run that fails late keeps what it measured."""
    (WORK / "results.json").write_text(json.dumps(results, indent=2))


def duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


# --- bare DVC ------------------------------------------------------------------------------------------------------

def bare_yaml(keys: list[str], wdir: str | None) -> str:
    """One foreach block over inline items: stage `s@<key>` writes out/<key>.txt (JSON is YAML)."""
    do = {"cmd": "echo ${item} > out/${key}.txt", "outs": ["out/${key}.txt"]}
    if wdir:
        do = {"wdir": wdir, **do}
    return json.dumps({"stages": {"s": {"foreach": {k: i for i, k in enumerate(keys)}, "do": do}}}, indent=1)


def shaped_yaml(keys: list[str], code: int) -> str:
    """The registry's stage shape with trivial commands: per key a `fetch` stage (a params dependency
    on its key, one output) and a `stage` stage depending on the fetch output, `code` code files and a
    params section, with a folder output and a `cache: false` file output, as the registry's are."""
    items = {k: i for i, k in enumerate(keys)}
    fetch = {"wdir": "../..", "cmd": "mkdir -p raw/${key} && echo ${item} > raw/${key}/f.txt",
             "params": [{"pins.json": ["${key}"]}], "outs": ["raw/${key}"]}
    stage = {"wdir": "../..", "cmd": "mkdir -p out/${key} && cp raw/${key}/f.txt out/${key}/m.txt && "
                                     "echo ${item} > out/${key}.json",
             "deps": ["raw/${key}", *[f"code/c{i:02d}.py" for i in range(code)]], "params": ["p"],
             "outs": ["out/${key}", {"out/${key}.json": {"cache": False}}]}
    return json.dumps({"stages": {"fetch": {"foreach": items, "do": fetch},
                                  "stage": {"foreach": items, "do": stage}}}, indent=1)


def code_deps_per_stage() -> int:
    """How many code and pins files the registry's ONNX-zoo stage depends on (its shard's deps list)."""
    from stages import index

    return len(index.stage_deps(Path(__file__).resolve().parents[1])["stage-onnx-zoo"]) - 2


def bare_dvc(env, stages: int, per_file: int | None = None, shaped: bool = False) -> dict:
    """Bare DVC with `stages` trivial stages: in one dvc.yaml (per_file None), or in files of
    `per_file` stages, shards/<NNNN>/dvc.yaml, each run from the repo root as the registry's shards are."""
    repo = WORK / f"bare-{stages}-{'one' if per_file is None else f'by{per_file}'}{'-shaped' if shaped else ''}"
    repo.mkdir(parents=True)
    sandbox.run(["git", "init", "-q"], repo, env)
    sandbox.run(["dvc", "init", "-q"], repo, env)
    (repo / "out").mkdir()
    keys = [f"s{i:04d}" for i in range(stages)]
    if shaped:  # two stages per key, 16 keys (32 stages) per file as the registry's shards
        code = code_deps_per_stage()
        (repo / "code").mkdir()
        (repo / "raw").mkdir()
        for i in range(code):
            (repo / "code" / f"c{i:02d}.py").write_text(f"X = {i}\n")
        (repo / "params.yaml").write_text("p: {a: 1}\n")
        keys = keys[: stages // 2]
        (repo / "pins.json").write_text(json.dumps({k: f"pins{i}" for i, k in enumerate(keys)}))
        chunks = [keys[i:i + 16] for i in range(0, len(keys), 16)]
        for n, chunk in enumerate(chunks):
            folder = repo / "shards" / f"{n:04d}"
            folder.mkdir(parents=True)
            (folder / "dvc.yaml").write_text(shaped_yaml(chunk, code))
        files = len(chunks)
        (repo / "dvc.yaml").write_text("stages: {}\n")
    elif per_file is None:
        (repo / "dvc.yaml").write_text(bare_yaml(keys, wdir=None))
        files = 1
    else:
        chunks = [keys[i:i + per_file] for i in range(0, stages, per_file)]
        for n, chunk in enumerate(chunks):
            folder = repo / "shards" / f"{n:04d}"
            folder.mkdir(parents=True)
            (folder / "dvc.yaml").write_text(bare_yaml(chunk, wdir="../.."))
        files = len(chunks)
        (repo / "dvc.yaml").write_text("stages: {}\n")  # `dvc repro` needs one here; with no stage in it, it runs them all
    first, _ = once(["dvc", "repro"], repo, env)
    return {"stages": stages, "files": files, "first_repro_s": first, "first_per_stage_s": first / stages,
            "noop_repro_s": timed(["dvc", "repro"], repo, env), "status_s": timed(["dvc", "status"], repo, env)}


def bare_section(env, stage_counts: list[int]) -> dict:
    """One dvc.yaml at the smallest stage count only (a first repro there is quadratic), sharded at each."""
    one = stage_counts[0]
    print(f"bench: bare DVC, {one} stages in one dvc.yaml ...", flush=True)
    out = {"one_file": {str(one): bare_dvc(env, one)}, "sharded": {}, "shaped": {}}
    for n in stage_counts:
        print(f"bench: bare DVC, {n} stages in files of {STAGES_PER_FILE} ...", flush=True)
        out["sharded"][str(n)] = bare_dvc(env, n, STAGES_PER_FILE)
        print(f"bench: bare DVC, {n} registry-shaped stages (deps, params, folder outputs) ...", flush=True)
        out["shaped"][str(n)] = bare_dvc(env, n, shaped=True)
    print_bare(out)
    return out


def print_bare(bare: dict) -> None:
    print()
    print(f"{'bare DVC, trivial stages':34}{'stages':>7}{'files':>6}{'first repro':>13}{'s/stage':>9}"
          f"{'no-op repro':>13}{'status':>8}")
    rows = [("one dvc.yaml", b) for b in bare["one_file"].values()]
    rows += [(f"sharded, {STAGES_PER_FILE} stages per file", b) for b in bare["sharded"].values()]
    rows += [("registry-shaped, sharded", b) for b in bare.get("shaped", {}).values()]
    for label, b in rows:
        print(f"{label:34}{b['stages']:7}{b['files']:6}{b['first_repro_s']:11.1f} s{b['first_per_stage_s']:9.3f}"
              f"{b['noop_repro_s']:11.2f} s{b['status_s']:6.2f} s")
    (one, measured), = bare["one_file"].items()
    for n in bare["sharded"]:
        if n != one:
            guess = measured["first_repro_s"] * (int(n) / int(one)) ** 2
            print(f"  one dvc.yaml with {n} stages: skipped; DVC rewrites the whole dvc.yaml/dvc.lock around every "
                  f"stage, so a first repro is quadratic in one file's stages: about {duration(guess)} "
                  f"({measured['first_repro_s']:.0f} s x ({n}/{one})^2)")
    print("  registry-shaped: the registry's stages with trivial commands: per card a fetch (params dependency) and a stage")
    print(f"  ({code_deps_per_stage()} code and pins files, the fetch folder and params as deps; a folder and a cache: false"
          " output), 16 cards per file")
    print("  (no-op repro and status: median of 3)")
    print(flush=True)


# --- the registry with generated ONNX-zoo cards --------------------------------------------------------------------

def card_name(i: int) -> str:
    return f"m{i:04d}"


def registry(env, mirror_root: Path, n: int) -> tuple[dict, Path]:
    """A fresh registry with `n` tiny ONNX-zoo cards: its first `dvc repro` (every stage records its
    in-process work with ZOO_TIMINGS), then no-op `dvc repro` and `dvc status`, and `zoo diff`."""
    cards = {}
    for i in range(n):
        url = f"https://example.org/bench/{card_name(i)}/model.onnx"
        sha = fixtures.publish(mirror_root, url, fixtures.tiny_model(i))
        cards[f"onnx/{card_name(i)}"] = fixtures.onnx_card(card_name(i), url, sha)
    repo = sandbox.new_registry(WORK / f"registry-{n}", cards, env)
    timings = WORK / f"registry-{n}-timings.jsonl"
    first, out = once(["dvc", "repro"], repo, dict(env, ZOO_TIMINGS=str(timings)))
    records = [json.loads(line) for line in timings.read_text().splitlines()]
    stages = out.count("Running stage")
    work = sum(r["work_s"] for r in records)
    result = {"cards": n, "stages": stages, "shard_files": len(list((repo / "registry/_pipeline").glob("*/dvc.yaml"))),
              "first_repro_s": first, "first_per_stage_s": first / stages,
              "stages_work_s": work, "stages_timed": len(records),
              "dvc_overhead_per_stage_s": (first - work) / stages,
              "heavy_modules": sorted({m for r in records for m in r["heavy_modules"]}),
              "noop_repro_s": timed(["dvc", "repro"], repo, env), "status_s": timed(["dvc", "status"], repo, env)}
    result["diff_s"] = diff_timing(repo, env)
    return result, repo


def diff_timing(repo: Path, env) -> float:
    """`zoo diff` between two commits of the staged registry (reads git only; target: well under 1 s)."""
    sandbox.run(["git", "add", "-A"], repo, env)
    sandbox.run(["git", "commit", "-q", "-m", "staged"], repo, env)
    manifest = repo / f"registry/onnx/{card_name(0)}.manifest.json"
    manifest.write_text(manifest.read_text().replace('"schema": 1', '"schema": 1, "note": "edited"'))
    sandbox.run(["git", "commit", "-q", "-am", "edit one manifest"], repo, env)
    return timed([sys.executable, "-m", "stages", "diff", "HEAD~1", "HEAD", "--json"], repo, env)


def per_stage_overhead(repo: Path, env, samples: int = 10) -> dict:
    """`zoo fetch` and `zoo stage` run directly on `samples` cards: wall time, the in-process work
    they record (ZOO_TIMINGS), and the difference (process start and imports)."""
    timings = WORK / "timings.jsonl"
    env = dict(env, ZOO_TIMINGS=str(timings))
    out = {"samples": samples}
    for command in ("fetch", "stage"):
        timings.unlink(missing_ok=True)
        walls = []
        for i in range(samples):
            started = time.perf_counter()
            sandbox.run(["zoo", command, f"registry/onnx/{card_name(i)}.yaml"], repo, env)
            walls.append(time.perf_counter() - started)
        works = [json.loads(line) for line in timings.read_text().splitlines()]
        out[command] = {"wall_s": statistics.median(walls),
                        "work_s": statistics.median(w["work_s"] for w in works),
                        "heavy_modules": sorted({m for w in works for m in w["heavy_modules"]})}
        out[command]["overhead_s"] = out[command]["wall_s"] - out[command]["work_s"]
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    out["python_start_s"] = time.perf_counter() - started
    return out


def registry_section(env, mirror_root: Path, sizes: list[int], bare: dict | None) -> dict:
    out = {"sizes": {}}
    repos = {}
    for n in sizes:
        print(f"bench: registry with {n} ONNX-zoo cards ({2 * n} stages) ...", flush=True)
        out["sizes"][str(n)], repos[n] = registry(env, mirror_root, n)
    print(f"bench: zoo fetch / zoo stage run directly on {min(10, sizes[-1])} cards ...", flush=True)
    out["overhead"] = per_stage_overhead(repos[sizes[-1]], env, samples=min(10, sizes[-1]))
    print_registry(out, bare)
    return out


def print_registry(reg: dict, bare: dict | None) -> None:
    sharded = (bare or {}).get("sharded", {})
    shaped = (bare or {}).get("shaped", {})
    print()
    print(f"{'registry, tiny ONNX cards':26}{'stages':>7}{'shards':>7}{'first repro':>13}{'s/stage':>9}"
          f"{'no-op repro':>13}{'status':>8}{'no-op/bare':>12}{'status/bare':>13}{'no-op/shaped':>14}")
    for n, r in reg["sizes"].items():
        b = sharded.get(str(r["stages"]), {})
        sh = shaped.get(str(r["stages"]), {})
        print(f"{n + ' cards':26}{r['stages']:7}{r['shard_files']:7}{r['first_repro_s']:11.1f} s"
              f"{r['first_per_stage_s']:9.3f}{r['noop_repro_s']:11.2f} s{r['status_s']:6.2f} s"
              f"{ratio(r['noop_repro_s'], b.get('noop_repro_s')):>12}{ratio(r['status_s'], b.get('status_s')):>13}"
              f"{ratio(r['noop_repro_s'], sh.get('noop_repro_s')):>14}")
    print(f"  bare = bare DVC with the same number of trivial stages, {STAGES_PER_FILE} per file "
          f"(the issue's yardstick, target: no-op repro <= {TARGET_RATIO}x); shaped = bare DVC with the registry's "
          "stage shape (above)\n  no-op repro and status: median of 3")
    o = reg["overhead"]
    start = statistics.mean(o[c]["overhead_s"] for c in ("fetch", "stage"))
    print()
    print(f"{'per-stage DVC overhead':26}{'first repro':>13}{'stages work':>13}{'per stage':>11}"
          f"{'start+imports':>15}{'DVC itself':>12}")
    for n, r in reg["sizes"].items():
        print(f"{n + ' cards':26}{r['first_repro_s']:11.1f} s{r['stages_work_s']:11.1f} s"
              f"{r['dvc_overhead_per_stage_s']:9.3f} s{start:13.3f} s{r['dvc_overhead_per_stage_s'] - start:10.3f} s")
    print("  per stage = (first repro - the stages' own work) / stages; the work is what every stage recorded with "
          "ZOO_TIMINGS\n  during that repro (in-process, after imports); start+imports: `zoo fetch`/`zoo stage` run "
          "directly (below), mean of the two")
    for n, r in reg["sizes"].items():
        print(f"  {n} cards: heavy modules imported by any stage: {r['heavy_modules'] or 'none'}; "
              f"zoo diff between two commits: {r['diff_s']:.2f} s (whole command, median of 3)")
    for command in ("fetch", "stage"):
        c = o[command]
        print(f"  zoo {command:6} run directly (median of {o['samples']} cards): wall {c['wall_s']:.3f} s = work {c['work_s']:.3f} s"
              f" + process start and imports {c['overhead_s']:.3f} s (bare python start {o['python_start_s']:.3f} s);"
              f" heavy modules imported: {c['heavy_modules'] or 'none'}")
    print(flush=True)


# --- the demo zoo: serial against parallel, cache against remote isolation -----------------------------------------

def restored(out: str) -> str:
    """`zoo repro`'s merge line: how many stages `dvc repro` restored from the run-cache."""
    return next((line.replace("zoo repro: ", "") for line in out.splitlines() if "restored" in line), "")


def demo_section(env, cards: dict[str, str]) -> dict:
    """Two fresh identical registries: one staged by `dvc repro`, the other by `zoo repro --workers 2`."""
    print(f"bench: demo zoo ({len(cards)} cards), serial dvc repro ...", flush=True)
    serial_repo = sandbox.new_registry(WORK / "demo-serial", cards, env)
    serial, out = once(["dvc", "repro"], serial_repo, env)
    stages = out.count("Running stage")
    print("bench: demo zoo, zoo repro --workers 2 ...", flush=True)
    parallel_repo = sandbox.new_registry(WORK / "demo-parallel", cards, env)
    parallel, out = once(["zoo", "repro", "--workers", "2"], parallel_repo, env)
    result = {"cards": len(cards), "stages": stages, "serial_dvc_repro_s": serial, "zoo_repro_workers2_s": parallel,
              "speedup": serial / parallel, "merge": restored(out),
              "noop_zoo_repro_workers2_s": timed(["zoo", "repro", "--workers", "2"], parallel_repo, env),
              "noop_dvc_repro_s": timed(["dvc", "repro"], parallel_repo, env)}
    print()
    print(f"demo zoo, first staging ({result['cards']} cards, {stages} stages)      seconds")
    print(f"  serial: dvc repro                              {serial:8.1f}")
    print(f"  parallel: zoo repro --workers 2                {parallel:8.1f}   serial / parallel {result['speedup']:.2f}x")
    print(f"    ({result['merge']})")
    print(f"  nothing stale: zoo repro --workers 2           {result['noop_zoo_repro_workers2_s']:8.2f}   "
          f"against no-op dvc repro {result['noop_dvc_repro_s']:.2f} s "
          f"({ratio(result['noop_zoo_repro_workers2_s'], result['noop_dvc_repro_s'])}; median of 3 each)")
    print(flush=True)
    return result


def remote_section(env, cards: dict[str, str]) -> dict:
    """The demo zoo staged by `zoo repro --workers 2` with each isolation, each registry with a local S3
    remote of its own (a bucket per server: moto's servers in one process share their buckets)."""
    result = {"cards": len(cards)}
    for isolation in ("cache", "remote"):
        print(f"bench: demo zoo, zoo repro --workers 2 --isolation {isolation} (local S3 remote) ...", flush=True)
        with sandbox.S3Server(f"bench-{isolation}") as s3:
            repo = sandbox.new_registry(WORK / f"isolation-{isolation}", cards, env, s3)
            seconds, out = once(["zoo", "repro", "--workers", "2", "--isolation", isolation], repo, env)
            result[isolation] = {"seconds": seconds, "merge": restored(out), "s3_objects": len(s3.keys())}
    result["per_card_overhead_s"] = (result["remote"]["seconds"] - result["cache"]["seconds"]) / len(cards)
    print()
    print(f"demo zoo, zoo repro --workers 2 ({len(cards)} cards)   seconds   S3 objects after")
    for isolation in ("cache", "remote"):
        r = result[isolation]
        print(f"  --isolation {isolation:8}                   {r['seconds']:8.1f}   {r['s3_objects']:8}   ({r['merge']})")
    print(f"  remote isolation's overhead per card (clone, pull, push, run-cache): "
          f"{result['per_card_overhead_s']:.2f} s = (remote - cache) / {len(cards)} cards")
    print(flush=True)
    return result


# --- PyTorch and TensorFlow demo models: one stage each ---------------------------------------------------------

TORCH_DEMO = ("tv-squeezenet", "timm-test-effnet", "tiny-bert")


def torch_stage_timings(env, mirror_root: Path) -> dict:
    """Export + validation time per demo PyTorch model, and the share of the stage spent elsewhere."""
    from tests.support.mirror.torch_fixtures import build_torch_mirror

    cards = build_torch_mirror(mirror_root)
    repo = sandbox.new_registry(WORK / "torch", {f"onnx/{n}": cards[n].card for n in TORCH_DEMO}, env)
    timings = WORK / "torch-timings.jsonl"
    out = {}
    for name in TORCH_DEMO:
        sandbox.run([sys.executable, "-m", "stages", "fetch", f"registry/onnx/{name}.yaml"], repo, env)
        started = time.perf_counter()
        sandbox.run([sys.executable, "-m", "stages", "stage", f"registry/onnx/{name}.yaml"], repo,
                    dict(env, ZOO_TIMINGS=str(timings)))
        wall = time.perf_counter() - started
        record = json.loads(timings.read_text().splitlines()[-1])
        phases = record["phases"]
        out[name] = {"wall_s": wall, **phases,
                     "outside_export_validate": 1 - (phases["export"] + phases["validate"]) / wall}
    out["zoo run"] = zoo_run_timings(repo, env)
    return out


def zoo_run_timings(repo: Path, env) -> dict:
    """`zoo run` on the staged classifier (a generated picture) and encoder (a text): median wall of 3,
    and which heavy frameworks the command imported (none expected: Pillow, tokenizers, onnxruntime)."""
    from tests.support.demo import picture

    image = picture(WORK / "picture.png", (320, 240))
    timings = WORK / "run-timings.jsonl"
    out = {}
    for name, value in (("tv-squeezenet", str(image)), ("tiny-bert", "a short sentence for the encoder")):
        args = [sys.executable, "-m", "stages", "run", f"registry/onnx/{name}", value]
        out[name] = {"wall_s": timed(args, repo, dict(env, ZOO_TIMINGS=str(timings))),
                     "heavy_modules": json.loads(timings.read_text().splitlines()[-1])["heavy_modules"]}
    return out


TF_DEMO = {"tfhub-tiny-classifier": "tensorflow", "keras-mobilenet-v2": "keras"}


def tf_stage_timings(env, mirror_root: Path) -> dict:
    """Freeze (+ Keras files) and validation time per demo TensorFlow model, then its tf2onnx target."""
    from tests.support.mirror.tf_fixtures import build_tf_mirror

    cards = build_tf_mirror(mirror_root)
    repo = sandbox.new_registry(WORK / "tf", {f"{fmt}/{n}": cards[n].card for n, fmt in TF_DEMO.items()}, env)
    timings = WORK / "tf-timings.jsonl"
    out = {}
    for name, fmt in TF_DEMO.items():
        card = f"registry/{fmt}/{name}.yaml"
        sandbox.run([sys.executable, "-m", "stages", "fetch", card], repo, env)
        for target, label in ((None, name), ("onnx", f"{name} -> onnx")):
            args = [sys.executable, "-m", "stages", "stage", card] + (["--target", target] if target else [])
            started = time.perf_counter()
            sandbox.run(args, repo, dict(env, ZOO_TIMINGS=str(timings)))
            wall = time.perf_counter() - started
            out[label] = {"wall_s": wall, **json.loads(timings.read_text().splitlines()[-1])["phases"]}
    return out


def frameworks_section(env, mirror_root: Path) -> dict:
    print("bench: PyTorch demo models ...", flush=True)
    torch_times = torch_stage_timings(env, mirror_root)
    print("bench: TensorFlow demo models ...", flush=True)
    tf_times = tf_stage_timings(env, mirror_root)
    print()
    print(f"{'PyTorch demo model':20}{'stage wall':>11}{'build':>8}{'export':>8}{'validate':>9}{'outside export+validate':>25}")
    runs = torch_times.pop("zoo run")
    for name, t in torch_times.items():
        print(f"{name:20}{t['wall_s']:10.2f}s{t['build']:7.2f}s{t['export']:7.2f}s{t['validate']:8.2f}s"
              f"{100 * t['outside_export_validate']:24.0f}%")
    for name, r in runs.items():
        print(f"zoo run registry/onnx/{name}: {r['wall_s']:.2f} s (whole command, median of 3); "
              f"heavy modules imported: {r['heavy_modules'] or 'none'}")
    torch_times["zoo run"] = runs
    print()
    print(f"{'TensorFlow demo model':34}{'stage wall':>11}{'build':>8}{'freeze':>8}{'keras':>8}{'tf2onnx':>9}{'validate':>9}")
    for name, t in tf_times.items():
        cells = "".join(f"{t[k]:7.2f}s" if k in t else f"{'-':>8}" for k in ("build", "freeze", "keras"))
        tf2onnx = f"{t['tf2onnx']:8.2f}s" if "tf2onnx" in t else f"{'-':>9}"
        print(f"{name:34}{t['wall_s']:10.2f}s{cells}{tf2onnx}{t['validate']:8.2f}s")
    print(flush=True)
    return {"torch": torch_times, "tf": tf_times}


def catalog_section(sizes: list[int]) -> dict:
    """`zoo catalog` from git alone: registries of generated manifests with two releases, at the latest
    (best of 3 builds each; the repository is made once, untimed)."""
    from tests.support.catalog_zoo import bench_catalog

    out = {}
    for n in sorted({200, *sizes}):
        out[str(n)] = min(bench_catalog(n) for _ in range(3))
        verdict = "" if n != 200 else (" (target < 2 s: " + ("met" if out[str(n)] < CATALOG_TARGET_S else "MISSED") + ")")
        print(f"bench: zoo catalog, {n} cards: {out[str(n)]:.2f} s{verdict}", flush=True)
    return out


# --- one model out of a large zoo --------------------------------------------------------------------------------

PULL_MODEL = "m0007"  # in every size's zoo
PULL_TARGET_S = 0.5   # `zoo pull` of one tiny model, from a fresh clone
PULL_TARGET_RATIO = 1.2  # the largest zoo against the smallest


def pull_section(env, mirror_root: Path, sizes: list[int], results: dict) -> dict:
    """One model out of staged, pushed and tagged zoos of each size (tests/support/pull_zoo.py), from
    fresh clones (the clone untimed), pulled from the local S3 server each way a consumer can: the
    median of `PULL_REPEAT` fresh clones per way."""
    from tests.support import pull_zoo

    out: dict = {"model": PULL_MODEL, "sizes": {}}
    results["pull"] = out
    for n in sizes:
        print(f"bench: pull: building a staged zoo of {n} cards (pushed, tagged) ...", flush=True)
        with sandbox.S3Server(f"pull-{n}") as s3:
            bare, steps = pull_zoo.build(WORK / f"pull-{n}", n, mirror_root, env, s3)
            out["sizes"][str(n)] = {"build_s": steps, "ways": consumer_pulls(WORK / f"pull-{n}", bare, s3, env)}
        save(results)
    print_pull(out, sizes)
    return out


PULL_REPEAT = 3


def consumer_pulls(work: Path, bare: Path, s3, env) -> dict:
    """{way: {"s": median seconds, "runs": [...]}} for one model, each run from a fresh clone; "transfer only"
    is the floor: DVC's S3 filesystem alone reading the model's objects."""
    import json as json_

    config = ["--remote-config", f"endpointurl={s3.endpoint}", f"url=s3://{s3.bucket}/dvc"]
    api_config = {"endpointurl": s3.endpoint, "url": f"s3://{s3.bucket}/dvc"}
    model = PULL_MODEL
    keys = model_objects(work / "registry", model)
    ways = {
        "transfer only": lambda c: [sys.executable, "-c", TRANSFER, s3.endpoint, f"{s3.bucket}/dvc", str(c / "t"), *keys],
        "dvc pull <path>": lambda c: ["dvc", "pull", "-q", f"registry/onnx/{model}"],
        "dvc pull <stage address>": lambda c: ["dvc", "pull", "-q", address(c, model)],
        "zoo pull <name>": lambda c: [sys.executable, "-m", "stages", "pull", model],
        "zoo pull <name> --rev --out": lambda c: [sys.executable, "-m", "stages", "pull", model, "--rev", "zoo-v1.0.0",
                                                  "--out", str(c / "v1")],
        "dvc get --rev": lambda c: ["dvc", "get", str(bare), f"registry/onnx/{model}", "--rev", "zoo-v1.0.0",
                                    "-o", str(c / "got"), *config],
        "dvc import --rev": lambda c: ["dvc", "import", str(bare), f"registry/onnx/{model}", "--rev", "zoo-v1.0.0",
                                       "-o", "imported", *config],
        "stages.api.download": lambda c: [sys.executable, "-c",
                                          "import json, sys; from stages.api import download; "
                                          f"download({model!r}, sys.argv[1], repo={str(bare)!r}, release='zoo-v1.0.0', "
                                          f"remote_config={json_.dumps(api_config)})", str(c / "api")],
    }
    out = {}
    for way, command in ways.items():
        runs = []
        for i in range(PULL_REPEAT):
            clone = work / f"consumer-{len(out)}-{i}"
            if way.startswith("dvc import"):  # the consumer's own repository
                clone.mkdir()
                sandbox.run(["git", "init", "-q"], clone, env)
                sandbox.run(["dvc", "init", "-q"], clone, env)
            else:
                sandbox.run(["git", "clone", "-q", str(bare), str(clone)], work, env)
                sandbox.run(["dvc", "remote", "modify", "--local", "zoo", "endpointurl", s3.endpoint], clone, env)
                sandbox.run(["dvc", "remote", "modify", "--local", "zoo", "url", f"s3://{s3.bucket}/dvc"], clone, env)
            args = command(clone)
            started = time.perf_counter()
            sandbox.run(args, clone, env)
            runs.append(time.perf_counter() - started)
        out[way] = {"s": statistics.median(runs), "runs": runs}
        print(f"    {way:28} {out[way]['s']:7.2f} s", flush=True)
    return out


# The floor under any pull of these objects: DVC's S3 filesystem (dvc-s3) imported, connected, and the
# model's `.dir` listing and files read, nothing else (no config, no git, no hashing).
TRANSFER = """
import sys
from pathlib import Path
from dvc_s3 import S3FileSystem
endpoint, prefix, dest, keys = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4:]
dest.mkdir()
fs = S3FileSystem(endpointurl=endpoint)
for key in keys:
    fs.get_file(f"{prefix}/files/md5/{key[:2]}/{key[2:]}", str(dest / key))
"""


def model_objects(repo: Path, model: str) -> list[str]:
    """The md5s of one staged model's `.dir` listing and files, as the registry's lock and cache record them."""
    import yaml

    entry = json.loads((repo / "registry" / "index.json").read_text())["cards"][model]
    lock = yaml.safe_load((repo / entry["dvcfile"]).with_name("dvc.lock").read_text())
    out = next(o for o in lock["stages"][f"stage-onnx-zoo@{model}"]["outs"] if o["path"] == f"registry/onnx/{model}")
    listing = json.loads((repo / ".dvc/cache/files/md5" / out["md5"][:2] / out["md5"][2:]).read_text())
    return [out["md5"], *sorted({e["md5"] for e in listing})]


def address(clone: Path, model: str) -> str:
    entry = json.loads((clone / "registry" / "index.json").read_text())["cards"][model]
    return f"{entry['dvcfile']}:stage-onnx-zoo@{model}"


def print_pull(out: dict, sizes: list[int]) -> None:
    small, large = str(sizes[0]), str(sizes[-1])
    print()
    print(f"one model ({out['model']}, a few hundred bytes) from a fresh clone, median of {PULL_REPEAT}"
          f"{'':6}" + "".join(f"{n + ' cards':>12}" for n in map(str, sizes)) + f"{'ratio':>9}")
    for way in out["sizes"][small]["ways"]:
        times = [out["sizes"][str(n)]["ways"][way]["s"] for n in sizes]
        print(f"  {way:64}" + "".join(f"{t:11.2f}s" for t in times) + f"{ratio(times[-1], times[0]):>9}")
    ways = out["sizes"][large]["ways"]
    zoo, transfer = ways.get("zoo pull <name>", {}).get("s"), ways.get("transfer only", {}).get("s")
    if zoo is not None and transfer is not None:
        r = zoo / out["sizes"][small]["ways"]["zoo pull <name>"]["s"]
        beyond = zoo - transfer
        met = beyond < PULL_TARGET_S and r <= PULL_TARGET_RATIO
        print(f"  zoo pull at {large} cards: {zoo:.2f} s = transfer {transfer:.2f} s + {beyond:.2f} s, {r:.2f}x "
              f"{small} cards (target: < {PULL_TARGET_S} s beyond the transfer and <= {PULL_TARGET_RATIO}x: "
              f"{'met' if met else 'MISSED'})")
    print(flush=True)


def main(argv: list[str] | None = None) -> int:
    args = options(sys.argv[1:] if argv is None else argv)
    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir()
    started = time.perf_counter()
    results: dict = {"cards": args.cards, "sections": args.only}
    mirror_root = WORK / "mirror"
    with MirrorServer(mirror_root) as mirror:
        env = sandbox.env(mirror.url)
        if "bare" in args.only:
            results["bare"] = bare_section(env, [2 * n for n in args.cards])
            save(results)
        if "registry" in args.only:
            results["registry"] = registry_section(env, mirror_root, args.cards, results.get("bare"))
            save(results)
        if "demo" in args.only or "remote" in args.only:
            from tests.support.demo import demo_cards

            print("bench: building the demo zoo's mirror ...", flush=True)
            cards = demo_cards(mirror_root)
            if "demo" in args.only:
                results["demo"] = demo_section(env, cards)
                save(results)
            if "remote" in args.only:
                results["remote"] = remote_section(env, cards)
                save(results)
        if "frameworks" in args.only:
            results["frameworks"] = frameworks_section(env, mirror_root)
        if "catalog" in args.only:
            results["catalog"] = catalog_section(args.cards)
            save(results)
        if "pull" in args.only:
            results["pull"] = pull_section(env, mirror_root, args.pull_cards, results)
    results["total_s"] = time.perf_counter() - started
    save(results)
    print(f"bench: done in {results['total_s'] / 60:.1f} min; results in {WORK / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
