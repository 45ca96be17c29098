"""torchvision: `model: resnet50`, `weights: IMAGENET1K_V2`, exported to ONNX by the torch converter.

The URL and the hash prefix come from torchvision's weights enum (the only place that imports
torchvision at fetch time); the class names and the eval transforms come from the weights' own meta.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any, Literal

from stages import schema
from stages.errors import CardError
from stages.sources import register
from stages.sources.base import RemoteFile, SourceKind, SourceModel

TORCH_HUB_PREFIX_RE = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")


class TorchvisionSpec(schema.Schema):
    """`source:` of a torchvision card."""

    kind: Literal["torchvision"]
    model: schema.matching(re.compile(r"^[a-z0-9_]+$"), "write the torchvision.models name, e.g. resnet50")
    weights: schema.matching(re.compile(r"^[A-Z0-9_]+$"), "write the enum member, e.g. IMAGENET1K_V2")
    url: schema.HttpsUrl | None = None  # overrides the enum's URL (a mirror or a fork)
    sha256: schema.Sha256 | None = None  # the full hash; the file name carries a prefix
    input_shape: schema.Shape | None = None


@register
class Torchvision(SourceKind):
    """`model: resnet50`, `weights: IMAGENET1K_V2`: URL and hash prefix from torchvision's weights enum."""

    kind, converter, formats = "torchvision", "torch", ("onnx",)
    describes = frozenset({"preprocessing", "labels"})  # from the source's own metadata
    spec = TorchvisionSpec

    @staticmethod
    def weights_enum(spec: TorchvisionSpec):
        from torchvision.models import get_model_weights

        try:
            return get_model_weights(spec.model)[spec.weights]
        except (ValueError, KeyError) as exc:
            raise CardError("source", "source.weights", f"torchvision has no {spec.model} weights {spec.weights}: {exc}",
                            "check `model:` and `weights:` against torchvision.models") from None

    @classmethod
    def remote_files(cls, spec: TorchvisionSpec) -> list[RemoteFile]:
        url = spec.url or cls.weights_enum(spec).url
        name = posixpath.basename(url)
        prefix = TORCH_HUB_PREFIX_RE.search(name)
        if spec.sha256 is None and prefix is None:
            raise CardError("source", "source.sha256", f"{name} carries no sha256 prefix",
                            "pin the file's full sha256 in the card")
        return [RemoteFile("weights", name, spec.sha256, url=url, sha256_prefix=prefix.group(1) if prefix else None)]

    @classmethod
    def pin(cls, source, pinner, changes: list[str]) -> None:
        """The full sha256 is optional (the file name carries a prefix): `zoo pin` adds it."""
        from stages.sources.pinning import pin_sha256

        url = source.get("url")
        if url is None:
            url = cls.weights_enum(TorchvisionSpec(kind=cls.kind, model=source["model"], weights=source["weights"])).url
        pin_sha256(source, url, pinner, changes)

    @classmethod
    def build(cls, card, raw, settings: dict, workdir: Path) -> SourceModel:
        import torchvision

        from stages.sources._torch import load_state_dict, load_strict, vision

        spec = card.source
        weights = cls.weights_enum(spec)
        num_classes = len(weights.meta.get("categories") or []) or None
        kwargs = {"num_classes": num_classes} if num_classes else {}
        if spec.model in ("googlenet", "inception_v3"):
            kwargs.update(aux_logits=False, init_weights=False)
        module = torchvision.models.get_model(spec.model, weights=None, **kwargs).eval()
        load_strict(module, load_state_dict(raw.file("weights"), card), card)
        crop = getattr(weights.transforms(), "crop_size", [224])[0]
        shape = spec.input_shape or (1, 3, crop, crop)
        return vision(module, shape, {"architecture": f"torchvision.models.{spec.model}", "weights": spec.weights},
                      labels=list(weights.meta.get("categories") or []) or None,  # the weights' own meta
                      preprocessing=preprocessing(weights))


def preprocessing(weights) -> dict[str, Any] | None:
    """torchvision weights' eval transforms (ImageClassification): the numbers its own code applies."""
    from stages.preprocess import image

    transform = weights.transforms()
    needed = ("crop_size", "resize_size", "mean", "std", "interpolation")
    if not all(hasattr(transform, k) for k in needed):
        return None
    crop, resize = list(transform.crop_size), list(transform.resize_size)
    if len(resize) != 1:
        return None
    size = crop * 2 if len(crop) == 1 else crop
    return image(layout="NCHW", size=size, resize=resize[0], interpolation=transform.interpolation.value,
                 color="RGB", scale=1 / 255, mean=list(transform.mean), std=list(transform.std),
                 source=f"torchvision {type(transform).__name__} of the weights' transforms()")
