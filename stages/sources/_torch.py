"""What the PyTorch kinds' builders share: safe weight loading, trust checks, the SourceModel of a module.

Weights are loaded safely: safetensors, or pickles through `torch.load(weights_only=True)`, which
refuses anything but tensors and plain containers. Code from a third party (a hubconf.py, a .mar's
model file, a Hub repo's remote code) runs only when the card says `trust_code: true`. torch is
imported inside the functions, never at module level.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stages.errors import StagingError
from stages.inputs import TensorSpec
from stages.sources.base import SourceModel


def module_model(module, inputs: list[TensorSpec], outputs: list[str], **extra: Any) -> SourceModel:
    """A SourceModel over a torch module that takes the inputs positionally and returns a tuple
    (or one tensor) in `outputs` order; its reference runs the module under no_grad."""
    names = [spec.name for spec in inputs]

    def reference(feeds: dict[str, Any]) -> dict[str, Any]:
        import numpy as np
        import torch

        with torch.no_grad():
            result = module(*(torch.from_numpy(feeds[n]) for n in names))
        result = result if isinstance(result, (tuple, list)) else (result,)
        # extra or missing outputs keep their positions, so validation names the difference
        keys = outputs[:len(result)] + [f"output_{i}" for i in range(len(outputs), len(result))]
        return {k: np.asarray(r.detach().numpy()) for k, r in zip(keys, result)}

    return SourceModel(inputs=list(inputs), outputs=list(outputs), reference=reference, native=module,
                       described="pytorch model", **extra)


def vision(module, shape: tuple[int, ...], info: dict, name: str = "input", output: str = "logits",
           **extra: Any) -> SourceModel:
    """An image model: one float input, dynamic batch, the card's (or the weights') spatial shape."""
    return module_model(module, [TensorSpec(name, "float32", ("batch", *shape[1:]))], [output], info=info, **extra)


def load_state_dict(path: Path, card) -> dict:
    """Weights without code: safetensors, or a pickle restricted to tensors (weights_only=True)."""
    import pickle

    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise StagingError(f"{card.path}: {path.name} is a pickle that needs weights_only=False to load ({first})",
                           fix="refusing to unpickle arbitrary objects; pin a safetensors file or plain state dict") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state


def load_strict(module, state: dict, card) -> None:
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise StagingError(f"{card.path}: weights do not fit the architecture (missing {result.missing_keys[:3]}, "
                           f"unexpected {result.unexpected_keys[:3]})",
                           fix="the weights belong to another architecture or variant; check `model:`/`weights:`")


def require_trust(card, what: str) -> None:
    if not card.trust_code:
        raise StagingError(f"{card.path}: staging runs third-party code ({what})",
                           fix="review that code at the pinned version, then set `trust_code: true` in the card")
