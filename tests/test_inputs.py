"""Validation inputs: the card's `inputs:`, the one generator (stages.inputs), and ONNX graphs whose
symbolic dims or non-tensor-like inputs the generator cannot guess.

Found on real published graphs (an OCR recognizer `x: [N, 3, ?, W]`, a voice-activity detector with
an `sr` scalar that must be 8000 or 16000, detectors `images: [batch, 3, height, width]`): each died
with a traceback from onnx's reference evaluator, or "passed" on a 1x1 image. Here the same shapes
of problem are rebuilt as small graphs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from stages.card import parse_card
from stages.errors import CardError, StagingError
from stages.inputs import Declared, Inputs, TensorSpec
from stages.pipeline import fetch_card, stage_card
from tests.support.mirror import fixtures
from tests.conftest import leftovers, make_root

SETTINGS = {"seed": 0, "batch_sizes": [1, 2], "dim_default": 1, "int_range": [0, 100], "sequence_lengths": [8, 16]}
CARD = """name: m
format: onnx
description: d
license: mit
tags: [test]
preprocessing: {type: tensor, note: raw}
source:
  kind: onnx-zoo
  url: https://example.org/m.onnx
  sha256: """ + "a" * 64 + "\n"


def parse(extra: str):
    import yaml

    return parse_card(Path("registry/onnx/m.yaml"), yaml.safe_load(CARD + extra))


# ----------------------------------------------------------------------------- the card section

def test_inputs_parse_in_the_documented_syntax():
    card = parse("inputs:\n  x: {shape: [batch, 3, 48, 320]}\n  sr: {value: 16000}\n"
                 "  state: {shape: [2, batch, 128], value: 0.0}\n  ids: {shape: [batch, 16], range: [0, 30522]}\n")
    by_name = {d.name: d for d in card.inputs}
    assert by_name["x"] == Declared("x", ("batch", 3, 48, 320))
    assert by_name["sr"].value == 16000 and by_name["sr"].shape is None
    assert by_name["state"].shape == (2, "batch", 128) and by_name["state"].value == 0.0
    assert by_name["ids"].range == (0, 30522)


@pytest.mark.parametrize("extra,field,fix", [
    ("inputs:\n  x: {}\n", "inputs.x", "give `shape:`"),
    ("inputs:\n  x: {shape: [batch, -1]}\n", "inputs.x.shape", "shape: [batch, 3, 48, 320]"),
    ("inputs:\n  x: {shape: [b, 3]}\n", "inputs.x.shape", "shape: [batch"),
    ("inputs:\n  x: {value: [[1, 2], [3]]}\n", "inputs.x.value", "value: 16000"),
    ("inputs:\n  x: {value: 1, range: [0, 2]}\n", "inputs.x.range", "keep one"),
    ("inputs:\n  x: {range: [5, 1]}\n", "inputs.x.range", "range: [0, 30522]"),
    ("inputs:\n  x: {shape: [2, 2], value: [[1, 2], [3, 4]]}\n", "inputs.x.value", "drop `shape:`"),
    ("inputs:\n  x: {shape: [1], typo: 3}\n", "inputs.x.typo", "remove it"),
    ("inputs: [x]\n", "inputs", "key: value"),
])
def test_bad_inputs_are_one_line_card_errors(extra, field, fix):
    with pytest.raises(CardError) as info:
        parse(extra)
    assert info.value.field == field and fix in str(info.value) and "\n" not in str(info.value)


# ----------------------------------------------------------------------------- the generator

SPECS = [TensorSpec("x", "float32", ("N", 3, "?", "W")), TensorSpec("sr", "int64", ()),
         TensorSpec("state", "float32", (2, "?", 128))]


def gen(*declared, specs=SPECS, **kw):
    return Inputs(specs, tuple(declared), SETTINGS, "registry/onnx/m.yaml", **kw)


@pytest.mark.parametrize("declared,problem", [
    (Declared("y", (1,)), "the model has no input 'y' (its inputs: x, sr, state)"),
    (Declared("x", ("batch", 3, 48)), "rank 3"),
    (Declared("x", ("batch", 4, 48, 320)), "dim 1 is 4, the model fixes it at 3"),
    (Declared("sr", value=16000.5), "is not an integer"),
    (Declared("state", value=[[1.0, 2.0]]), "value has shape [1, 2]"),
    (Declared("x", range=(0.5, 2)), None),  # a float range for a float input is fine
    (Declared("sr", range=(0.5, 2)), "not integers"),
    (Declared("sr", value=2**70), "does not fit the model's int64 sr"),
    (Declared("sr", range=(0, 2**70)), "does not fit the model's int64 sr"),
])
def test_declared_inputs_are_checked_against_the_model(declared, problem):
    if problem is None:
        gen(declared)
        return
    with pytest.raises(CardError) as info:
        gen(declared)
    assert info.value.field == f"inputs.{declared.name}" and problem in str(info.value)


def test_declared_values_shapes_and_the_batch_sweep():
    g = gen(Declared("x", ("batch", 3, 48, 320)), Declared("sr", value=16000),
            Declared("state", (2, "batch", 128), value=0.0))
    assert [c.label for c in g.cases()] == ["batch1", "batch2"] and g.defaulted_dims == []
    feeds = g.feeds(g.cases()[1])
    assert feeds["x"].shape == (2, 3, 48, 320) and feeds["x"].dtype == np.float32
    assert feeds["sr"].shape == () and feeds["sr"].dtype == np.int64 and int(feeds["sr"]) == 16000
    assert feeds["state"].shape == (2, 2, 128) and not feeds["state"].any()
    again = gen(Declared("x", ("batch", 3, 48, 320)), Declared("sr", value=16000),
                Declared("state", (2, "batch", 128), value=0.0)).feeds(g.cases()[1])
    assert all(np.array_equal(feeds[k], again[k]) for k in feeds)  # seeded: the same bytes every time


def test_undeclared_symbolic_dims_are_named_not_hidden():
    g = gen(specs=[TensorSpec("images", "float32", ("batch", 3, "height", "width"))])
    assert g.batched and [c.label for c in g.cases()] == ["batch1", "batch2"]
    assert g.defaulted_dims == ["images: dim 2 (height) = 1 (params dim_default)",
                                "images: dim 3 (width) = 1 (params dim_default)"]
    assert g.feeds(g.cases()[0])["images"].shape == (1, 3, 1, 1)


def test_text_inputs_pad_the_last_row_and_stay_below_the_vocabulary():
    specs = [TensorSpec(n, "int64", ("batch", "sequence")) for n in ("input_ids", "attention_mask", "token_type_ids")]
    g = Inputs(specs, None, SETTINGS, "c", text=True, vocab=7)
    assert [c.label for c in g.cases()] == ["batch1-seq8", "batch1-seq16", "batch2-seq8", "batch2-seq16"]
    feeds = g.feeds(g.cases()[3])
    assert feeds["input_ids"].shape == (2, 16) and feeds["input_ids"].max() < 7
    assert feeds["attention_mask"][1, 8:].sum() == 0 and feeds["attention_mask"][0].all()
    assert not feeds["token_type_ids"].any() and g.first().seq == 8


# ----------------------------------------------------------------------------- ONNX graphs, staged

def _model(nodes, inputs, outputs, inits=()) -> bytes:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, producer_name="zoo-tests", opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def recognizer() -> bytes:
    """`x: [N, 3, H, W]` through a 3x3 convolution without padding: a 1x1 image cannot run."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    return _model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv_0"),
                   helper.make_node("ReduceMean", ["y"], ["logits"], axes=[2, 3], keepdims=0)],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                  [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])], [w])


def vad() -> bytes:
    """`input [?, ?]`, `state [2, ?, 128]` and an int64 `sr` scalar: a buffer of sr/1000 - 10 values is
    built, so a random small integer sr cannot run (negative dims), and 16000 can."""
    k, ten = (numpy_helper.from_array(np.array(v, dtype=np.int64), n) for v, n in ((1000, "k"), (10, "ten")))
    one = numpy_helper.from_array(np.array([1], dtype=np.int64), "one")  # also ReduceSum's axes (an input at 13+)
    nodes = [helper.make_node("Div", ["sr", "k"], ["q"]), helper.make_node("Sub", ["q", "ten"], ["n"]),
             helper.make_node("Reshape", ["n", "one"], ["n1"]),
             helper.make_node("ConstantOfShape", ["n1"], ["buf"], name="buffer",
                              value=numpy_helper.from_array(np.array([0.5], dtype=np.float32))),
             helper.make_node("ReduceSum", ["buf"], ["s"], keepdims=0),
             helper.make_node("ReduceSum", ["input", "one"], ["a"], keepdims=0),
             helper.make_node("Add", ["a", "s"], ["output"]),
             helper.make_node("Identity", ["state"], ["stateN"])]
    return _model(nodes, [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["?", "?"]),
                          helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "?", 128]),
                          helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
                  [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["?"]),
                   helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, "?", 128])], [k, ten, one])


def zoo(root: Path, *args: str) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess (from outside the root: its stages/pins folder is not the package)."""
    return subprocess.run([sys.executable, "-m", "stages", "--root", str(root), *args], cwd=root.parent,
                          capture_output=True, text=True)


def stage_one(mirror_root, tmp_path, name, data, extra=""):
    url = f"https://example.org/shapes/{name}.onnx"
    sha = fixtures.publish(mirror_root, url, data)
    root = make_root(tmp_path, {f"onnx/{name}": fixtures.onnx_card(name, url, sha, extra=extra)})
    fetch_card(root, Path(f"registry/onnx/{name}.yaml"))
    return root


def test_a_graph_that_cannot_run_at_1x1_says_so_in_one_line(mirror, mirror_root, tmp_path):
    root = stage_one(mirror_root, tmp_path, "ocr-rec", recognizer())
    with pytest.raises(StagingError) as info:
        stage_card(root, Path("registry/onnx/ocr-rec.yaml"))
    message = str(info.value)
    assert "onnx's reference evaluator failed in op Conv (node 'conv_0') on x float32[1, 3, 1, 1]" in message
    assert "declare the model's inputs in the card (`inputs:`" in message and "\n" not in message
    assert not (root / "registry/onnx/ocr-rec").exists() and leftovers(root) == []


def test_declared_shapes_stage_the_graph_and_are_recorded(mirror, mirror_root, tmp_path):
    root = stage_one(mirror_root, tmp_path, "ocr-rec", recognizer(), "inputs:\n  x: {shape: [batch, 3, 48, 320]}\n")
    stage_card(root, Path("registry/onnx/ocr-rec.yaml"))
    manifest = json.loads((root / "registry/onnx/ocr-rec.manifest.json").read_text())
    validation = manifest["validation"]
    assert validation["passed"] and validation["defaulted_dims"] == []
    assert [r["shapes"] for r in validation["runs"]] == [{"x": [1, 3, 48, 320]}, {"x": [2, 3, 48, 320]},
                                                          {"x": [1, 3, 48, 320]}]  # 2 generated, the golden set
    from stages.golden import read_tensors

    assert read_tensors(root / "registry/onnx/ocr-rec/test_data_set_0", "input")[0][1].shape == (1, 3, 48, 320)


def test_a_graph_validated_on_defaulted_dims_says_which(mirror, mirror_root, tmp_path):
    relu = _model([helper.make_node("Relu", ["images"], ["y"])],
                  [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, "height", "width"])])
    root = stage_one(mirror_root, tmp_path, "det", relu)
    stage_card(root, Path("registry/onnx/det.yaml"))
    validation = json.loads((root / "registry/onnx/det.manifest.json").read_text())["validation"]
    assert validation["passed"] and validation["defaulted_dims"] == [
        "images: dim 2 (height) = 1 (params dim_default)", "images: dim 3 (width) = 1 (params dim_default)"]
    out = zoo(root, "check")
    assert "registry/onnx/det: validated on defaulted dims: images: dim 2 (height) = 1" in out.stderr


def test_a_scalar_input_needs_its_value(mirror, mirror_root, tmp_path):
    root = stage_one(mirror_root, tmp_path, "vad", vad())
    with pytest.raises(StagingError) as info:
        stage_card(root, Path("registry/onnx/vad.yaml"))
    assert "in op ConstantOfShape (node 'buffer')" in str(info.value) and "sr int64[]" in str(info.value)
    root = stage_one(mirror_root, tmp_path / "declared", "vad", vad(),
                     "inputs:\n  input: {shape: [batch, 512]}\n  state: {shape: [2, batch, 128], value: 0.0}\n"
                     "  sr: {value: 16000}\n")
    stage_card(root, Path("registry/onnx/vad.yaml"))
    validation = json.loads((root / "registry/onnx/vad.manifest.json").read_text())["validation"]
    assert validation["runs"][1]["shapes"] == {"input": [2, 512], "sr": [], "state": [2, 2, 128]}
    assert validation["defaulted_dims"] == []
    from stages.golden import read_tensors  # the golden scalar stays a scalar (rank 0, as declared)

    golden = dict(read_tensors(root / "registry/onnx/vad/test_data_set_0", "input"))
    assert golden["sr"].shape == () and int(golden["sr"]) == 16000 and golden["input"].shape == (1, 512)
    from stages.verify import verify

    assert verify(root / "registry/onnx/vad")["files"]["model.onnx"]["passed"]


def test_an_input_the_model_does_not_have_is_named_at_stage_time(mirror, mirror_root, tmp_path):
    root = stage_one(mirror_root, tmp_path, "ocr-rec", recognizer(), "inputs:\n  image: {shape: [1, 3, 48, 320]}\n")
    out = zoo(root, "stage", "registry/onnx/ocr-rec.yaml")
    assert out.returncode == 3 and "Traceback" not in out.stderr
    assert out.stderr.strip() == ("zoo: error: registry/onnx/ocr-rec.yaml: inputs.image: the model has no input "
                                  "'image' (its inputs: x); fix the name under `inputs:`")


def test_golden_data_of_an_opset_12_batch_norm_is_inference_mode(mirror, mirror_root, tmp_path):
    """onnx.reference's BatchNormalization before opset 14 normalised with the batch's own statistics
    whenever `momentum` is set (a real PP-OCRv4 recognizer: golden outputs off by 0.27); the stage
    replaces it with the spec's inference formula, so ONNX Runtime and the golden data agree."""
    rng = np.random.default_rng(3)
    values = {"s": rng.random(4) + 0.5, "b": rng.random(4), "m": rng.random(4), "v": rng.random(4) * 0.2 + 0.01}
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in values.items()]
    graph = helper.make_graph([helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"],
                                                epsilon=1e-5, momentum=0.9)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 6, 6])], inits)
    model = helper.make_model(graph, producer_name="zoo-tests", opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 7
    root = stage_one(mirror_root, tmp_path, "bn12", model.SerializeToString())
    stage_card(root, Path("registry/onnx/bn12.yaml"))
    from stages.golden import read_tensors

    folder = root / "registry/onnx/bn12/test_data_set_0"
    (_, x), = read_tensors(folder, "input")
    (_, y), = read_tensors(folder, "output")
    shape = (1, -1, 1, 1)
    expected = ((x - values["m"].reshape(shape)) / np.sqrt(values["v"].reshape(shape) + 1e-5)
                * values["s"].reshape(shape) + values["b"].reshape(shape))
    np.testing.assert_allclose(y, expected, atol=1e-5)


def test_batch_norm_in_training_mode_uses_the_batch_statistics():
    """The replaced BatchNormalization still follows the spec when a node asks for training mode."""
    from stages.convert.onnx_zoo import reference_run

    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 2, 4)).astype(np.float32)
    values = {k: rng.random(2).astype(np.float32) + 0.1 for k in ("s", "b", "m", "v")}
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y", "rm", "rv"], epsilon=1e-5,
                            momentum=0.8, training_mode=1)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 2, 4])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "rm", "rv")],
                              [numpy_helper.from_array(v, k) for k, v in values.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    y, rm, rv = reference_run(model, {"x": x}, "test")
    mean, var = x.mean(axis=(0, 2)), x.var(axis=(0, 2))
    np.testing.assert_allclose(y, (x - mean[None, :, None]) / np.sqrt(var[None, :, None] + 1e-5)
                               * values["s"][None, :, None] + values["b"][None, :, None], atol=1e-5)
    np.testing.assert_allclose(rm, values["m"] * 0.8 + mean * 0.2, atol=1e-6)
    np.testing.assert_allclose(rv, values["v"] * 0.8 + var * 0.2, atol=1e-6)
