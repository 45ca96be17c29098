"""Class names of a classifier, in output order, staged beside the model as `labels.txt`.

They come from the source's own metadata: torchvision weights' `meta["categories"]`, a Hugging
Face config's `id2label`, timm's ImageNet info for its `in1k` heads, a TorchServe archive's
`index_to_name.json`, Keras applications' ImageNet top. A card whose source has none declares
`labels:` as a list, or a named set that ships in a pinned package:
- `imagenet-1k`: the 1000 ILSVRC-2012 classes in synset order, from timm's package data
  (`imagenet_synsets.txt` + `imagenet_synset_to_lemma.txt`), e.g. "tench, Tinca tinca";
- `imagenet-1k+background`: "background" first, then the same 1000 (TF-slim and TF Hub heads).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from stages.errors import CardError, StagingError

NAMED = ("imagenet-1k", "imagenet-1k+background")
CLASSIFIER_TASKS = ("text-classification", "token-classification", "image-classification")
CLASSIFIER_TAGS = ("classification", "image-classification", "text-classification")


def is_classifier(card) -> bool:
    return any(tag in CLASSIFIER_TAGS for tag in card.tags)


@lru_cache(maxsize=None)
def imagenet_1k() -> tuple[str, ...]:
    """timm's ImageNet-1k class descriptions, read from its package data (no torch import)."""
    import importlib.util

    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise StagingError("the imagenet-1k label set comes from timm's package data, and timm is not installed",
                           fix="install the pinned packages (`make venv`)")
    info = Path(next(iter(spec.submodule_search_locations))) / "data" / "_info"
    synsets = (info / "imagenet_synsets.txt").read_text().split()
    lemmas = dict(line.split("\t", 1) for line in (info / "imagenet_synset_to_lemma.txt").read_text().splitlines() if line)
    assert len(synsets) == 1000, len(synsets)
    return tuple(lemmas[s].strip() for s in synsets)


def named(name: str) -> list[str]:
    if name == "imagenet-1k":
        return list(imagenet_1k())
    if name == "imagenet-1k+background":
        return ["background", *imagenet_1k()]
    raise KeyError(name)


def parse_card(fields) -> tuple[str, ...] | None:
    """A card's `labels:`: a list of class names, or the name of a known set."""
    value = fields.raw("labels", required=False)
    if value is None:
        return None
    if isinstance(value, str):
        if value not in NAMED:
            raise CardError(fields.path, "labels", f"unknown label set {value!r}",
                            f"use one of: {', '.join(NAMED)}, or list the class names")
        return tuple(named(value))
    if not (isinstance(value, list) and value and all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value)):
        raise CardError(fields.path, "labels", f"expected a list of class names or a set name, got {value!r}",
                        "write e.g. `labels: [cat, dog]` or `labels: imagenet-1k`")
    labels = tuple(str(v) for v in value)
    if any("\n" in v or not v.strip() for v in labels):
        raise CardError(fields.path, "labels", "a class name is empty or spans lines", "one name per list item")
    return labels


def hf_labels(config: dict, task: str) -> list[str] | None:
    """A Hugging Face classifier's class names in output order, from its config's id2label."""
    id2label = config.get("id2label") or {}
    if task not in CLASSIFIER_TASKS or not id2label:
        return None
    try:
        return [str(id2label[k]) for k in sorted(id2label, key=int)]
    except ValueError:
        return None


def torchserve_labels(path: Path) -> list[str] | None:
    """A .mar's index_to_name.json ({"0": "cat"} or {"0": ["n0212", "cat"]}), TorchServe's label file."""
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    try:
        ordered = [data[k] for k in sorted(data, key=int)]
    except (ValueError, TypeError):
        return None
    return [str(v[-1] if isinstance(v, list) else v) for v in ordered]


def write(out: Path, labels) -> int | None:
    """labels.txt beside the model: one class name per line, in output order; returns the count."""
    if not labels:
        return None
    if any("\n" in label for label in labels):
        raise StagingError(f"{out}: a class name contains a newline", fix="a malformed label list upstream")
    (out / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    return len(labels)


def read(folder: Path) -> list[str] | None:
    path = folder / "labels.txt"
    return path.read_text(encoding="utf-8").splitlines() if path.is_file() else None


def check_width(card, labels: list[str], outputs: list[dict]) -> None:
    """The first output's per-example size must equal the number of class names."""
    if not outputs:
        return
    dims = list(outputs[0].get("shape") or [])[1:]
    if not dims or not all(isinstance(d, int) and d > 0 for d in dims):
        return  # symbolic: checked when run
    width = 1
    for d in dims:
        width *= d
    if width != len(labels):
        raise StagingError(f"{card.path}: {len(labels)} class names for output {outputs[0].get('name')} of shape "
                           f"{outputs[0].get('shape')} ({width} scores)",
                           fix="fix the card's `labels:` (a set with or without background?)")
