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


def _load_tensors(folder: Path, prefix: str) -> list[Any]:
    import onnx
    from onnx import numpy_helper

    files = sorted(folder.glob(f"{prefix}_*.pb"), key=lambda p: int(p.stem.split("_")[1]))
    return [(onnx.load_tensor(str(p)).name, numpy_helper.to_array(onnx.load_tensor(str(p)))) for p in files]


def _reference_cases(out: Path, inputs, sess, comparison, card) -> int:
    """Run every staged test_data_set_* and compare with its outputs; returns how many sets ran."""
    from stages.onnxrt import run

    sets = sorted(out.glob("test_data_set_*"), key=lambda p: int(p.name.rsplit("_", 1)[1]))
    names = [spec.name for spec in inputs]
    out_names = [o.name for o in sess.get_outputs()]
    for folder in sets:
        tensors = _load_tensors(folder, "input")
        if len(tensors) != len(names):
            raise StagingError(f"{card.path}: {folder.name} has {len(tensors)} inputs, the model takes {len(names)}",
                               fix="the test data belongs to another model or version; fix `source.test_data`")
        by_name = all(name in names for name, _ in tensors)
        feeds = {(name if by_name else names[i]): value for i, (name, value) in enumerate(tensors)}
        outputs = run(sess, feeds, f"{card.path}: {folder.name}")
        expected = _load_tensors(folder, "output")
        for i, (name, value) in enumerate(expected):
            key = name if name in outputs else out_names[i]
            comparison.compare(folder.name, key, outputs[key], value)
        comparison.cases += 1
    return len(sets)


def _reference_golden(model, inputs, out: Path, settings: dict) -> None:
    """test_data_set_0 for a card without the zoo's test data: batch-1 deterministic inputs, outputs
    from onnx.reference.ReferenceEvaluator, the spec's own executable definition of each operator."""
    from onnx.reference import ReferenceEvaluator

    from stages import onnxrt
    from stages.golden import write_set

    feeds = onnxrt.deterministic_inputs(inputs, 1, settings, case=0)
    results = ReferenceEvaluator(model).run(None, feeds)
    write_set(out, [(spec.name, feeds[spec.name]) for spec in inputs],
              [(o.name, r) for o, r in zip(model.graph.output, results)])


def stage(card, raw, out: Path, settings: dict) -> dict:
    """Stage into `out` (a fresh temp folder) and return the manifest's model/validation sections."""
    from stages import onnxrt
    import onnx

    from stages.archives import extract_matching
    from stages.validate import Comparison, check_finite

    model_file = raw.file("model")
    model = _check(model_file, card)
    zoo_sets = raw.has("test_data")
    inputs, outputs = onnxrt.io_specs(model)
    shutil.copyfile(model_file, out / "model.onnx")
    if zoo_sets:
        written = extract_matching(raw.file("test_data"), TEST_FILE_RE, out, TEST_REL_RE)
        if not any(w.endswith(".pb") and "/output_" in w for w in written):
            raise StagingError(f"{card.path}: {raw.file('test_data').name} holds no test_data_set_*/output_*.pb",
                               fix="point `source.test_data` at the zoo's <model>.tar.gz, or remove it")
    else:  # golden data from onnx's own reference evaluator (pure numpy, not ONNX Runtime) on the upstream file
        _reference_golden(model, inputs, out, settings)
    sess = onnxrt.session(out / "model.onnx", settings)
    atol = card.validation.atol if card.validation.atol is not None else float(settings["atol"])
    rtol = card.validation.rtol if card.validation.rtol is not None else float(settings["rtol"])
    comparison = Comparison(atol=atol, rtol=rtol)
    batches = list(settings["batch_sizes"]) if onnxrt.has_batch_dim(inputs) else [None]
    for i, batch in enumerate(batches):
        feeds = onnxrt.deterministic_inputs(inputs, batch or 1, settings, case=i)
        label = f"generated-batch{batch}" if batch else "generated"
        comparison.failures += check_finite(onnxrt.run(sess, feeds, f"{card.path}: {label}"), label)
    _reference_cases(out, inputs, sess, comparison, card)
    comparison.raise_if_failed(card.name)
    validation = comparison.record("zoo test_data_set" if zoo_sets else "onnx.reference evaluator")
    validation["generated_runs"] = len(batches)
    return {
        "model": {
            **onnxrt.model_record(model),
            "staged_as_downloaded": True,
            "golden_data": ("the ONNX zoo's test_data_set_*" if zoo_sets else
                            f"test_data_set_0: outputs computed by onnx {onnx.__version__}'s reference evaluator"),
        },
        "validation": validation,
    }
