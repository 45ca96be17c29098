"""Preprocessing: how an image or a text becomes a staged model's input, recorded in the manifest.

It is taken from the source's own metadata, never guessed:
- torchvision: the weights' `transforms()` (ImageClassification: resize, crop, interpolation, mean/std);
- timm: the model's `pretrained_cfg` (input_size, crop_pct, crop_mode, interpolation, mean/std);
- Keras applications: what the application's own `preprocess_input` does, measured on a probe
  (modes "tf", "torch", "caffe", or a pass-through when the model rescales inside);
- Hugging Face: `preprocessor_config.json` for images, the tokenizer files and maximum length for text.
Sources without such metadata (the ONNX zoo, TF Hub, torch.hub repos, TorchServe archives) need the
card to declare it under `preprocessing:`; `zoo check` names the cards that do not.

An image record (`type: image`) means: open the file, convert it to `color` (RGB, BGR or L); if
`resize` is a number, resize so the shorter side has that length and crop the centre to `size`,
else resize straight to `size` ([height, width]); with `interpolation`; then
`(pixel * scale - mean) / std` per channel, in `layout` (NCHW or NHWC), batch of one, float32.
A text record (`type: text`) names the tokenizer file staged beside the model and the maximum
length. `type: tensor` says the model takes raw tensors, with a note on what they hold.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from stages.errors import CardError, StagingError, ZooError

TYPES = ("image", "text", "tensor")
LAYOUTS = ("NCHW", "NHWC")
COLORS = {"RGB": 3, "BGR": 3, "L": 1}
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                   "merges.txt", "spiece.model", "sentencepiece.bpe.model", "added_tokens.json")
UNBOUNDED = 10**6  # transformers writes int(1e30) as model_max_length when a tokenizer sets none


class RunError(ZooError):
    """`zoo run` cannot prepare or run an input."""

    exit_code = 2


def image(*, layout: str, size: list[int], resize: int | None, interpolation: str, color: str, scale: float,
          mean: list[float], std: list[float], source: str) -> dict[str, Any]:
    channels = COLORS[color]
    mean, std = [float(m) for m in mean], [float(s) for s in std]
    if len(mean) == 1:
        mean = mean * channels
    if len(std) == 1:
        std = std * channels
    return {"type": "image", "layout": layout, "size": [int(size[0]), int(size[1])],
            "resize": None if resize is None else int(resize), "interpolation": interpolation, "color": color,
            "scale": float(scale), "mean": mean, "std": std, "source": source}


def text(*, tokenizer: str, files: list[str], max_length: int, source: str) -> dict[str, Any]:
    return {"type": "text", "tokenizer": tokenizer, "files": sorted(files), "max_length": int(max_length),
            "source": source}


# ----------------------------------------------------------------------------- card declarations

def parse_card(fields) -> dict[str, Any] | None:
    """A card's `preprocessing:` block (for sources that carry none), checked field by field."""
    if fields is None:
        return None
    kind = fields.str("type")
    if kind not in TYPES:
        raise CardError(fields.path, fields.key("type"), f"unknown type {kind!r}", f"use one of: {', '.join(TYPES)}")
    source = fields.str("source", required=False) or "declared in the card"
    if kind == "tensor":
        note = fields.str("note")
        fields.done()
        return {"type": "tensor", "note": note, "source": source}
    if kind == "text":
        tokenizer = fields.str("tokenizer")
        max_length = fields.number("max_length")
        fields.done()
        return text(tokenizer=tokenizer, files=[tokenizer], max_length=int(max_length), source=source)
    layout = fields.str("layout")
    if layout not in LAYOUTS:
        raise CardError(fields.path, fields.key("layout"), f"{layout!r} is not a layout", "write NCHW or NHWC")
    color = fields.str("color")
    if color not in COLORS:
        raise CardError(fields.path, fields.key("color"), f"{color!r} is not a colour order", "write RGB, BGR or L")
    interpolation = fields.str("interpolation")
    if interpolation not in INTERPOLATIONS:
        raise CardError(fields.path, fields.key("interpolation"), f"unknown interpolation {interpolation!r}",
                        f"use one of: {', '.join(INTERPOLATIONS)}")
    size = fields.raw("size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size)):
        raise CardError(fields.path, fields.key("size"), f"expected [height, width], got {size!r}", "write e.g. `size: [224, 224]`")
    resize = fields.raw("resize", required=False)
    if resize is not None and not (isinstance(resize, int) and resize >= max(size)):
        raise CardError(fields.path, fields.key("resize"), f"expected the shorter side's length before the centre "
                        f"crop (at least {max(size)}), got {resize!r}", "write e.g. `resize: 256`, or leave it out "
                        "to resize straight to `size`")
    scale = fields.number("scale")
    vectors = {}
    for key in ("mean", "std"):
        value = fields.raw(key)
        if not (isinstance(value, list) and len(value) in (1, COLORS[color])
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
            raise CardError(fields.path, fields.key(key), f"expected 1 or {COLORS[color]} numbers, got {value!r}",
                            f"write e.g. `{key}: [0.485, 0.456, 0.406]` (per channel, in `color` order)")
        vectors[key] = value
    if any(s == 0 for s in vectors["std"]):
        raise CardError(fields.path, fields.key("std"), "a standard deviation of 0", "write 1 for no scaling")
    fields.done()
    return image(layout=layout, size=size, resize=resize, interpolation=interpolation, color=color, scale=scale,
                 mean=vectors["mean"], std=vectors["std"], source=source)


# ----------------------------------------------------------------------------- from the sources' metadata

def from_torchvision(weights) -> dict[str, Any] | None:
    """torchvision weights' eval transforms (ImageClassification): the numbers its own code applies."""
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


def from_timm(cfg: dict) -> dict[str, Any] | None:
    """timm's pretrained_cfg, as timm.data.create_transform(is_training=False) applies it."""
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


def from_keras(application: str, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """What keras.applications' own preprocess_input does for this application, measured on a probe.

    The applications share imagenet_utils.preprocess_input with mode "tf" (to [-1, 1]), "torch"
    (to [0, 1], then ImageNet mean/std) or "caffe" (RGB to BGR, minus the ImageNet mean); some
    (EfficientNet, ConvNeXt, ...) rescale inside the model and pass the input through.
    """
    import importlib
    import inspect

    import keras
    import numpy as np

    from stages.sources.tensorflow import application_class

    module_name = application_class(application).__module__.rsplit(".", 1)[-1]
    module = importlib.import_module(f"keras.applications.{module_name}")
    probe = np.random.default_rng(0).uniform(0, 255, (1, 4, 4, 3)).astype(np.float32)
    got = np.asarray(module.preprocess_input(probe.copy()), dtype=np.float64)
    candidates = {
        "tf": ("RGB", 1 / 127.5, [1.0] * 3, [1.0] * 3),
        "torch": ("RGB", 1 / 255, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        "caffe": ("BGR", 1.0, [103.939, 116.779, 123.68], [1.0] * 3),
        "none (the model rescales inside)": ("RGB", 1.0, [0.0] * 3, [1.0] * 3),
    }
    for mode, (color, scale, mean, std) in candidates.items():
        x = probe[..., ::-1] if color == "BGR" else probe
        if np.allclose((x * scale - np.asarray(mean)) / np.asarray(std), got, atol=1e-4):
            h, w = (input_shape or (224, 224, 3))[:2]
            interp = inspect.signature(keras.utils.load_img).parameters["interpolation"].default
            return image(layout="NHWC", size=[h, w], resize=None, interpolation=interp, color=color, scale=scale,
                         mean=mean, std=std, source=f"keras.applications.{module_name}.preprocess_input "
                         f"(mode {mode}); resize as keras.utils.load_img(target_size=...)")
    raise StagingError(f"keras.applications.{module_name}.preprocess_input matches none of the known modes",
                       fix="declare `preprocessing:` in the card")


def _pil_name(resample) -> str | None:
    names = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
    return names.get(resample) if isinstance(resample, int) else None


def from_hf_image(config: dict, num_channels: int = 3) -> dict[str, Any] | None:
    """A Hugging Face image processor's settings (resize, crop, rescale, normalize), as its class
    resolved them: `size` and `crop_size` are dicts ({height, width} or {shortest_edge})."""
    size = config.get("size") or {}
    crop = config.get("crop_size") if config.get("do_center_crop") else None
    interpolation = _pil_name(config.get("resample", 2))
    if interpolation is None or config.get("do_resize") is False:
        return None
    if "height" in size and "width" in size and not crop:
        target, resize = [size["height"], size["width"]], None
    elif "shortest_edge" in size and crop:
        target, resize = [crop["height"], crop["width"]], size["shortest_edge"]
    else:
        return None
    normalize = config.get("do_normalize", True)
    return image(layout="NCHW", size=target, resize=resize, interpolation=interpolation,
                 color="RGB" if num_channels == 3 else "L",
                 scale=float(config.get("rescale_factor", 1 / 255)) if config.get("do_rescale", True) else 1.0,
                 mean=list(config.get("image_mean") or [0.5]) if normalize else [0.0],
                 std=list(config.get("image_std") or [0.5]) if normalize else [1.0],
                 source=f"Hugging Face preprocessor_config.json ({config.get('image_processor_type', '?')})")


def fast_tokenizer(folder: Path, workdir: Path) -> Path | None:
    """A repo with only a slow tokenizer (vocab.txt, ...): transformers' own slow-to-fast conversion
    writes the tokenizer.json that `zoo run` reads; None when transformers has no fast version."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), use_fast=True, local_files_only=True)
    except (OSError, ValueError):
        return None
    if not getattr(tokenizer, "is_fast", False):
        return None
    path = workdir / "tokenizer.json"
    path.write_text(tokenizer.backend_tokenizer.to_str(pretty=True), encoding="utf-8")
    return path


def from_hf_text(folder: Path, config: dict, converted: Path | None = None) -> dict[str, Any] | None:
    """Tokenizer files of a Hugging Face repo (staged beside the model) and the maximum length;
    `converted` is a tokenizer.json made by fast_tokenizer for a repo without one."""
    files = [name for name in TOKENIZER_FILES if (folder / name).is_file()]
    if converted is not None and "tokenizer.json" not in files:
        files.append("tokenizer.json")
    if "tokenizer.json" not in files:
        return None
    tok_config = json.loads((folder / "tokenizer_config.json").read_text()) if "tokenizer_config.json" in files else {}
    max_length = tok_config.get("model_max_length")
    where = "tokenizer_config.json model_max_length"
    if not isinstance(max_length, (int, float)) or max_length >= UNBOUNDED:
        max_length, where = config.get("max_position_embeddings"), "config.json max_position_embeddings"
    if not max_length:
        return None
    origin = ("tokenizer.json converted by transformers from the repo's slow tokenizer" if converted is not None
              else "the repo's tokenizer files")
    return text(tokenizer="tokenizer.json", files=files, max_length=int(max_length),
                source=f"{origin}; max length from {where}")


def from_hf(folder: Path, config: dict, task: str, workdir: Path) -> tuple[dict[str, Any] | None, dict[str, Path]]:
    """The preprocessing record of a Hugging Face repo, and files to stage beside the model for it."""
    if task == "image-classification":
        if not (folder / "preprocessor_config.json").is_file():
            return None, {}
        # transformers' own processor class resolves the file (an int `size` means a square for ViT,
        # the shortest edge for CLIP, ...); the slow class, which resizes with PIL as `zoo run` does
        from transformers import AutoImageProcessor

        processor = AutoImageProcessor.from_pretrained(str(folder), local_files_only=True, use_fast=False)
        keys = ("do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale", "rescale_factor",
                "do_normalize", "image_mean", "image_std")
        resolved = {k: getattr(processor, k) for k in keys if getattr(processor, k, None) is not None}
        resolved["resample"] = int(resolved.get("resample", 2))
        resolved["image_processor_type"] = type(processor).__name__
        return from_hf_image(resolved, int(config.get("num_channels", 3))), {}
    if (folder / "tokenizer.json").is_file():
        return from_hf_text(folder, config), {}
    converted = fast_tokenizer(folder, workdir)
    if converted is None:
        return None, {}
    return from_hf_text(folder, config, converted), {"tokenizer.json": converted}


# ----------------------------------------------------------------------------- checks at staging

def check(pre: dict[str, Any] | None, card, model_inputs: list[dict], staged: Path) -> dict[str, Any]:
    """The preprocessing must exist and fit the staged model's first input; returns it."""
    if pre is None:
        raise StagingError(f"{card.path}: no preprocessing: the {card.kind} source carries none and the card declares none",
                           fix="add a `preprocessing:` block to the card (type image, text or tensor; see README)")
    if pre["type"] == "text":
        missing = [f for f in pre["files"] if not (staged / f).is_file()]
        if missing:
            raise StagingError(f"{card.path}: preprocessing names {missing[0]}, which is not staged beside the model",
                               fix="the source has no such tokenizer file; fix `preprocessing.tokenizer`")
    if pre["type"] != "image" or not model_inputs:
        return pre
    shape = list(model_inputs[0].get("shape") or [])
    if len(shape) != 4:
        raise StagingError(f"{card.path}: preprocessing is for images, but the model's input "
                           f"{model_inputs[0].get('name')} has shape {shape}", fix="fix `preprocessing.type`")
    h, w, c = (shape[2], shape[3], shape[1]) if pre["layout"] == "NCHW" else (shape[1], shape[2], shape[3])
    wanted = (pre["size"][0], pre["size"][1], COLORS[pre["color"]])
    for got, want, what in zip((h, w, c), wanted, ("height", "width", "channels")):
        if isinstance(got, int) and got > 0 and got != want:
            raise StagingError(f"{card.path}: preprocessing gives {pre['layout']} {what} {want}, the model's input "
                               f"{model_inputs[0].get('name')} has shape {shape}",
                               fix="fix the card's `preprocessing` (layout, size, color) to match the model")
    return pre


# ----------------------------------------------------------------------------- applying it (zoo run)

def load_image(pre: dict[str, Any], path: Path):
    """One image file as the model's input array (batch of one), as the record says."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("L" if pre["color"] == "L" else "RGB")
    except FileNotFoundError:
        raise RunError(f"{path}: no such image file", fix="give the path of a PNG or JPEG file") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise RunError(f"{path}: not an image Pillow can read ({exc})", fix="give a PNG or JPEG file") from None
    resample = getattr(Image.Resampling, pre["interpolation"].upper())
    h, w = pre["size"]
    if pre["resize"] is None:
        img = img.resize((w, h), resample)
    else:  # torchvision's Resize(int): the shorter side to `resize`, the longer in proportion (truncated)
        short, long = sorted(img.size)
        new_short, new_long = pre["resize"], int(pre["resize"] * long / short)
        new_w, new_h = (new_short, new_long) if img.size[0] <= img.size[1] else (new_long, new_short)
        img = img.resize((new_w, new_h), resample)
        left, top = int(round((new_w - w) / 2.0)), int(round((new_h - h) / 2.0))  # torchvision's CenterCrop
        img = img.crop((left, top, left + w, top + h))
    x = np.asarray(img, dtype=np.float32)
    if x.ndim == 2:
        x = x[..., None]
    if pre["color"] == "BGR":
        x = x[..., ::-1]
    x = (x * np.float32(pre["scale"]) - np.asarray(pre["mean"], np.float32)) / np.asarray(pre["std"], np.float32)
    if pre["layout"] == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[None], dtype=np.float32)


def encode_text(pre: dict[str, Any], folder: Path, value: str, inputs: list[tuple[str, str, list]]) -> dict[str, Any]:
    """One text as the model's feeds (input_ids, attention_mask, token_type_ids), with its tokenizer.json."""
    import numpy as np
    from tokenizers import Tokenizer

    path = folder / pre["tokenizer"]
    if not path.is_file():
        raise RunError(f"{path}: the tokenizer is not here", fix=f"run `dvc pull {folder.as_posix()}`")
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(pre["max_length"])
    enc = tokenizer.encode(value)
    values = {"input_ids": enc.ids, "attention_mask": enc.attention_mask, "token_type_ids": enc.type_ids}
    feeds = {}
    for name, dtype, _shape in inputs:
        if name not in values:
            raise RunError(f"{folder}: the model takes an input {name!r}, which a tokenizer does not make",
                           fix="this model needs its own feeding code")
        feeds[name] = np.asarray([values[name]], dtype=dtype)
    return feeds
