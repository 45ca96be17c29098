"""`make bench`: pipeline overhead for 200 generated ONNX-zoo cards, against bare DVC.

Prints (never asserts; targets are read by people):
- bare DVC, 200 trivial foreach stages: no-op `dvc repro` and `dvc status` (median of 3);
- the registry with 200 cards (400 stages: fetch + stage): the same two timings, and the ratio;
- per-stage overhead of `zoo fetch` and `zoo stage` beyond the work itself (process start and
  imports): wall time of the subprocess minus the in-process work time it records (ZOO_TIMINGS);
- whether any stage imported torch / tensorflow / transformers / keras (it must not).
"""

from __future__ import annotations

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

N = int(sys.argv[1]) if len(sys.argv) > 1 else 200
WORK = Path(".bench").resolve()


def timed(args, cwd, env, repeat=3) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        sandbox.run(args, cwd, env)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def tiny_model(i: int) -> bytes:
    """A distinct small ONNX model per card (Gemm with seeded weights, symbolic batch)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(i)
    w = numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal((4,)).astype(np.float32), "B")
    graph = helper.make_graph([helper.make_node("Gemm", ["x", "W", "B"], ["y"])], f"tiny{i}",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="bench")
    model.ir_version = 8
    return model.SerializeToString()


def bare_dvc(env, n: int) -> dict:
    repo = WORK / f"bare{n}"
    repo.mkdir(parents=True)
    sandbox.run(["git", "init", "-q"], repo, env)
    sandbox.run(["dvc", "init", "-q"], repo, env)
    (repo / "items.json").write_text(json.dumps({"items": {f"m{i:04d}": {"n": i} for i in range(n)}}))
    (repo / "dvc.yaml").write_text("vars:\n  - items.json\nstages:\n  s:\n    foreach: ${items}\n    do:\n"
                                   "      cmd: echo ${item.n} > out/${key}.txt\n      outs:\n        - out/${key}.txt\n")
    (repo / "out").mkdir()
    started = time.perf_counter()
    sandbox.run(["dvc", "repro"], repo, env)
    first = time.perf_counter() - started
    return {"first_repro_s": first, "noop_repro_s": timed(["dvc", "repro"], repo, env),
            "status_s": timed(["dvc", "status"], repo, env)}


def registry(env, mirror_root) -> tuple[dict, Path]:
    cards = {}
    for i in range(N):
        url = f"https://example.org/bench/m{i:03d}/model.onnx"
        sha = fixtures.publish(mirror_root, url, tiny_model(i))
        cards[f"onnx/m{i:03d}"] = fixtures.onnx_card(f"m{i:03d}", url, sha)
    repo = sandbox.new_registry(WORK / "registry", cards, env)
    started = time.perf_counter()
    sandbox.run(["dvc", "repro"], repo, env)
    first = time.perf_counter() - started
    result = {"first_repro_s": first, "noop_repro_s": timed(["dvc", "repro"], repo, env),
              "status_s": timed(["dvc", "status"], repo, env)}
    result["diff_s"] = diff_timing(repo, env)
    return result, repo


def diff_timing(repo: Path, env) -> float:
    """`zoo diff` between two commits of the staged registry (reads git only; target: well under 1 s)."""
    sandbox.run(["git", "add", "-A"], repo, env)
    sandbox.run(["git", "commit", "-q", "-m", "staged"], repo, env)
    manifest = repo / "registry/onnx/m000.manifest.json"
    manifest.write_text(manifest.read_text().replace('"schema": 1', '"schema": 1, "note": "edited"'))
    sandbox.run(["git", "commit", "-q", "-am", "edit one manifest"], repo, env)
    return timed([sys.executable, "-m", "stages", "diff", "HEAD~1", "HEAD", "--json"], repo, env)


def per_stage_overhead(repo: Path, env, samples: int = 10) -> dict:
    timings = WORK / "timings.jsonl"
    env = dict(env, ZOO_TIMINGS=str(timings))
    out = {}
    for command in ("fetch", "stage"):
        timings.unlink(missing_ok=True)
        walls = []
        for i in range(samples):
            started = time.perf_counter()
            sandbox.run(["zoo", command, f"registry/onnx/m{i:03d}.yaml"], repo, env)
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


def main() -> int:
    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir()
    with MirrorServer(WORK / "mirror") as mirror:
        env = sandbox.env(mirror.url)
        print(f"bench: {N} cards; bare DVC baseline first ...", flush=True)
        bare = bare_dvc(env, N)
        print(f"bench: bare DVC with {2 * N} stages (the registry's stage count) ...", flush=True)
        bare2 = bare_dvc(env, 2 * N)
        print(f"bench: registry with {N} ONNX-zoo cards ({2 * N} stages) ...", flush=True)
        ours, repo = registry(env, WORK / "mirror")
        overhead = per_stage_overhead(repo, env)
        print("bench: PyTorch demo models ...", flush=True)
        torch_times = torch_stage_timings(env, WORK / "mirror")
        print("bench: TensorFlow demo models ...", flush=True)
        tf_times = tf_stage_timings(env, WORK / "mirror")
    print()
    head = f"bare {N}"
    head2 = f"bare {2 * N}"
    print(f"{'':24}{head:>10}{head2:>10}{'registry':>10}{'ratio':>7}{'ratio':>7}")
    print(f"{'':24}{'stages':>10}{'stages':>10}{2 * N:>6} stg{'/bare':>7}{'/bare2':>7}")
    for key, label in (("noop_repro_s", "no-op dvc repro (s)"), ("status_s", "dvc status (s)"),
                       ("first_repro_s", "first dvc repro (s)")):
        print(f"{label:24}{bare[key]:10.2f}{bare2[key]:10.2f}{ours[key]:10.2f}"
              f"{ours[key] / bare[key]:7.2f}{ours[key] / bare2[key]:7.2f}")
    print(f"  registry: {N} cards = {2 * N} stages (a fetch and a stage per card)")
    print(f"zoo diff between two commits of {N} staged models: {ours['diff_s']:.2f} s (whole command, median of 3)")
    print()
    for command in ("fetch", "stage"):
        o = overhead[command]
        print(f"zoo {command:6} wall {o['wall_s']:.3f} s = work {o['work_s']:.3f} s + overhead {o['overhead_s']:.3f} s"
              f" (process start + imports; bare python start {overhead['python_start_s']:.3f} s);"
              f" heavy modules imported: {o['heavy_modules'] or 'none'}")
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
    (WORK / "results.json").write_text(json.dumps({"n": N, "bare": bare, "bare_2n": bare2, "registry": ours,
                                                   "overhead": overhead, "torch": torch_times, "tf": tf_times},
                                                  indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
