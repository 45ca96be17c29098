"""timm: `model: resnet50.a1_in1k`, `revision: <40 hex>`: the `timm/<model>` repo on the Hugging Face Hub.

The architecture and its arguments come from the repo's config.json, the eval transform from its
`pretrained_cfg` (timm's own `resolve_data_config`), the class names from the config or timm's
ImageNet info. Exported to ONNX by the torch converter.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Literal

from stages import schema
from stages.sources import hub, register
from stages.sources.base import RemoteFile, SourceKind, SourceModel


class TimmSpec(schema.Schema):
    """`source:` of a timm card."""

    kind: Literal["timm"]
    model: schema.matching(re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)?$"),
                           "write timm's name with its pretrained tag, e.g. resnet50.a1_in1k")
    revision: hub.Revision

    @property
    def repo(self) -> str:
        return f"timm/{self.model}"


@register
class Timm(SourceKind):
    """`model: resnet50.a1_in1k`, `revision: <40 hex>`: the `timm/<model>` repo on the Hub."""

    kind, converter, formats = "timm", "torch", ("onnx",)
    describes = frozenset({"preprocessing", "labels"})  # from the source's own metadata
    spec = TimmSpec

    @classmethod
    def remote_files(cls, spec: TimmSpec) -> list[RemoteFile]:
        files = hub.repo_files(spec.repo, spec.revision)
        return hub.select(spec.repo, spec.revision, files, required=("config.json",))

    @classmethod
    def pin(cls, source, pinner, changes: list[str]) -> None:
        from stages.sources.pinning import pin_revision

        pin_revision(source, f"timm/{source['model']}", pinner, changes)

    @classmethod
    def build(cls, card, raw, settings: dict, workdir: Path) -> SourceModel:
        import timm
        from timm.data import resolve_data_config

        from stages.sources._torch import load_state_dict, load_strict, vision

        config = json.loads(raw.file_named("config.json").read_text())
        arch = config.get("architecture") or card.source.model.split(".")[0]
        kwargs = dict(config.get("model_args") or {})
        if "num_classes" in config:
            kwargs.setdefault("num_classes", config["num_classes"])
        module = timm.create_model(arch, pretrained=False, **kwargs).eval()
        state: dict = {}
        for path in [p for p in raw.all("repo") if p.suffix in (".safetensors", ".bin")]:
            state.update(load_state_dict(path, card))
        load_strict(module, state, card)
        data_config = resolve_data_config({}, pretrained_cfg=config.get("pretrained_cfg") or {})  # timm's eval transform
        return vision(module, (1, *data_config["input_size"]), {"architecture": f"timm {arch}"},
                      preprocessing=preprocessing(data_config), labels=labels(config, module.num_classes))


def labels(config: dict, num_classes: int) -> list[str] | None:
    """Class names from the hub config (label_names / label_descriptions), else timm's ImageNet info."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    names, descriptions = config.get("label_names"), config.get("label_descriptions") or {}
    if isinstance(names, list) and len(names) == num_classes:
        return [str(descriptions.get(n, n)) if isinstance(descriptions, dict) else str(n) for n in names]
    subset = infer_imagenet_subset({**(config.get("pretrained_cfg") or {}), "num_classes": num_classes})
    if subset is None:
        return None
    info = ImageNetInfo(subset)
    return [info.index_to_description(i) for i in range(info.num_classes())]


def preprocessing(cfg: dict) -> dict[str, Any] | None:
    """timm's pretrained_cfg, as timm.data.create_transform(is_training=False) applies it."""
    from stages.preprocess import INTERPOLATIONS, image

    size = cfg.get("input_size")
    if not size or len(size) != 3 or size[1] != size[2] or cfg.get("crop_mode", "center") != "center":
        return None  # non-square or squash/border crops: left to a card declaration
    crop_pct = float(cfg.get("crop_pct") or 0.875)  # timm.data.DEFAULT_CROP_PCT
    interpolation = cfg.get("interpolation") or "bilinear"
    if interpolation not in INTERPOLATIONS:
        return None
    return image(layout="NCHW", size=[size[1], size[2]], resize=math.floor(size[1] / crop_pct),
                 interpolation=interpolation, color="RGB" if size[0] == 3 else "L", scale=1 / 255,
                 mean=list(cfg.get("mean") or (0.485, 0.456, 0.406)), std=list(cfg.get("std") or (0.229, 0.224, 0.225)),
                 source=f"timm pretrained_cfg (crop_pct {crop_pct}, crop_mode center)")
