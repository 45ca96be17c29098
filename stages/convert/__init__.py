"""Conversion paths: one module per path, `stages/convert/<name>.py`, each run by one stage per card (stages/shards.py).

A converter's block depends on its own code, its `params.yaml` section and its pins files, so a
converter upgrade reruns exactly the stages that use it. A converter module has one entry point,
`stage(card, raw, out, settings) -> {"model", "validation", "preprocessing", "labels"}`; which
converter stages a card is declared by its source kind (`converter`), never chosen here.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module


@dataclass(frozen=True)
class Converter:
    name: str     # key under `converters` in registry/index.json, and its module stages.convert.<name>
    stage: str    # the stage that runs it, `<stage>@<card>` (a foreach block in each pipeline shard)
    params: str   # its section of params.yaml
    pins: tuple[str, ...]  # its pinned-versions files (DVC dependencies of the stage)
    target: str | None = None  # the `--target` it stages (an extra target format), None: the card's own

    @property
    def cmd(self) -> str:
        """The stage's command, in the shards' foreach template."""
        return "python -m stages stage ${item.card}" + (f" --target {self.target}" if self.target else "")

    @property
    def module(self) -> str:
        return f"{__name__}.{self.name}"

    def run(self):
        return import_module(self.module).stage


CONVERTERS: dict[str, Converter] = {
    "onnx_zoo": Converter("onnx_zoo", "stage-onnx-zoo", "onnx", ("stages/pins/onnx.txt",)),
    "torch": Converter("torch", "stage-torch", "torch",
                       ("stages/pins/torch.txt", "stages/pins/transformers.txt", "stages/pins/onnx.txt")),
    "tensorflow": Converter("tensorflow", "stage-tensorflow", "tensorflow",
                            ("stages/pins/tensorflow.txt", "stages/pins/transformers.txt", "stages/pins/onnx.txt")),
    "tf2onnx": Converter("tf2onnx", "stage-tf2onnx", "tf2onnx",
                         ("stages/pins/tensorflow.txt", "stages/pins/transformers.txt", "stages/pins/tf2onnx.txt",
                          "stages/pins/onnx.txt"), target="onnx"),
}

# The converter that stages an extra target format of a card (`targets:`), by (card format, target).
TARGET_CONVERTERS = {("tensorflow", "onnx"): "tf2onnx", ("keras", "onnx"): "tf2onnx"}


def for_kind(kind_converter: str) -> Converter:
    return CONVERTERS[kind_converter]


def for_card(card, target: str | None = None) -> Converter:
    """The converter staging `card` in `target` (default: the card's own format)."""
    from stages.sources import get_kind

    if target is None or target == card.format:
        return for_kind(get_kind(card.kind).converter_for(card.source))
    if target not in card.targets or (card.format, target) not in TARGET_CONVERTERS:
        from stages.errors import StagingError

        raise StagingError(f"{card.path}: {target!r} is not one of the card's targets "
                           f"({', '.join((card.format, *card.targets))})",
                           fix="add it to the card's `targets:` and run `zoo index`, or stage one of those")
    return CONVERTERS[TARGET_CONVERTERS[(card.format, target)]]
