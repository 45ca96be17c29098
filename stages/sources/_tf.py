"""What the TensorFlow-side kinds' builders share: signatures as TensorSpecs, saving a serving
function as a SavedModel signature. TensorFlow is imported inside the functions (stages.frameworks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stages.inputs import TensorSpec

SERVING = "serving_default"


def signature_specs(fn) -> list[TensorSpec]:
    _, kwargs = fn.structured_input_signature
    return [TensorSpec(name, spec.dtype.as_numpy_dtype.__name__, tuple(spec.shape.as_list()))
            for name, spec in sorted(kwargs.items())]


def numpy_dict(result) -> dict[str, Any]:
    return {k: v.numpy() for k, v in result.items()}


def through_saved_model(serve, tracked: dict[str, Any], workdir: Path, tf):
    """Save `serve` as a SavedModel's serving_default signature, load it back, return that signature.

    Keras-built models (keras, huggingface) go through this so every TensorFlow kind is frozen from
    a SavedModel signature (named tensors in, a dict of named tensors out).
    """
    module = tf.Module()
    for key, value in tracked.items():
        setattr(module, key, value)
    module.serve = serve
    path = workdir / "savedmodel"
    tf.saved_model.save(module, str(path), signatures={SERVING: serve.get_concrete_function()})
    loaded = tf.saved_model.load(str(path))
    fn = loaded.signatures[SERVING]
    fn._zoo_keepalive = loaded  # noqa: SLF001 - the function needs its object graph alive
    return fn
