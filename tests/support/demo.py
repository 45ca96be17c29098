"""`make demo`: the registry's main job, end to end, offline, on embedded defaults.

Starts the offline hub mirror and a local S3-compatible server on 127.0.0.1, builds a registry
repository with the demo zoo's cards, stages it with `zoo repro --workers 2` (parallel, merged
through DVC's run-cache), pushes it to the S3 remote,
releases it as zoo-v1.0.0, clones the registry afresh, `dvc pull`s one model there and runs it
with ONNX Runtime, prints a summary table, then makes a second release and shows the diff
between the two. Nothing reaches the internet.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from tests.support import sandbox
from tests.support.mirror.fixtures import build_mirror
from tests.support.mirror.torch_fixtures import build_torch_mirror
from tests.support.mirror.server import MirrorServer

WORK = Path(".zoo-demo")
PULL = "mnist"
ONNX_DEMO = ("mnist", "squeezenet")  # from GitHub (LFS, with the zoo's test data) and from the HF mirror
TORCH_DEMO = ("tv-squeezenet", "timm-test-effnet", "tiny-bert")  # a torchvision, a timm, a Hugging Face model
TF_DEMO = ("tfhub-tiny-classifier", "keras-mobilenet-v2")  # a TF Hub SavedModel, a Keras application (+ ONNX)


def demo_cards(mirror_root: Path, onnx_fixtures=None) -> dict[str, str]:
    """The demo zoo's cards ("<format>/<name>" -> YAML), their upstream files laid out under `mirror_root`."""
    from tests.support.mirror.tf_fixtures import build_tf_mirror

    onnx = {f.name: f for f in (onnx_fixtures or build_mirror(mirror_root))}
    cards = {f"onnx/{name}": onnx[name].card for name in ONNX_DEMO}
    torch_cards = build_torch_mirror(mirror_root)
    cards.update({f"onnx/{name}": torch_cards[name].card for name in TORCH_DEMO})
    tf_cards = build_tf_mirror(mirror_root)
    cards.update({f"{'keras' if 'keras' in name else 'tensorflow'}/{name}": tf_cards[name].card for name in TF_DEMO})
    return cards


def picture(path: Path, size: tuple[int, int] = (300, 240), seed: int = 0) -> Path:
    """A generated RGB picture (gradients, a disc, noise), `size` = (width, height), as PNG."""
    import numpy as np
    from PIL import Image

    w, h = size
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    rng = np.random.default_rng(seed)
    cx, cy = rng.uniform(0.3, 0.7, 2)
    disc = ((xx - cx) ** 2 + (yy - cy) ** 2 < rng.uniform(0.02, 0.08)).astype(float)
    rgb = np.stack([xx * rng.uniform(0.2, 1), yy * disc + 0.3 * rng.uniform(), 1 - xx * yy], -1)
    rgb = rgb + rng.normal(0, 0.05, (h, w, 3))
    Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8)).save(path)
    return path


def digit_image(path: Path) -> Path:
    """A white "7" on black, 56x56 (MNIST's polarity; zoo run resizes it to the model's 28x28)."""
    from PIL import Image, ImageDraw

    img = Image.new("L", (56, 56), 0)
    draw = ImageDraw.Draw(img)
    draw.line([(12, 12), (44, 12), (24, 46)], fill=255, width=6)
    img.save(path)
    return path


def step(message: str) -> float:
    print(f"==> {message}", flush=True)
    return time.perf_counter()


def done(started: float, detail: str = "") -> None:
    print(f"    ok ({time.perf_counter() - started:.1f} s){' ' + detail if detail else ''}", flush=True)


def summary(repo: Path) -> str:
    rows = [("model", "kind", "files", "bytes", "opset", "inputs", "reference", "max abs err", "ok")]
    for path in sorted((repo / "registry").glob("*/*.manifest.json")):
        m = json.loads(path.read_text())
        first = m["model"]["inputs"][0]
        more = len(m["model"]["inputs"]) - 1
        inputs = f"{first['name']} {first['dtype']}[{','.join(map(str, first['shape']))}]" + (f" +{more}" if more else "")
        opset = m["model"].get("opset")
        rows.append((f"{m['format']}/{m['name']}", m["source"]["kind"], str(len(m["files"])),
                     str(sum(f["size"] for f in m["files"].values())),
                     ",".join(f"{d}:{v}" for d, v in opset.items()) if opset else f"tf {m['model']['tensorflow']}", inputs,
                     m["validation"]["reference"].split(" ")[0], "-" if m["validation"]["max_abs_error"] is None else f"{m['validation']['max_abs_error']:.3g}",
                     "yes" if m["validation"]["passed"] else "NO"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def run_pulled(clone: Path) -> str:
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    folder = clone / "registry" / "onnx" / PULL
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    x = numpy_helper.to_array(onnx.load_tensor(str(folder / "test_data_set_0" / "input_0.pb")))
    expected = numpy_helper.to_array(onnx.load_tensor(str(folder / "test_data_set_0" / "output_0.pb")))
    (y,) = sess.run(None, {sess.get_inputs()[0].name: x})
    return (f"{PULL}: ONNX Runtime output {list(y.shape)}, argmax {int(y.argmax())}, "
            f"max abs diff vs reference {float(np.abs(y - expected).max()):.2e}")


def main() -> int:
    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir()
    t = step("building the offline hub mirror (GitHub raw + LFS media, PyTorch downloads, Hugging Face, "
             "TF Hub, Keras applications)")
    fixtures = demo_cards(WORK / "mirror")
    done(t, f"{len(fixtures)} models")
    with MirrorServer(WORK / "mirror") as mirror, sandbox.S3Server() as s3:
        env = sandbox.env(mirror.url)
        print(f"    mirror {mirror.url}  (ZOO_MIRROR)   S3 remote {s3.endpoint}  (bucket {s3.bucket})")
        t = step("creating the registry repository with the demo cards")
        repo = sandbox.new_registry((WORK / "registry").resolve(), fixtures, env, s3)
        sandbox.run(["zoo", "check"], repo, env)
        done(t, str(repo))
        t = step("zoo repro --workers 2: fetch (verified) and stage (checked, run, compared) every card, one card per "
                 "Dask worker, merged back through DVC's run-cache (`dvc repro` does the same on one core)")
        out = sandbox.run(["zoo", "repro", "--workers", "2"], repo, env).stdout
        merged = next((line for line in out.splitlines() if "restored" in line), "")
        done(t, merged.replace("zoo repro: ", ""))
        t = step("dvc repro again: nothing to do")
        out = sandbox.run(["dvc", "repro"], repo, env).stdout
        done(t, "up to date" if "Running stage" not in out else "RAN STAGES")
        t = step("commit, dvc push to the S3 remote, zoo release 1.0.0")
        sandbox.run(["git", "add", "-A"], repo, env)
        sandbox.run(["git", "commit", "-q", "-m", "stage the demo zoo"], repo, env)
        sandbox.run(["dvc", "push"], repo, env)
        sandbox.run(["zoo", "release", "1.0.0"], repo, env)
        done(t, f"{len(s3.keys())} objects in s3://{s3.bucket}; tagged zoo-v1.0.0")
        t = step("zoo audit --remote: every object of zoo-v1.0.0 streamed back from the remote and hashed "
                 "(md5 and the manifests' sha256)")
        done(t, sandbox.run(["zoo", "audit", "--remote"], repo, env).stdout.strip().splitlines()[-1])
        t = step(f"fresh clone; dvc pull registry/onnx/{PULL} (that model only)")
        clone = (WORK / "clone").resolve()
        sandbox.run(["git", "clone", "-q", str(repo), str(clone)], WORK, env)
        sandbox.configure_remote(clone, s3, env)
        sandbox.run(["dvc", "pull", f"registry/onnx/{PULL}"], clone, env)
        present = sorted(p.name for p in (clone / "registry" / "onnx").iterdir() if p.is_dir())
        raw = [p for p in (clone / "registry" / "_raw").rglob("*") if p.is_file() and p.name != ".gitignore"]
        done(t, f"staged folders in the clone: {present}; raw files pulled: {len(raw)}")
        t = step("run the pulled model with ONNX Runtime")
        done(t, run_pulled(clone))
        t = step(f"zoo verify registry/onnx/{PULL}: the pulled model on its golden data")
        done(t, sandbox.run(["zoo", "verify", f"registry/onnx/{PULL}"], clone, env).stdout.strip())
        print()
        print(summary(repo))
        print()
        t = step("next release: remove squeezenet, change the onnx section of params.yaml, restage, zoo release 1.1.0")
        sandbox.run(["zoo", "remove", "squeezenet"], repo, env)
        params = repo / "params.yaml"
        params.write_text(params.read_text().replace("dim_default: 1", "dim_default: 2"))
        ran = sandbox.run(["dvc", "repro"], repo, env).stdout.count("Running stage")
        sandbox.run(["git", "add", "-A"], repo, env)
        sandbox.run(["git", "commit", "-q", "-m", "remove squeezenet; onnx dim_default 2"], repo, env)
        sandbox.run(["dvc", "push"], repo, env)
        sandbox.run(["zoo", "release", "1.1.0"], repo, env)
        done(t, f"{ran} stages rerun; tagged zoo-v1.1.0")
        print("==> zoo diff zoo-v1.0.0 zoo-v1.1.0")
        print(sandbox.run(["zoo", "diff", "zoo-v1.0.0", "zoo-v1.1.0"], repo, env).stdout, end="")
        t = step("in the fresh clone: zoo pull tv-squeezenet too (resolved from registry/index.json to its one "
                 "shard's lock; every byte checked against the manifest), and squeezenet as released in zoo-v1.0.0 "
                 "(--rev, into a folder of its own); then zoo run on generated images "
                 "(the manifests' preprocessing, ONNX Runtime, labels.txt; the demo weights are seeded, not "
                 "trained, so the classes are arbitrary)")
        pulled = sandbox.run(["zoo", "pull", "tv-squeezenet"], clone, env).stdout.strip()
        pinned = sandbox.run(["zoo", "pull", "squeezenet", "--rev", "zoo-v1.0.0", "--out", "release-1.0.0"],
                             clone, env).stdout.strip()
        digit = digit_image((WORK / "seven.png").resolve())
        photo = picture((WORK / "picture.png").resolve(), (320, 240))
        runs = [sandbox.run(["zoo", "run", f"registry/onnx/{PULL}", str(digit), "--top-k", "3"], clone, env).stdout,
                sandbox.run(["zoo", "run", "registry/onnx/tv-squeezenet", str(photo), "--top-k", "3"], clone, env).stdout]
        done(t, f"{pulled}\n    {pinned}")
        print("".join(runs), end="")
        t = step("zoo catalog: the zoo as a static website, from git alone (index, a page per model, releases "
                 "with charts)")
        out = sandbox.run(["zoo", "catalog"], repo, env).stdout.strip()
        done(t)
        print(f"open {out.removeprefix('zoo catalog: ')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
