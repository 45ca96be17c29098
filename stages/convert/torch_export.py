"""PyTorch models to validated, byte-stable ONNX: torchvision, timm, torch.hub, TorchServe, Hugging Face.

Export runs on the CPU in fp32 with the exporter and opset set explicitly from params.yaml
(`torch.exporter`, `torch.opset`) and recorded in the manifest, with dynamic batch (and sequence)
axes. The ONNX model must pass `onnx.checker` and match the PyTorch model on deterministic inputs
at every batch size (and sequence length, for text) in params.yaml, within tolerance; every
failing output is collected before the stage fails with the numbers. The file is normalised
(stages.convert.onnx_normalize) so two exports in two processes give the same bytes; above
`torch.external_data_threshold_mb` the weights go to `model.onnx.data` beside it.
"""

from __future__ import annotations

import io
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from stages.errors import StagingError


def _export(built, gen, settings: dict, card) -> tuple[Any, str]:
    """ModelProto and the exporter actually used (TorchScript modules need the TorchScript exporter)."""
    import onnx
    import torch

    from stages.inputs import Case

    cases = gen.cases()  # traced at the largest case: a dim of size 1 would be specialised away
    largest = max(cases, key=lambda c: (c.batch, c.seq or 0))
    example = gen.feeds(Case("export", largest.batch, largest.seq, 0))
    args = tuple(torch.from_numpy(example[n]) for n in built.input_names)
    exporter = settings["exporter"]
    if isinstance(built.module, torch.jit.ScriptModule):
        exporter = "torchscript"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if exporter == "dynamo":
                dims = {}
                shapes = tuple({axis: dims.setdefault(dim, torch.export.Dim(dim, min=1, max=4096))
                                for axis, dim in built.dynamic.get(name, {}).items()} or None
                               for name in built.input_names)
                if _takes_varargs(built.module):  # forward(self, *args): one entry for the whole tuple
                    shapes = (shapes,)
                program = torch.onnx.export(built.module, args, dynamo=True, opset_version=int(settings["opset"]),
                                            input_names=built.input_names, output_names=built.output_names,
                                            dynamic_shapes=shapes, optimize=True, verbose=False)
                return program.model_proto, exporter
            buffer = io.BytesIO()
            torch.onnx.export(built.module, args, buffer, dynamo=False, opset_version=int(settings["opset"]),
                              input_names=built.input_names, output_names=built.output_names,
                              dynamic_axes=built.dynamic, do_constant_folding=True)
            return onnx.load_from_string(buffer.getvalue()), exporter
        except StagingError:
            raise
        except Exception as exc:
            first = _summary(exc)
            raise StagingError(f"{card.path}: torch.onnx.export ({exporter}, opset {settings['opset']}) failed: "
                               f"{type(exc).__name__}: {first}",
                               fix="try the other exporter in params.yaml (torch.exporter), or fix the model") from None


def _takes_varargs(module) -> bool:
    import inspect

    return any(p.kind is inspect.Parameter.VAR_POSITIONAL
               for p in inspect.signature(module.forward).parameters.values())


def _summary(exc: Exception) -> str:
    """The informative line of an exporter error (torch.export puts it under 'Exception summary')."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "## Exception summary" in lines:
        after = lines[lines.index("## Exception summary") + 1:]
        if after:
            return after[0][:400]
    return (lines or [type(exc).__name__])[0][:400]


def _validate(built, gen, onnx_path: Path, settings: dict, card, onnx_settings: dict):
    import numpy as np

    from stages import onnxrt
    from stages.validate import Comparison, tolerances

    comparison = Comparison(*tolerances(card, settings), defaulted_dims=gen.defaulted_dims)
    sess = onnxrt.session(onnx_path, onnx_settings)
    for case in gen.cases():
        feeds = gen.feeds(case)
        label = case.label
        comparison.fed(label, feeds)
        expected = _run_source(built, feeds, card, label)
        actual = onnxrt.run(sess, feeds, f"{card.path}: {label}")
        if len(expected) != len(built.output_names) or set(actual) != set(built.output_names):
            comparison.failures.append({"output": "*", "case": label, "problem": (
                f"PyTorch returns {len(expected)} outputs, the ONNX model {sorted(actual)}, "
                f"expected {built.output_names}")})
            continue
        for name, ref in zip(built.output_names, expected, strict=True):
            comparison.compare(label, name, actual[name], np.asarray(ref.detach().numpy()))
        comparison.cases += 1
    comparison.raise_if_failed(card.name)
    return comparison.record("pytorch model, deterministic inputs")


def _run_source(built, feeds: dict[str, Any], card, label: str):
    """The PyTorch model's outputs (a tuple), fed by input name; a failure is one line with what was fed."""
    import torch

    from stages.inputs import describe

    try:
        with torch.no_grad():
            result = built.module(*(torch.from_numpy(feeds[n]) for n in built.input_names))
    except Exception as exc:  # noqa: BLE001 - the model's own code raises anything
        raise StagingError(f"{card.path}: the PyTorch model fails on {label} ({describe(feeds)}): "
                           f"{type(exc).__name__}: {_summary(exc)}",
                           fix="declare the inputs it accepts in the card (`inputs:`, see README)") from None
    return result if isinstance(result, (tuple, list)) else (result,)


def golden_data(built, gen, out: Path, card) -> None:
    """test_data_set_0 beside model.onnx: the generator's batch-1 case, outputs from the PyTorch model."""
    import numpy as np

    from stages.golden import write_set

    feeds = gen.feeds(gen.first())
    result = _run_source(built, feeds, card, "golden data")
    write_set(out, [(n, feeds[n]) for n in built.input_names],
              [(n, np.asarray(r.detach().numpy())) for n, r in zip(built.output_names, result)])


def stage(card, raw, out: Path, settings: dict) -> dict:
    import onnx
    import torch

    from stages import onnxrt
    from stages.convert import onnx_normalize
    from stages.convert.torch_models import build
    from stages.inputs import Inputs
    from stages.timing import phase

    torch.manual_seed(int(settings.get("seed", 0)))
    torch.set_num_threads(int(settings.get("threads", 1)))
    with tempfile.TemporaryDirectory(prefix="zoo-torch-") as work:
        with phase("build"):
            built = build(card, raw, settings, Path(work))
            gen = Inputs(built.inputs, card.inputs, settings, card, text=built.text, vocab=built.vocab)
        with phase("export"):
            proto, exporter = _export(built, gen, settings, card)
            threshold = int(float(settings["external_data_threshold_mb"]) * 1024 * 1024)
            onnx_normalize.save_stable(onnx_normalize.normalize(proto), out / "model.onnx", threshold)
        with phase("validate"):
            try:
                onnx.checker.check_model(str(out / "model.onnx"), full_check=True)
            except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
                raise StagingError(f"{card.path}: the exported model fails onnx.checker: "
                                   f"{str(exc).splitlines()[0][:300]}",
                                   fix="an exporter bug: try the other exporter (params.yaml torch.exporter)") from None
            validation = _validate(built, gen, out / "model.onnx", settings, card, {"threads": 1})
        with phase("golden"):
            golden_data(built, gen, out, card)
        for name, path in sorted(built.side_files.items()):
            shutil.copyfile(path, out / name)
    model = onnx.load(str(out / "model.onnx"), load_external_data=False)
    return {
        "model": {
            **onnxrt.model_record(model),
            "exporter": exporter,
            "parameters": int(sum(p.numel() for p in built.module.parameters())) if hasattr(built.module, "parameters") else None,
            **built.info,
            "golden_data": f"test_data_set_0: outputs computed by PyTorch {torch.__version__}",
        },
        "validation": validation,
        "preprocessing": built.preprocessing,
        "labels": built.labels,
    }
