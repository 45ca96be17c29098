"""A TensorFlow-side card's ONNX target (`targets: [tensorflow, onnx]`): tf2onnx, validated, byte-stable.

Its own converter (stage-tf2onnx in dvc.yaml, params `tf2onnx`, pins tf2onnx.txt) so that a
tf2onnx upgrade reruns exactly these stages. The source model is rebuilt from the raw files by the
same builder as the frozen-graph stage (the kind's `build`) and frozen by the same
`freeze()`, and tf2onnx converts that frozen graph (`from_graph_def`), for every kind: converting a
loaded SavedModel's signature function directly left its captured variables as extra graph inputs
(a real TF Hub audio model: 4 inputs where the signature has 1), and one frozen graph behind both
targets means model.pb and model.onnx are the same computation. Inputs and outputs are renamed,
matched by tensor name, to the signature's names (`images`, `logits`) instead of tf2onnx's tensor
names (`images:0`, `Identity:0`). The file is normalised (doc strings cleared,
initializers named after their content: tf2onnx's constant merging picks names differently on
every run, see stages.convert.onnx_normalize), passes `onnx.checker`, and is compared with the
SOURCE model in ONNX Runtime at every batch size (and sequence length) in params.yaml.
"""

from __future__ import annotations

import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stages.errors import StagingError


def _erfc(ctx, node, name, args) -> None:
    """tf2onnx handler for TensorFlow's Erfc (exact GELU in TF 2.21 uses it; tf2onnx 1.17 has no
    converter for it): erfc(x) = 1 - erf(x), with ONNX's Erf (opset 9+)."""
    import numpy as np
    from tf2onnx import utils

    node.type = "Erf"
    dtype, shape = ctx.get_dtype(node.output[0]), ctx.get_shape(node.output[0])
    one = ctx.make_const(utils.make_name("one"), np.array(1, dtype=utils.map_onnx_to_numpy_type(dtype)))
    sub = ctx.insert_new_node_on_output("Sub", node.output[0], inputs=[one.output[0], node.output[0]],
                                        name=utils.make_name(f"{node.name}_erfc"))
    ctx.set_dtype(sub.output[0], dtype)
    ctx.set_shape(sub.output[0], shape)


HANDLERS = {"Erfc": (_erfc, [])}


def _unconverted(proto) -> list[str]:
    """Ops tf2onnx left in the graph that ONNX does not define (it logs them and goes on)."""
    import onnx

    opsets = {o.domain or "": o.version for o in proto.opset_import}
    return sorted({n.op_type for n in proto.graph.node
                   if not onnx.defs.has(n.op_type, n.domain or "") and (n.domain or "") in ("", "ai.onnx")
                   and opsets.get(n.domain or "") is not None})


def convert(card, source, settings: dict, graph_def, inputs: list[dict], outputs: list[dict]):
    """tf2onnx on the frozen graph the TensorFlow stage validates (its model.pb), inputs and outputs
    named after the signature's names, matched by tensor name."""
    import tf2onnx

    opset = int(settings["opset"])
    with warnings.catch_warnings(), _optimizers_without(card, settings.get("skip_optimizers") or []):
        warnings.simplefilter("ignore")
        try:
            proto, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=[i["tensor"] for i in inputs],
                                                      output_names=[o["tensor"] for o in outputs], opset=opset,
                                                      custom_op_handlers=dict(HANDLERS))
        except Exception as exc:  # noqa: BLE001 - tf2onnx raises many types
            raise StagingError(f"{card.path}: tf2onnx (opset {opset}) cannot convert the model: {type(exc).__name__}: "
                               f"{(str(exc).strip().splitlines() or [''])[0][:300]}",
                               fix="an op tf2onnx does not support at this opset: try another `tf2onnx.opset`") from None
    missing = _unconverted(proto)
    if missing:
        raise StagingError(f"{card.path}: tf2onnx {tf2onnx.__version__} cannot convert the TensorFlow op(s) "
                           f"{', '.join(missing)} (left unconverted in the graph)",
                           fix="drop the onnx target from the card's `targets:`, or add a handler for the op in "
                               "stages/convert/tf2onnx.py (HANDLERS)")
    _rename_io(proto, {i["tensor"]: i["name"] for i in inputs}, {o["tensor"]: o["name"] for o in outputs},
               card, source.text)
    return proto


@contextmanager
def _optimizers_without(card, skipped: list[str]):
    """tf2onnx's graph optimizers, less `skip_optimizers` (params.yaml), for this conversion.

    tf2onnx 1.17's transpose optimizer is not deterministic: it walks sets of graph nodes, which
    Python orders by memory address, and stops at a different fixed point from one process to the
    next. Measured on a real TF Hub audio model (Basic Pitch): 4 conversions of one frozen graph
    gave 4 different graphs (234 to 237 nodes); without the transpose optimizer, the same 285 nodes
    every time (PYTHONHASHSEED does not help). Byte-stable staging is what lets DVC tell a changed
    model from a rerun, so the registry skips it by default; ONNX Runtime's own transpose optimizer
    removes the redundant Transpose pairs when it loads the model.
    """
    from tf2onnx import optimizer

    known = optimizer._get_optimizers()  # noqa: SLF001 - tf2onnx's table of optimizers, by name
    unknown = sorted(set(skipped) - set(known))
    if unknown:
        raise StagingError(f"{card.path}: params.yaml tf2onnx.skip_optimizers names {unknown[0]!r}, which tf2onnx "
                           f"does not have", fix=f"use names from: {', '.join(known)}")
    original = optimizer._get_optimizers  # noqa: SLF001
    optimizer._get_optimizers = lambda: type(known)((k, v) for k, v in original().items() if k not in skipped)
    try:
        yield
    finally:
        optimizer._get_optimizers = original


def _rename_io(proto, inputs: dict[str, str], outputs: dict[str, str], card, text: bool = False) -> None:
    """Give the graph's inputs and outputs the signature's names, matched by tensor name (`ids:0` -> `ids`),
    in the signature's (sorted) order."""
    graph = proto.graph
    initializers = {i.name for i in graph.initializer}
    real_inputs = [v for v in graph.input if v.name not in initializers]
    got_in, got_out = sorted(v.name for v in real_inputs), sorted(v.name for v in graph.output)
    if got_in != sorted(inputs) or got_out != sorted(outputs):
        raise StagingError(f"{card.path}: tf2onnx produced inputs {got_in} and outputs {got_out}, the frozen "
                           f"graph's are {sorted(inputs)} and {sorted(outputs)}", fix="a tf2onnx bug; report it")
    renames = inputs | outputs
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        value.name = renames.get(value.name, value.name)
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = renames.get(name, name)
        for i, name in enumerate(node.output):
            node.output[i] = renames.get(name, name)
    for field_name in ("input", "output"):  # the signature's order, whatever order tf2onnx used
        values = sorted(getattr(graph, field_name), key=lambda v: (v.name in initializers, v.name))
        del getattr(graph, field_name)[:]
        getattr(graph, field_name).extend(values)
    for value in list(graph.input) + list(graph.output):  # tf2onnx names unknown dims `unk__<counter>`
        if value.name in initializers:
            continue
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_param"):
                dim.dim_param = {0: "batch", 1: "sequence" if text else "dim1"}.get(axis, f"dim{axis}")


def stage(card, raw, out: Path, settings: dict) -> dict:
    import onnx

    from stages import onnxrt
    from stages.convert import onnx_normalize
    from stages.convert.tensorflow import build_and_freeze, finish
    from stages.timing import phase
    from stages.validate import against_source

    with tempfile.TemporaryDirectory(prefix="zoo-tf2onnx-") as work:
        source, gen, graph_def, inputs, outputs = build_and_freeze(card, raw, settings, Path(work))
        with phase("tf2onnx"):
            proto = convert(card, source, settings, graph_def, inputs, outputs)
            model = onnx_normalize.canonical_names(
                onnx_normalize.canonical_initializers(onnx_normalize.normalize(proto, inplace=True)))
            onnx_normalize.save_stable(model, out / "model.onnx", 1 << 62)
        with phase("validate"):
            try:
                onnx.checker.check_model(str(out / "model.onnx"), full_check=True)
            except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
                raise StagingError(f"{card.path}: the converted model fails onnx.checker: "
                                   f"{str(exc).splitlines()[0][:300]}", fix="a tf2onnx bug: try another `tf2onnx.opset`") from None
            sess = onnxrt.session(out / "model.onnx", {"threads": int(settings.get("threads", 1))})

            def run(feeds: dict[str, Any]) -> dict[str, Any]:
                return onnxrt.run(sess, feeds, f"{card.path}")

            validation = against_source(card, source, gen, settings, {"model.onnx": run},
                                        f"{source.described}, deterministic inputs")
        finish(card, source, gen, out)
    model = onnx.load(str(out / "model.onnx"), load_external_data=False)
    import tf2onnx

    return {
        "model": {
            **onnxrt.model_record(model),
            "exporter": f"tf2onnx {tf2onnx.__version__} (from_graph_def: the frozen graph of the tensorflow target)",
            **({"layout": "NHWC"} if any(len(s.shape) == 4 for s in source.inputs) else {}),
            **{k: v for k, v in source.info.items() if k != "keras_name"},
            "golden_data": "test_data_set_0: outputs computed by the source TensorFlow model",
        },
        "validation": validation,
        "preprocessing": source.preprocessing,
        "labels": source.labels,
    }
