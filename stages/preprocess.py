"""Preprocessing: how an image or a text becomes a staged model's input, recorded in the manifest.

This module is the record (its schema, a card's declaration, the staging check) and how to apply
it (`zoo run`). It is taken from the source's own metadata, never guessed; each source kind
extracts it next to its builder (stages/sources/<kind>.py, `preprocessing`):
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

from pathlib import Path
from typing import Any

from stages.errors import CardError, RunError, StagingError

TYPES = ("image", "text", "tensor")
LAYOUTS = ("NCHW", "NHWC")
COLORS = {"RGB": 3, "BGR": 3, "L": 1}
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")


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
