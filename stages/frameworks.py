"""Framework start-up, in one leaf module: TensorFlow quiet, on the CPU and single-threaded; torch
loaded before TensorFlow when a process may use both. Imports nothing of the registry's own, so
any layer (converters, `zoo verify`, the Keras source kind, the tests) can call it without cycles.
"""

from __future__ import annotations

import os
import sys


def import_tf():
    """TensorFlow, quietly, on the CPU, single-threaded (bit-reproducible runs); imported on use only."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TF's C++ logs (CUDA probing, oneDNN notes): noise here
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    if "tensorflow" not in sys.modules:
        preload_torch()
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialised in this process: keep what it has
        pass
    tf.config.optimizer.set_experimental_options(RUNTIME_OPTIONS)
    return tf


# Grappler's remapper must not rewrite the graphs we run. Measured with tensorflow-cpu 2.21.0 on
# x86-64 (oneDNN on by default): in a FROZEN graph (gamma and beta are constants), the remapper
# fuses Keras's LayerNormalization into oneDNN's layer norm and the fused op uses epsilon 1e-3
# whatever the layer says (BERT's is 1e-12): a real sentence encoder's frozen model.pb then differs
# from its own source by 0.24 (last_hidden_state), while the same graph with remapping off matches
# to 2e-6. The unfrozen graph reads gamma and beta from variables and is not fused. So every
# TensorFlow run of the registry (validation, golden data, `zoo verify`) has remapping off, and the
# manifest of a frozen graph says so (`model.runtime`); the README tells users to do the same.
RUNTIME_OPTIONS = {"remapping": False}
RUNTIME_NOTE = ("run with grappler remapping off: tf.config.optimizer.set_experimental_options({'remapping': False}) "
                "(TensorFlow 2.21's oneDNN layer-norm fusion ignores the graph's epsilon on frozen graphs)")


def preload_torch() -> None:
    """Import torch and its triton before TensorFlow, when this process may use torch at all.

    With TensorFlow already loaded, importing triton (which transformers does through
    torch._dynamo) segfaults in triton/knobs.py (measured: tensorflow 2.21.0, torch 2.14.1 and the
    triton it pins); the other order works. `zoo stage` sets USE_TORCH=0 for TensorFlow stages
    (transformers then never imports torch), so this costs nothing there.
    """
    import importlib
    import importlib.util

    if os.environ.get("USE_TORCH", "").upper() in ("0", "FALSE", "NO", "OFF"):
        return
    for name in ("torch", "triton"):
        if name not in sys.modules and importlib.util.find_spec(name) is not None:
            importlib.import_module(name)


def only_framework(converter: str, *, from_pytorch: bool = False) -> None:
    """Tell transformers which framework this process stages with, before it is imported.

    transformers imports every framework it finds installed, unless told not to: a stage builds
    with one framework only (torch for the torch converter; TensorFlow for the others, plus torch
    when a TensorFlow model is built from PyTorch weights), and importing the other costs seconds.
    """
    import os

    if converter == "torch":
        os.environ.setdefault("USE_TF", "0")
    elif not from_pytorch:
        os.environ.setdefault("USE_TORCH", "0")
