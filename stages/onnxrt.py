"""ONNX helpers used by every stage that writes or validates an ONNX file.

Imports onnx / onnxruntime / numpy lazily: importing this module is free.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.errors import StagingError


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name, e.g. "float32"
    shape: tuple[int | str, ...]  # ints, symbolic names, or "?" for unknown dims

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


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


def concrete_shape(spec: TensorSpec, batch: int, settings: dict) -> tuple[int, ...]:
    """Symbolic dims become numbers: the leading one is the batch, named ones come from params.yaml.

    `settings` is the converter's params section: `dim_values` maps a symbolic name to a value,
    `dim_default` is used for any other symbolic or unknown dim.
    """
    named = settings.get("dim_values") or {}
    default = int(settings.get("dim_default", 1))
    shape = []
    for i, dim in enumerate(spec.shape):
        if isinstance(dim, int) and dim > 0:
            shape.append(dim)
        elif i == 0:
            shape.append(batch)
        else:
            shape.append(int(named.get(dim, default)))
    return tuple(shape)


def deterministic_inputs(specs: list[TensorSpec], batch: int, settings: dict, case: int = 0) -> dict[str, Any]:
    """Seeded inputs from the declared inputs: the same settings give the same bytes on any machine."""
    import numpy as np

    rng = np.random.default_rng([int(settings.get("seed", 0)), case])
    low, high = (settings.get("int_range") or [0, 100])
    feeds = {}
    for spec in specs:
        shape = concrete_shape(spec, batch, settings)
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            feeds[spec.name] = rng.integers(low, high, size=shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[spec.name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            raise StagingError(f"input {spec.name!r} has dtype {spec.dtype}, which has no deterministic generator",
                               fix="give the card reference test data for this model")
    return feeds


def has_batch_dim(specs: list[TensorSpec]) -> bool:
    return bool(specs) and all(s.shape and not (isinstance(s.shape[0], int) and s.shape[0] > 0) for s in specs)


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
    try:
        names = [o.name for o in sess.get_outputs()]
        return dict(zip(names, sess.run(names, feeds)))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:300]
        raise StagingError(f"{where}: ONNX Runtime failed to run the model: {first}",
                           fix="check the model's declared inputs, or give the card reference test data") from None
