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


def _export(source, gen, settings: dict, card) -> tuple[Any, str]:
    """ModelProto and the exporter actually used (TorchScript modules need the TorchScript exporter)."""
    import onnx
    import torch

    from stages.inputs import Case

    cases = gen.cases()  # traced at the largest case: a dim of size 1 would be specialised away
    largest = max(cases, key=lambda c: (c.batch, c.seq or 0))
    example = gen.feeds(Case("export", largest.batch, largest.seq, 0))
    args = tuple(torch.from_numpy(example[n]) for n in source.input_names)
    exporter = settings["exporter"]
    if isinstance(source.native, torch.jit.ScriptModule):
        exporter = "torchscript"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if exporter == "dynamo":
                dims = {}
                shapes = tuple({axis: dims.setdefault(dim, torch.export.Dim(dim, min=1, max=4096))
                                for axis, dim in source.dynamic.get(name, {}).items()} or None
                               for name in source.input_names)
                if _takes_varargs(source.native):  # forward(self, *args): one entry for the whole tuple
                    shapes = (shapes,)
                program = torch.onnx.export(source.native, args, dynamo=True, opset_version=int(settings["opset"]),
                                            input_names=source.input_names, output_names=source.outputs,
                                            dynamic_shapes=shapes, optimize=True, verbose=False)
                return program.model_proto, exporter
            buffer = io.BytesIO()
            torch.onnx.export(source.native, args, buffer, dynamo=False, opset_version=int(settings["opset"]),
                              input_names=source.input_names, output_names=source.outputs,
                              dynamic_axes=source.dynamic, do_constant_folding=True)
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


def stage(card, raw, out: Path, settings: dict) -> dict:
    import onnx
    import torch

    from stages import golden, onnxrt
    from stages.convert import onnx_normalize
    from stages.sources import get_kind
    from stages.timing import phase
    from stages.validate import against_source, generator

    torch.manual_seed(int(settings.get("seed", 0)))
    torch.set_num_threads(int(settings.get("threads", 1)))
    with tempfile.TemporaryDirectory(prefix="zoo-torch-") as work:
        with phase("build"):
            source = get_kind(card.kind).build(card, raw, settings, Path(work))
            gen = generator(card, source, settings)
        with phase("export"):
            proto, exporter = _export(source, gen, settings, card)
            threshold = int(float(settings["external_data_threshold_mb"]) * 1024 * 1024)
            onnx_normalize.save_stable(onnx_normalize.normalize(proto), out / "model.onnx", threshold)
        with phase("validate"):
            try:
                onnx.checker.check_model(str(out / "model.onnx"), full_check=True)
            except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
                raise StagingError(f"{card.path}: the exported model fails onnx.checker: "
                                   f"{str(exc).splitlines()[0][:300]}",
                                   fix="an exporter bug: try the other exporter (params.yaml torch.exporter)") from None
            sess = onnxrt.session(out / "model.onnx", {"threads": 1})
            runners = {"model.onnx": lambda feeds: onnxrt.run(sess, feeds, f"{card.path}")}
            validation = against_source(card, source, gen, settings, runners, f"{source.described}, deterministic inputs",
                                        record_files=False)
        with phase("golden"):
            golden.write_source(out, card, source, gen)
        for name, path in sorted(source.side_files.items()):
            shutil.copyfile(path, out / name)
    model = onnx.load(str(out / "model.onnx"), load_external_data=False)
    return {
        "model": {
            **onnxrt.model_record(model),
            "exporter": exporter,
            "parameters": int(sum(p.numel() for p in source.native.parameters())) if hasattr(source.native, "parameters") else None,
            **source.info,
            "golden_data": f"test_data_set_0: outputs computed by PyTorch {torch.__version__}",
        },
        "validation": validation,
        "preprocessing": source.preprocessing,
        "labels": source.labels,
    }
