"""Byte-stable tf2onnx output: content-named initializers, structure-named values, canonical node order.

tf2onnx 1.17 writes the same computation with different names, merged-constant choices and node
orders from run to run (see stages.convert.onnx_normalize); these tests build such variants by
hand and check they normalise to the same bytes and still compute the same thing.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from stages.convert.onnx_normalize import canonical_initializers, canonical_names  # noqa: E402


def variant(seed: int):
    """y = relu(x*w + b) + relu(x*w + b2), with run-dependent names and node order, as tf2onnx varies them."""
    rng = random.Random(seed)
    suffix = lambda: f"__{rng.randint(1, 999)}"  # noqa: E731 - tf2onnx's counters
    w, b, b2 = f"w{suffix()}", f"b{suffix()}", f"b2{suffix()}"
    m1, a1, r1, m2, a2, r2 = (f"{p}{suffix()}" for p in ("mul", "add", "relu", "mul", "add", "relu"))
    weights = np.arange(4, dtype=np.float32).reshape(1, 4) / 4
    inits = [numpy_helper.from_array(weights, w), numpy_helper.from_array(np.full((1, 4), 0.5, np.float32), b),
             numpy_helper.from_array(np.full((1, 4), -0.25, np.float32), b2)]
    rng.shuffle(inits)
    nodes = [helper.make_node("Mul", ["x", w], [m1], name=f"n{suffix()}"),
             helper.make_node("Add", [m1, b], [a1], name=f"n{suffix()}"),
             helper.make_node("Relu", [a1], [r1], name=f"n{suffix()}"),
             helper.make_node("Mul", ["x", w], [m2], name=f"n{suffix()}"),
             helper.make_node("Add", [m2, b2], [a2], name=f"n{suffix()}"),
             helper.make_node("Relu", [a2], [r2], name=f"n{suffix()}"),
             helper.make_node("Add", [r1, r2], ["y"], name=f"n{suffix()}")]
    if seed % 2:  # another valid topological order
        nodes = [nodes[3], nodes[4], nodes[5], nodes[0], nodes[1], nodes[2], nodes[6]]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def normalised(model) -> bytes:
    return canonical_names(canonical_initializers(model)).SerializeToString(deterministic=True)


def test_variants_normalise_to_the_same_bytes():
    raw = {variant(seed).SerializeToString() for seed in range(6)}
    assert len(raw) == 6  # the variants really differ
    assert len({normalised(variant(seed)) for seed in range(6)}) == 1


def test_normalised_graph_computes_the_same_and_keeps_io_names():
    ort = pytest.importorskip("onnxruntime")
    original = variant(3)
    fixed = onnx.ModelProto()
    fixed.ParseFromString(normalised(variant(3)))
    onnx.checker.check_model(fixed, full_check=True)
    assert [i.name for i in fixed.graph.input] == ["x"] and [o.name for o in fixed.graph.output] == ["y"]
    assert all(n.name.startswith("n_") for n in fixed.graph.node)
    assert all(t.name.startswith("const_") for t in fixed.graph.initializer)
    x = np.linspace(-2, 2, 8, dtype=np.float32).reshape(2, 4)
    run = lambda m: ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]  # noqa: E731
    np.testing.assert_array_equal(run(original), run(fixed))
