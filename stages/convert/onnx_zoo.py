"""Staging an ONNX-zoo model: the file itself, checked, run and compared with the zoo's reference data.

The staged `model.onnx` is the downloaded file, byte for byte (so DVC stores it once with the raw
copy). It must pass `onnx.checker` with full_check, run in ONNX Runtime on deterministic inputs
(at two batch sizes when the batch dim is symbolic), and, when the card points at the zoo's
test data, match its reference outputs within tolerance. The reference data sets are staged
beside the model (`test_data_set_*/`), the zoo's own convention. Without them, golden data is made
from onnx's reference evaluator (numpy, independent of ONNX Runtime) on deterministic inputs, and
ONNX Runtime is compared with it.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from stages.errors import StagingError

TEST_FILE_RE = re.compile(r"(^|/)test_data_set_\d+/(input|output)_\d+\.pb$")
TEST_REL_RE = re.compile(r"test_data_set_\d+/(input|output)_\d+\.pb$")


def _check(model_file: Path, card) -> Any:
    import onnx

    try:
        onnx.checker.check_model(str(model_file), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0][:300]
        raise StagingError(f"{card.path}: {model_file.name} fails onnx.checker: {first}",
                           fix="the upstream file is not a valid ONNX model; pin another file or version") from None
    except Exception as exc:  # protobuf DecodeError and friends: not ONNX at all
        raise StagingError(f"{card.path}: {model_file.name} is not a readable ONNX model ({type(exc).__name__}: "
                           f"{str(exc)[:200]})", fix="check that `source` points at the .onnx file") from None
    model = onnx.load(str(model_file), load_external_data=False)
    if any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer):
        raise StagingError(f"{card.path}: {model_file.name} keeps weights in external data files",
                           fix="onnx-zoo cards stage single-file models; pin the zoo's single-file variant")
    return model


def _reference_cases(out: Path, inputs, sess, comparison, card) -> int:
    """Run every staged test_data_set_* and compare with its outputs; returns how many sets ran."""
    from stages import golden
    from stages.onnxrt import run

    names = [spec.name for spec in inputs]
    out_names = [o.name for o in sess.get_outputs()]
    sets = golden.sets(out)
    for folder in sets:
        where = f"{card.path}: {folder.name}"
        feeds = golden.by_name(golden.read_tensors(folder, "input"), names, where)
        outputs = run(sess, feeds, where)
        expected = golden.by_name(golden.read_tensors(folder, "output"), out_names, where, "outputs")
        comparison.fed(folder.name, feeds)
        for name, value in expected.items():
            comparison.compare(folder.name, name, outputs[name], value)
        comparison.cases += 1
    return len(sets)


def reference_run(model, feeds: dict[str, Any], where: str) -> list[Any]:
    """onnx.reference's outputs; a failure inside it is one line naming the op and what was fed."""
    from onnx.reference import ReferenceEvaluator

    from stages.inputs import describe

    try:
        return ReferenceEvaluator(model, new_ops=reference_fixes()).run(None, feeds)
    except Exception as exc:  # noqa: BLE001 - the evaluator raises whatever numpy raises
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise StagingError(f"{where}: onnx's reference evaluator failed{_failing_op(exc)} on {describe(feeds)}: "
                           f"{type(exc).__name__}: {first}",
                           fix="declare the model's inputs in the card (`inputs:` with shapes and values it "
                               "accepts, see README), or give the card the zoo's test data") from None


def reference_fixes() -> list:
    """Operators whose onnx.reference implementation is wrong, replaced for golden data.

    BatchNormalization before opset 14 tells inference (one output) from training (five outputs)
    by its output count; onnx 1.23's reference (`BatchNormalization_9`) instead takes the batch's
    own statistics whenever `momentum` is set, which exporters always write (Paddle2ONNX's PP-OCRv4
    recognizer, opset 12: its golden outputs were off by 0.27; onnx/onnx#8442 fixes it upstream).
    Here the mode follows the spec: one output and no `training_mode` is inference, with the running
    statistics; otherwise the batch's own statistics normalise, and the extra outputs are the
    updated running mean and variance (then, before opset 14, the batch mean and variance).
    """
    import numpy as np
    from onnx.reference.op_run import OpRun

    class BatchNormalization(OpRun):
        op_domain = ""

        def _run(self, x, scale, bias, mean, var, epsilon=None, momentum=None, training_mode=None, **_):
            outputs = len(self.onnx_node.output)
            axes = (0, *range(2, x.ndim))
            shape = (1, -1) + (1,) * (x.ndim - 2)
            eps = 1e-5 if epsilon is None else epsilon
            training = outputs > 1 or bool(training_mode)
            use_mean, use_var = (x.mean(axis=axes), x.var(axis=axes)) if training else (mean, var)
            y = ((x - use_mean.reshape(shape)) / np.sqrt(use_var.reshape(shape) + eps) * scale.reshape(shape)
                 + bias.reshape(shape)).astype(x.dtype)
            if not training:
                return (y,)
            m = 0.9 if momentum is None else momentum
            running = [(mean * m + use_mean * (1 - m)).astype(mean.dtype), (var * m + use_var * (1 - m)).astype(var.dtype)]
            return tuple([y, *running, use_mean.astype(mean.dtype), use_var.astype(var.dtype)][:outputs])

    return [BatchNormalization]


def _failing_op(exc: BaseException) -> str:
    """` in op Concat (node 'concat_3')`: the innermost operator on the traceback, when there is one."""
    from onnx.reference.op_run import OpRun

    found = ""
    tb = exc.__traceback__
    while tb is not None:
        this = tb.tb_frame.f_locals.get("self")
        if isinstance(this, OpRun):
            node = getattr(this, "onnx_node", None)
            name = getattr(node, "name", "") or ""
            found = f" in op {getattr(node, 'op_type', type(this).__name__)}" + (f" (node {name!r})" if name else "")
        tb = tb.tb_next
    return found


def _reference_golden(model, gen, out: Path, card) -> None:
    """test_data_set_0 for a card without the zoo's test data: the generator's batch-1 case, outputs
    from onnx.reference.ReferenceEvaluator, the spec's own executable definition of each operator."""
    from stages.golden import write_set

    feeds = gen.feeds(gen.first())
    results = reference_run(model, feeds, f"{card.path}: golden data")
    write_set(out, [(spec.name, feeds[spec.name]) for spec in gen.specs],
              [(o.name, r) for o, r in zip(model.graph.output, results)])


def stage(card, raw, out: Path, settings: dict) -> dict:
    """Stage into `out` (a fresh temp folder) and return the manifest's model/validation sections."""
    import onnx

    from stages import onnxrt
    from stages.archives import extract_matching
    from stages.inputs import Inputs
    from stages.validate import Comparison, check_finite, tolerances

    model_file = raw.file("model")
    model = _check(model_file, card)
    zoo_sets = raw.has("test_data")
    inputs, outputs = onnxrt.io_specs(model)
    gen = Inputs(inputs, card.inputs, settings, card)
    shutil.copyfile(model_file, out / "model.onnx")
    if zoo_sets:
        test_data = raw.file("test_data")
        written = extract_matching(test_data, TEST_FILE_RE, out, TEST_REL_RE)
        if not any(w.endswith(".pb") and "/output_" in w for w in written):
            raise StagingError(f"{card.path}: {test_data.name} holds no test_data_set_*/output_*.pb",
                               fix="point `source.test_data` at the zoo's <model>.tar.gz, or remove it")
    else:  # golden data from onnx's own reference evaluator (pure numpy, not ONNX Runtime) on the upstream file
        _reference_golden(model, gen, out, card)
    sess = onnxrt.session(out / "model.onnx", settings)
    comparison = Comparison(*tolerances(card, settings), defaulted_dims=gen.defaulted_dims)
    cases = gen.cases()
    for case in cases:
        feeds = gen.feeds(case)
        label = f"generated-{case.label}"
        comparison.fed(label, feeds)
        comparison.failures += check_finite(onnxrt.run(sess, feeds, f"{card.path}: {label}"), label)
    _reference_cases(out, inputs, sess, comparison, card)
    comparison.raise_if_failed(card.name)
    validation = comparison.record("zoo test_data_set" if zoo_sets else "onnx.reference evaluator")
    validation["generated_runs"] = len(cases)
    return {
        "model": {
            **onnxrt.model_record(model),
            "staged_as_downloaded": True,
            "golden_data": ("the ONNX zoo's test_data_set_*" if zoo_sets else
                            f"test_data_set_0: outputs computed by onnx {onnx.__version__}'s reference evaluator"),
        },
        "validation": validation,
    }
