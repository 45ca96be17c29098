"""ONNX helpers used by every stage that writes or validates an ONNX file.

Imports onnx / onnxruntime / numpy lazily: importing this module is free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stages.errors import StagingError
from stages.inputs import TensorSpec


def _tensor_spec(value_info) -> TensorSpec:
    from onnx import helper

    ttype = value_info.type.tensor_type
    if not value_info.type.HasField("tensor_type"):
        raise StagingError(f"input/output {value_info.name!r} is not a tensor (sequence or map)",
                           fix="this registry validates tensor models only; stage it with a card that fixes its I/O")
    dtype = helper.tensor_dtype_to_np_dtype(ttype.elem_type).name
    dims: list[int | str] = []
    for dim in ttype.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param") and dim.dim_param:
            dims.append(dim.dim_param)
        else:
            dims.append("?")
    return TensorSpec(value_info.name, dtype, tuple(dims))


def io_specs(model) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Real inputs (initializers listed as inputs, as old zoo models do, are not inputs) and outputs."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = [_tensor_spec(vi) for vi in model.graph.input if vi.name not in initializers]
    outputs = [_tensor_spec(vi) for vi in model.graph.output]
    return inputs, outputs


def opsets(model) -> dict[str, int]:
    return {(imp.domain or "ai.onnx"): int(imp.version) for imp in model.opset_import}


def model_record(model) -> dict:
    """The manifest's description of an ONNX model: IR version, opsets, producer, inputs and outputs."""
    inputs, outputs = io_specs(model)
    return {"ir_version": int(model.ir_version), "opset": opsets(model),
            "producer": f"{model.producer_name} {model.producer_version}".strip(),
            "inputs": [s.record() for s in inputs], "outputs": [s.record() for s in outputs]}


def session(path: Path, settings: dict):
    """An ONNX Runtime CPU session, single-threaded so repeated runs give identical numbers."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(settings.get("threads", 1))
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        first = str(exc).strip().splitlines()[0][:300]
        raise StagingError(f"{path}: ONNX Runtime cannot load the model: {first}",
                           fix="the model uses an operator or opset this onnxruntime lacks; check stages/pins/onnx.txt") from None


def run(sess, feeds: dict[str, Any], where: str) -> dict[str, Any]:
    """Run by name; a failure is one line naming what was fed (ONNX Runtime's message names the node)."""
    from stages.inputs import describe

    wanted = [i.name for i in sess.get_inputs()]
    missing = sorted(set(wanted) - set(feeds))
    if missing:
        raise StagingError(f"{where}: no value for the model's input(s) {', '.join(missing)} (fed {sorted(feeds)})",
                           fix="feed every input by its name")
    try:
        names = [o.name for o in sess.get_outputs()]
        return dict(zip(names, sess.run(names, {k: feeds[k] for k in wanted})))
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        first = str(exc).strip().splitlines()[0][:300]
        raise StagingError(f"{where}: ONNX Runtime failed to run the model on {describe(feeds)}: {first}",
                           fix="declare the model's inputs in the card (`inputs:`, see README), or give the card "
                               "reference test data") from None
