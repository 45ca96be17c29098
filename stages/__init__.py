"""A git + DVC model registry: pinned, verified, validated, byte-stable model staging.

Importing this package is cheap on purpose: the CLI, `zoo check` and the stages of ONNX-zoo
cards must never pay for torch, tensorflow or transformers.
"""

__version__ = "0.1.0"
