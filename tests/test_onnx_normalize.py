"""Byte-stable ONNX from the dynamo exporter: what varies between runs, and normalize + save_stable.

Three fresh processes export torchvision squeezenet1_1 (seeded, weights=None) with
`torch.onnx.export(..., dynamo=True, opset_version=18)` and a dynamic batch:
  seed0    PYTHONHASHSEED=0
  seed123  PYTHONHASHSEED=123
  moved    PYTHONHASHSEED unset, and the venv reached through a symlink in another folder (what a
           CI clone somewhere else gives), when the tests run in a venv.
Measured with torch 2.14.1: seed0 and seed123 are byte-identical; `moved` differs only in the
`pkg.torch.onnx.stack_trace` node metadata, which embeds absolute source paths.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from stages.convert.onnx_normalize import EXTERNAL_MIN_BYTES, VARYING_NODE_METADATA, normalize, save_stable

EXPORT_SCRIPT = r'''
import contextlib, io, json, sys, warnings
warnings.filterwarnings("ignore")
import torch, torchvision
torch.manual_seed(0)
model = torchvision.models.squeezenet1_1(weights=None).eval()
x = torch.randn(2, 3, 224, 224)
batch = torch.export.Dim("batch", min=1, max=64)
with contextlib.redirect_stdout(io.StringIO()):
    torch.onnx.export(model, (x,), sys.argv[1], dynamo=True, opset_version=18,
                      input_names=["pixel_values"], output_names=["logits"],
                      dynamic_shapes={"x": {0: batch}})
print(json.dumps({"torch_file": torch.__file__}))
'''

NEEDS_TORCH = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("torch", "torchvision", "onnxscript", "onnxruntime")),
    reason="needs torch, torchvision, onnxscript and onnxruntime (stages/pins/torch.txt)")


def _moved_python(tmp: Path) -> Path:
    """The current venv's python reached through a symlink elsewhere; the plain one outside a venv."""
    exe = Path(sys.executable)
    prefix = Path(sys.prefix)
    if sys.prefix == sys.base_prefix or prefix not in exe.parents:
        return exe
    link = tmp / "elsewhere" / "venv"
    link.parent.mkdir()
    link.symlink_to(prefix, target_is_directory=True)
    return link / exe.relative_to(prefix)


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, dict]:
    """Run the three exports in parallel; name -> {"dir": folder with model.onnx, "torch_file": ...}."""
    tmp = tmp_path_factory.mktemp("exports")
    script = tmp / "export_squeezenet.py"
    script.write_text(EXPORT_SCRIPT)
    runs = {"seed0": ("0", Path(sys.executable)), "seed123": ("123", Path(sys.executable)),
            "moved": (None, _moved_python(tmp))}
    procs = {}
    for name, (seed, python) in runs.items():
        out = tmp / name
        out.mkdir()
        env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
        if seed is not None:
            env["PYTHONHASHSEED"] = seed
        procs[name] = (out, subprocess.Popen([str(python), str(script), str(out / "model.onnx")], env=env,
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    result = {}
    for name, (out, proc) in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{name}: export failed:\n{stderr[-3000:]}"
        result[name] = {"dir": out, **json.loads(stdout.strip().splitlines()[-1])}
    return result


def _field_diff(a, b, path: str = "model") -> list[tuple[str, object, object]]:
    """Every leaf field that differs between two protobuf messages, as (path, a value, b value)."""
    from google.protobuf.message import Message

    if isinstance(a, Message):
        fa = {f.name: v for f, v in a.ListFields()}
        fb = {f.name: v for f, v in b.ListFields()}
        out = []
        for key in sorted(set(fa) | set(fb)):
            if key not in fa or key not in fb:
                out.append((f"{path}.{key}", fa.get(key), fb.get(key)))
            else:
                out += _field_diff(fa[key], fb[key], f"{path}.{key}")
        return out
    if not isinstance(a, (str, bytes, int, float)):  # repeated field
        out = [] if len(a) == len(b) else [(f"{path}.len", len(a), len(b))]
        for i, (x, y) in enumerate(zip(a, b)):
            label = getattr(x, "name", "") or getattr(x, "key", "") or str(i)
            out += _field_diff(x, y, f"{path}[{label}]")
        return out
    return [] if a == b else [(path, a, b)]


def _raw(run: dict) -> onnx.ModelProto:
    return onnx.load(str(run["dir"] / "model.onnx"), load_external_data=False)


def _bytes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _ort_outputs(model_file: Path, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(model_file), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})


X = np.random.default_rng(0).standard_normal((2, 3, 224, 224), dtype=np.float32)


@NEEDS_TORCH
def test_two_processes_give_identical_bytes_after_normalize(exports, tmp_path):
    a, b, moved = exports["seed0"], exports["seed123"], exports["moved"]

    # What differs before normalising. The hash seed: nothing in torch 2.14.1 (raw bytes equal);
    # any future difference must be one that normalize removes.
    raw_a, raw_b, raw_moved = _raw(a), _raw(b), _raw(moved)
    seed_diff = _field_diff(raw_a, raw_b)
    assert all(p.endswith(tuple(f"metadata_props[{k}].value" for k in VARYING_NODE_METADATA))
               for p, _, _ in seed_diff), seed_diff[:3]
    if _bytes(a["dir"]) == _bytes(b["dir"]):
        # Equal raw bytes (torch 2.14.1): normalize must then be idempotent.
        once = normalize(raw_a)
        assert normalize(once).SerializeToString(deterministic=True) == once.SerializeToString(deterministic=True)

    # Another install path: every node's stack trace differs, and nothing else does.
    moved_diff = _field_diff(raw_a, raw_moved)
    if Path(moved["torch_file"]).parent != Path(a["torch_file"]).parent:
        assert moved_diff, "the venv path should show in the stack traces"
        assert {p.rsplit(".node[", 1)[0] + ".node[]" for p, _, _ in moved_diff} == {"model.graph.node[]"}
        assert all(p.endswith("].metadata_props[pkg.torch.onnx.stack_trace].value") for p, _, _ in moved_diff)
        old_prefix = str(Path(a["torch_file"]).parents[1])   # .../site-packages
        new_prefix = str(Path(moved["torch_file"]).parents[1])
        _, va, vb = moved_diff[0]
        assert old_prefix in va and new_prefix in vb and va.replace(old_prefix, new_prefix) == vb
        assert len(moved_diff) == len(raw_a.graph.node)  # squeezenet: every node (65) has a trace
        assert (a["dir"] / "model.onnx.data").read_bytes() == (moved["dir"] / "model.onnx.data").read_bytes()

    # After normalize + save_stable, all three are byte-identical, model and data file.
    saved = {}
    for name, run in exports.items():
        out = tmp_path / name
        files = save_stable(normalize(onnx.load(str(run["dir"] / "model.onnx"))), out / "model.onnx", 0)
        assert [f.name for f in files] == ["model.onnx", "model.onnx.data"]
        saved[name] = _bytes(out)
    assert saved["seed0"] == saved["seed123"] == saved["moved"]
    assert not any(p.key in VARYING_NODE_METADATA for n in onnx.load(str(tmp_path / "seed0" / "model.onnx"),
                   load_external_data=False).graph.node for p in n.metadata_props)


@NEEDS_TORCH
def test_normalize_keeps_outputs(exports, tmp_path):
    raw_file = exports["seed0"]["dir"] / "model.onnx"
    model = onnx.load(str(raw_file))
    before = model.SerializeToString(deterministic=True)
    normalized = normalize(model)
    assert model.SerializeToString(deterministic=True) == before  # the input is not changed
    assert len(normalized.graph.node) == len(model.graph.node)
    onnx.checker.check_model(normalized, full_check=True)
    out = tmp_path / "model.onnx"
    out.write_bytes(normalized.SerializeToString(deterministic=True))
    for x in (X, X[:1]):  # the batch dim stays dynamic
        ref, got = _ort_outputs(raw_file, x), _ort_outputs(out, x)
        assert len(ref) == len(got) == 1
        assert all(np.array_equal(r, g) for r, g in zip(ref, got))
    # in place: the same object, normalised, same result
    again = onnx.load(str(raw_file))
    assert normalize(again, inplace=True) is again
    assert again.SerializeToString(deterministic=True) == normalized.SerializeToString(deterministic=True)


@NEEDS_TORCH
def test_save_stable_external_data(exports, tmp_path):
    raw_file = exports["seed0"]["dir"] / "model.onnx"
    model = normalize(onnx.load(str(raw_file)))
    first, second = tmp_path / "one", tmp_path / "two"
    save_stable(model, first / "model.onnx", external_data_threshold_bytes=0)
    save_stable(model, second / "model.onnx", external_data_threshold_bytes=0)
    save_stable(model, second / "model.onnx", external_data_threshold_bytes=0)  # over the old pair
    for folder in (first, second):
        assert sorted(p.name for p in folder.iterdir()) == ["model.onnx", "model.onnx.data"]  # no temp files
    assert _bytes(first) == _bytes(second)

    stored = onnx.load(str(first / "model.onnx"), load_external_data=False)
    layout = []
    for init in stored.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in init.external_data}
            assert info["location"] == "model.onnx.data"
            layout.append((int(info["offset"]), init.name, int(info["length"])))
            assert int(info["length"]) >= EXTERNAL_MIN_BYTES
        else:
            assert len(init.raw_data) < EXTERNAL_MIN_BYTES
    layout.sort()
    assert [name for _, name, _ in layout] == sorted(name for _, name, _ in layout)  # data sorted by name
    assert layout[0][0] == 0 and all(o1 + n1 == o2 for (o1, _, n1), (o2, _, _) in zip(layout, layout[1:]))
    assert layout[-1][0] + layout[-1][2] == (first / "model.onnx.data").stat().st_size
    onnx.checker.check_model(str(first / "model.onnx"), full_check=True)

    ref = _ort_outputs(raw_file, X)
    assert all(np.array_equal(r, g) for r, g in zip(ref, _ort_outputs(first / "model.onnx", X)))
    assert model.graph.initializer[0].HasField("raw_data")  # save_stable did not touch its input

    # Under the threshold: one file, and the stale data file of the earlier save is gone.
    files = save_stable(model, second / "model.onnx", external_data_threshold_bytes=1 << 40)
    assert files == [second / "model.onnx"]
    assert sorted(p.name for p in second.iterdir()) == ["model.onnx"]
    assert all(np.array_equal(r, g) for r, g in zip(ref, _ort_outputs(second / "model.onnx", X)))


# ---- fast unit tests on a hand-built model (no torch) -------------------------------------------

def _documented_model() -> onnx.ModelProto:
    from onnx import TensorProto, helper, numpy_helper

    def node(op, ins, outs, name, **kw):
        n = helper.make_node(op, ins, outs, name=name, doc_string=f"/home/me/{name}.py(3): forward", **kw)
        helper.set_metadata_props(n, {"namespace": name, "pkg.torch.onnx.stack_trace": f'File "/x/{name}.py"'})
        return n

    branch = helper.make_graph([node("Identity", ["w"], ["y_then"], "then_id")], "then", [],
                               [helper.make_tensor_value_info("y_then", TensorProto.FLOAT, [16, 16])],
                               doc_string="then graph")
    other = helper.make_graph([node("Neg", ["w"], ["y_else"], "else_neg")], "else", [],
                              [helper.make_tensor_value_info("y_else", TensorProto.FLOAT, [16, 16])])
    weight = numpy_helper.from_array(np.arange(256, dtype=np.float32).reshape(16, 16), "w")
    weight.doc_string = "weights"
    small = numpy_helper.from_array(np.array([True]), "cond")
    graph = helper.make_graph(
        [node("If", ["cond"], ["y"], "if", then_branch=branch, else_branch=other)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1], doc_string="input")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [16, 16])],
        [weight, small], doc_string="main graph")
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], doc_string="model doc")
    helper.set_model_props(model, {"b": "2", "a": "1"})
    return model


def _doc_strings(message) -> list[str]:
    from google.protobuf.message import Message

    found = []
    for field, value in message.ListFields():
        if field.name == "doc_string":
            found.append(value)
        elif field.type == field.TYPE_MESSAGE:
            for sub in ([value] if isinstance(value, Message) else value):
                found += _doc_strings(sub)
    return found


def test_normalize_strips_doc_strings_and_stack_traces_only():
    model = _documented_model()
    original = model.SerializeToString(deterministic=True)
    assert len(_doc_strings(model)) == 8
    out = normalize(model)
    assert model.SerializeToString(deterministic=True) == original
    assert _doc_strings(out) == []
    nodes = [out.graph.node[0]] + [g.node[0] for a in out.graph.node[0].attribute for g in [a.g]]
    assert sorted([(p.key, p.value) for p in n.metadata_props] for n in nodes) == [
        [("namespace", "else_neg")], [("namespace", "if")], [("namespace", "then_id")]]
    assert [(p.key, p.value) for p in out.metadata_props] == [("b", "2"), ("a", "1")]  # untouched
    assert [i.name for i in out.graph.initializer] == ["w", "cond"]
    again = normalize(out)
    assert again.SerializeToString(deterministic=True) == out.SerializeToString(deterministic=True)


def test_save_stable_small_model_and_errors(tmp_path, monkeypatch):
    model = normalize(_documented_model())
    files = save_stable(model, tmp_path / "a" / "model.onnx", 0)
    assert [f.name for f in files] == ["model.onnx", "model.onnx.data"]
    assert (tmp_path / "a" / "model.onnx.data").stat().st_size == 16 * 16 * 4  # `w` only: `cond` < 1 KiB
    loaded = onnx.load(str(tmp_path / "a" / "model.onnx"))
    assert loaded.graph.node == model.graph.node
    assert [(i.name, numpy_helper.to_array(i).tolist()) for i in loaded.graph.initializer] == \
        [(i.name, numpy_helper.to_array(i).tolist()) for i in model.graph.initializer]

    # weights not in memory: refused, nothing written
    pointer = onnx.load(str(tmp_path / "a" / "model.onnx"), load_external_data=False)
    with pytest.raises(ValueError, match="external data"):
        save_stable(pointer, tmp_path / "b" / "model.onnx", 0)
    assert list((tmp_path / "b").iterdir()) == []

    # a failure while renaming leaves no temp file and no final file
    def broken(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        save_stable(model, tmp_path / "c" / "model.onnx", 0)
    assert list((tmp_path / "c").iterdir()) == []
