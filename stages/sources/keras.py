"""Keras applications: `application: MobileNetV2`, `weights: imagenet`.

The weight file's name, URL and hash come from keras.applications itself (the only place that
imports TensorFlow at fetch time), its preprocessing from the application's own
`preprocess_input`, measured on a probe. The tensorflow converter stages the model as
`model.keras` and `model.h5` and freezes it into `model.pb`.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator

from stages import schema
from stages.errors import CardError, StagingError
from stages.sources import register
from stages.sources.base import RemoteFile, SourceKind, SourceModel

MD5_RE = re.compile(r"^[0-9a-f]{32}$")
RESERVED = ("weights", "include_top", "input_shape", "input_tensor")  # the application's own arguments


def _not_reserved(kwargs: tuple) -> tuple:
    reserved = set(RESERVED) & {k for k, _ in kwargs}
    if reserved:
        raise schema.invalid(f"{sorted(reserved)[0]!r} has its own field",
                             "write it as `source.<field>` instead of under kwargs")
    return kwargs


class KerasSpec(schema.Schema):
    """`source:` of a keras card."""

    kind: Literal["keras"]
    application: schema.matching(re.compile(r"^[A-Z][A-Za-z0-9]+$"), "write the class name, e.g. MobileNetV2")
    weights: schema.one_of(("imagenet",), "weights", "use `weights: imagenet` (the only weights keras.applications "
                                                      "publishes)")
    include_top: schema.Flag = True
    # Keras's convention: no batch dim
    input_shape: schema.shape("[224, 224, 3] (no batch dim, as keras.applications)") | None = None
    kwargs: Annotated[schema.mapping("{alpha: 0.35}", (bool, int, float, str), "a mapping of plain values"),
                      AfterValidator(_not_reserved)] = ()
    url: schema.HttpsUrl | None = None  # overrides the URL Keras names (a mirror)
    sha256: schema.Sha256 | None = None  # required where Keras publishes no hash (`zoo pin` writes it)


@register
class KerasApplication(SourceKind):
    """`application: MobileNetV2`, `weights: imagenet`: file name, URL and hash from keras.applications."""

    kind, converter, formats = "keras", "tensorflow", ("keras",)
    describes = frozenset({"preprocessing", "labels"})  # from the source's own metadata
    extra_targets = ("onnx",)
    spec = KerasSpec

    @classmethod
    def remote_files(cls, spec: KerasSpec) -> list[RemoteFile]:
        url, name, file_hash = weights_file(spec.application, spec.include_top, spec.input_shape, dict(spec.kwargs))
        url = spec.url or url
        if spec.sha256:
            return [RemoteFile("weights", name, spec.sha256, url=url)]
        if file_hash is None:
            raise CardError("source", "source.sha256",
                            f"keras.applications.{spec.application} publishes no hash for {name}",
                            "pin the file's sha256 in the card (`zoo pin` downloads it once and writes it)")
        if MD5_RE.match(file_hash):
            return [RemoteFile("weights", name, None, url=url, md5=file_hash)]
        return [RemoteFile("weights", name, file_hash, url=url)]

    @classmethod
    def pin(cls, source, pinner, changes: list[str]) -> None:
        """Hash the weight file Keras names (Keras publishes md5s, or nothing, for most)."""
        from stages.sources.pinning import missing_sha, pin_sha256

        if not missing_sha(source):
            return
        shape = source.get("input_shape")
        include_top = source.get("include_top")
        url, _, _ = weights_file(source["application"], True if include_top is None else include_top,
                                 tuple(shape) if shape else None, dict(source.get("kwargs") or {}))
        pin_sha256(source, source.get("url") or url, pinner, changes)

    @classmethod
    def build(cls, card, raw, settings: dict, workdir: Path) -> SourceModel:
        from stages.frameworks import import_tf
        from stages.sources._tf import signature_specs, through_saved_model

        tf = import_tf()
        import keras

        spec = card.source
        keras.utils.set_random_seed(int(settings["seed"]))
        weights = raw.file("weights")
        try:
            model = application_class(spec.application)(weights=str(weights), include_top=spec.include_top,
                                                        input_shape=spec.input_shape, **dict(spec.kwargs))
        except (ValueError, OSError) as exc:
            raise StagingError(f"{card.path}: keras.applications.{spec.application} cannot load {weights.name}: "
                               f"{str(exc).strip().splitlines()[0][:300]}",
                               fix="the weights do not fit these arguments; check `input_shape`, `include_top`, "
                                   "`kwargs`") from None
        input_name = model.layers[0].name if model.layers else "input"
        output_name = model.layers[-1].name
        signature = tf.TensorSpec([None, *model.inputs[0].shape[1:]], tf.float32, name=input_name)

        @tf.function(input_signature=[signature])
        def serve(x):
            return {output_name: model(x, training=False)}

        fn = through_saved_model(serve, {"model": model}, workdir, tf)

        def reference(feeds: dict[str, Any]) -> dict[str, Any]:
            return {output_name: model(feeds[input_name], training=False).numpy()}

        from stages import labels

        # An ImageNet top: the 1000 classes of Keras's decode_predictions (ILSVRC-2012 synset order).
        imagenet_top = spec.include_top and spec.weights == "imagenet" and model.outputs[0].shape[-1] == 1000
        return SourceModel(inputs=signature_specs(fn), outputs=[output_name], reference=reference, native=fn,
                           described="tensorflow Keras model built from the downloaded weights", keras_model=model,
                           preprocessing=preprocessing(spec.application, tuple(model.inputs[0].shape[1:])),
                           labels=labels.named("imagenet-1k") if imagenet_top else None,
                           info={"architecture": f"keras.applications.{spec.application}", "keras_name": model.name,
                                 "parameters": int(model.count_params())})


class _Resolved(Exception):  # noqa: N818 - a signal, not an error: Keras asked for this file
    def __init__(self, fname: str, origin: str, file_hash: str | None):
        super().__init__(fname)
        self.fname, self.origin, self.file_hash = fname, origin, file_hash


def application_class(name: str):
    from stages.frameworks import import_tf

    import_tf()
    import keras

    cls = getattr(keras.applications, name, None)
    if cls is None or not callable(cls):
        raise CardError("source", "source.application", f"keras.applications has no {name}",
                        "use a class name from keras.applications, e.g. MobileNetV2, ResNet50, ConvNeXtTiny")
    return cls


def weights_file(application: str, include_top: bool, input_shape: tuple | None,
                 kwargs: dict) -> tuple[str, str, str | None]:
    """(url, file name, hash) of an application's imagenet weights, exactly as Keras would download them.

    Keras computes the name from the architecture's arguments (alpha, input rows, include_top...)
    inside each application function; rather than copy that logic for thirty applications, the
    application is built with its own `get_file` intercepted, which records what Keras asks for and
    stops before any download.
    """
    from keras.src.utils import file_utils

    cls = application_class(application)
    real = file_utils.get_file
    signature = inspect.signature(real)

    def intercept(*args, **kw):
        bound = signature.bind(*args, **kw)
        bound.apply_defaults()
        a = bound.arguments
        raise _Resolved(a["fname"], a["origin"], a["file_hash"] or a["md5_hash"])

    file_utils.get_file = intercept
    try:
        cls(weights="imagenet", include_top=include_top, input_shape=input_shape, **kwargs)
    except _Resolved as found:
        return found.origin, found.fname, found.file_hash
    except (ValueError, TypeError) as exc:
        raise CardError("source", "source", f"keras.applications.{application} refuses these arguments: "
                        f"{str(exc).splitlines()[0][:200]}", "fix `input_shape`, `include_top` or `kwargs`") from None
    finally:
        file_utils.get_file = real
    raise StagingError(f"keras.applications.{application} downloaded no weights for these arguments",
                       fix="this application publishes no imagenet weights for that configuration")


def preprocessing(application: str, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """What keras.applications' own preprocess_input does for this application, measured on a probe.

    The applications share imagenet_utils.preprocess_input with mode "tf" (to [-1, 1]), "torch"
    (to [0, 1], then ImageNet mean/std) or "caffe" (RGB to BGR, minus the ImageNet mean); some
    (EfficientNet, ConvNeXt, ...) rescale inside the model and pass the input through.
    """
    import importlib

    import keras
    import numpy as np

    from stages.preprocess import image

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
