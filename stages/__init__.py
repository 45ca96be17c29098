"""A git + DVC model registry: pinned, verified, validated, byte-stable model staging.

Importing this package is cheap on purpose: the CLI, `zoo check` and the stages of ONNX-zoo
cards must never pay for torch, tensorflow or transformers.
"""

import os as _os

# TensorFlow's C++ logs (CUDA probing on a CPU machine, oneDNN notes) are noise in every process
# of ours, and libraries (transformers) may import TensorFlow before our code does: quiet them
# before any of that happens. The few lines absl prints before its logging starts ignore a value
# set here; only one set before the process starts hides them (the Makefile and the sandbox do).
# An explicit TF_CPP_MIN_LOG_LEVEL wins.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"
