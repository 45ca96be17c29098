"""TorchServe `.mar` archives (a zip with MAR-INF/MANIFEST.json), exported to ONNX by the torch converter.

A TorchScript archive loads without code; an eager one imports its model file, so its card needs
`trust_code: true`. Class names come from the archive's index_to_name.json.
"""

from __future__ import annotations

import json
import posixpath
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator

from stages import schema
from stages.errors import StagingError
from stages.sources import register
from stages.sources.base import RemoteFile, SourceKind, SourceModel


def _mar(url: str) -> str:
    if not url.endswith(".mar"):
        raise schema.invalid(f"{url!r} is not a .mar archive", "point it at the .mar file")
    return url


class TorchServeSpec(schema.Schema):
    """`source:` of a torchserve card."""

    kind: Literal["torchserve"]
    url: Annotated[schema.HttpsUrl, AfterValidator(_mar)]
    sha256: schema.Sha256
    input_shape: schema.Shape


@register
class TorchServe(SourceKind):
    """A TorchServe `.mar` (a zip with MAR-INF/MANIFEST.json); eager archives run code: `trust_code`."""

    kind, converter, formats = "torchserve", "torch", ("onnx",)
    describes = frozenset({"labels"})  # index_to_name.json, TorchServe's label file
    spec = TorchServeSpec

    @classmethod
    def remote_files(cls, spec: TorchServeSpec) -> list[RemoteFile]:
        return [RemoteFile("archive", posixpath.basename(spec.url), spec.sha256, url=spec.url)]

    @classmethod
    def pin(cls, source, pinner, changes: list[str]) -> None:
        from stages.sources.pinning import pin_sha256

        pin_sha256(source, source["url"], pinner, changes)

    @classmethod
    def build(cls, card, raw, settings: dict, workdir: Path) -> SourceModel:
        import importlib.util
        import inspect
        import sys

        import torch

        from stages.archives import check_entry_name, extract_zip
        from stages.labels import torchserve_labels
        from stages.sources._torch import load_state_dict, load_strict, require_trust, vision

        archive = raw.file("archive")
        folder = workdir / "mar"
        names = extract_zip(archive, folder)
        if "MAR-INF/MANIFEST.json" not in names:
            raise StagingError(f"{card.path}: {archive.name} has no MAR-INF/MANIFEST.json",
                               fix="not a TorchServe archive; check `source.url`")
        model = json.loads((folder / "MAR-INF/MANIFEST.json").read_text()).get("model", {})
        serialized = folder / check_entry_name(archive, model.get("serializedFile") or "")
        if not serialized.is_file():
            raise StagingError(f"{card.path}: the manifest names serializedFile {model.get('serializedFile')!r}, "
                               "which the archive lacks", fix="the archive is incomplete; pin another one")
        info = {"architecture": f"torchserve {model.get('modelName')}", "handler": model.get("handler")}
        labels = torchserve_labels(folder / "index_to_name.json")
        if not model.get("modelFile"):
            module = torch.jit.load(str(serialized), map_location="cpu").eval()
            return vision(module, card.source.input_shape, info | {"mode": "torchscript"}, labels=labels)
        require_trust(card, f"{archive.name}'s {model['modelFile']}")
        path = folder / check_entry_name(archive, model["modelFile"])
        spec = importlib.util.spec_from_file_location(f"zoo_mar_{card.name.replace('-', '_')}", path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        classes = [c for _, c in inspect.getmembers(mod, inspect.isclass)
                   if issubclass(c, torch.nn.Module) and c.__module__ == mod.__name__]
        if len(classes) != 1:
            raise StagingError(f"{card.path}: {model['modelFile']} defines {len(classes)} nn.Module classes, not one",
                               fix="TorchServe's convention is one model class per model file")
        module = classes[0]()
        load_strict(module, load_state_dict(serialized, card), card)
        return vision(module.eval(), card.source.input_shape, info | {"mode": "eager"}, labels=labels)
