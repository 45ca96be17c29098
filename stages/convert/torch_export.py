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
import itertools
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from stages.errors import StagingError


def _export(built, settings: dict, card) -> tuple[Any, str]:
    """ModelProto and the exporter actually used (TorchScript modules need the TorchScript exporter)."""
    import onnx
    import torch

    example = built.make_inputs(2, max(settings["sequence_lengths"]) if built.text else None, 0)
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


def _validate(built, onnx_path: Path, settings: dict, card, onnx_settings: dict):
    import numpy as np
    import torch

    from stages import onnxrt
    from stages.validate import Comparison

    atol = card.validation.atol if card.validation.atol is not None else float(settings["atol"])
    rtol = card.validation.rtol if card.validation.rtol is not None else float(settings["rtol"])
    comparison = Comparison(atol=atol, rtol=rtol)
    sess = onnxrt.session(onnx_path, onnx_settings)
    seqs = settings["sequence_lengths"] if built.text else [None]
    for case, (batch, seq) in enumerate(itertools.product(settings["batch_sizes"], seqs)):
        feeds = built.make_inputs(int(batch), seq, case)
        label = f"batch{batch}" + (f"-seq{seq}" if seq else "")
        with torch.no_grad():
            expected = built.module(*(torch.from_numpy(feeds[n]) for n in built.input_names))
        expected = expected if isinstance(expected, (tuple, list)) else (expected,)
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


def golden_data(built, settings: dict, out: Path) -> None:
    """test_data_set_0 beside model.onnx: deterministic inputs at batch 1, outputs from the PyTorch model."""
    import numpy as np
    import torch

    from stages.golden import write_set

    feeds = built.make_inputs(1, min(settings["sequence_lengths"]) if built.text else None, 0)
    with torch.no_grad():
        result = built.module(*(torch.from_numpy(feeds[n]) for n in built.input_names))
    result = result if isinstance(result, (tuple, list)) else (result,)
    write_set(out, [(n, feeds[n]) for n in built.input_names],
              [(n, np.asarray(r.detach().numpy())) for n, r in zip(built.output_names, result)])


def stage(card, raw, out: Path, settings: dict) -> dict:
    import onnx
    import torch

    from stages import onnxrt
    from stages.convert import onnx_normalize
    from stages.convert.torch_models import build
    from stages.timing import phase

    torch.manual_seed(int(settings.get("seed", 0)))
    torch.set_num_threads(int(settings.get("threads", 1)))
    with tempfile.TemporaryDirectory(prefix="zoo-torch-") as work:
        with phase("build"):
            built = build(card, raw, settings, Path(work))
        with phase("export"):
            proto, exporter = _export(built, settings, card)
            threshold = int(float(settings["external_data_threshold_mb"]) * 1024 * 1024)
            onnx_normalize.save_stable(onnx_normalize.normalize(proto), out / "model.onnx", threshold)
        with phase("validate"):
            try:
                onnx.checker.check_model(str(out / "model.onnx"), full_check=True)
            except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
                raise StagingError(f"{card.path}: the exported model fails onnx.checker: "
                                   f"{str(exc).splitlines()[0][:300]}",
                                   fix="an exporter bug: try the other exporter (params.yaml torch.exporter)") from None
            validation = _validate(built, out / "model.onnx", settings, card, {"threads": 1})
        with phase("golden"):
            golden_data(built, settings, out)
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
