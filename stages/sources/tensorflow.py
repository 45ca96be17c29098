"""The TensorFlow ecosystems: TensorFlow Hub SavedModels and Keras applications.

(Hugging Face models with `framework: tensorflow` are the `huggingface` kind, in torch_zoos.py.)
Each kind resolves a card to pinned files; building, freezing and converting is the tensorflow
converter's job (stages.convert.tf_stage). Nothing here imports TensorFlow at module level: only
resolving a Keras application's weight file does, at fetch time, because the file's name and
hash come from Keras's own applications module.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from stages.errors import CardError, StagingError
from stages.sources import register
from stages.sources.base import RemoteFile, SourceKind, parse_shape

TFHUB_HOSTS = ("tfhub.dev", "www.kaggle.com", "kaggle.com")
TFHUB_FORMAT_QUERY = "tf-hub-format=compressed"
MIGRATED_HINT = ("tfhub.dev moved to Kaggle Models: open the handle in a browser, pin the Kaggle handle it "
                 "leads to (https://www.kaggle.com/models/...) with `zoo pin`")
MD5_RE = re.compile(r"^[0-9a-f]{32}$")


def _scalars(fields, key: str) -> tuple:
    value = fields.raw(key, required=False) or {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, (bool, int, float, str))
                                              for k, v in value.items()):
        raise CardError(fields.path, fields.key(key), f"expected a mapping of plain values, got {value!r}",
                        f"write e.g. `{key}: {{alpha: 0.35}}`")
    return tuple(sorted(value.items()))


@dataclass(frozen=True)
class TFHubSpec:
    kind: str
    handle: str
    sha256: str
    signature: str | None = None
    input_shape: tuple[int, ...] | None = None  # for SavedModels whose signature leaves dims unknown

    @property
    def url(self) -> str:
        return f"{self.handle}?{TFHUB_FORMAT_QUERY}"

    @property
    def archive_name(self) -> str:
        return "saved_model.tar.gz"


@register
class TFHub(SourceKind):
    """A TensorFlow Hub handle (tfhub.dev or the Kaggle Models page it moved to): a compressed SavedModel."""

    kind, converter, formats = "tfhub", "tensorflow", ("tensorflow",)
    extra_targets = ("onnx",)

    @classmethod
    def parse(cls, fields, fmt: str) -> TFHubSpec:
        handle = fields.url("handle")
        parts = urlsplit(handle)
        if parts.netloc not in TFHUB_HOSTS or parts.query or parts.fragment or handle.endswith("/"):
            raise CardError(fields.path, "source.handle", f"{handle!r} is not a TF Hub model handle",
                            "write the handle as published, e.g. https://tfhub.dev/google/imagenet/"
                            "mobilenet_v2_100_224/classification/5 or its https://www.kaggle.com/models/... page")
        if not re.search(r"/\d+$", parts.path):
            raise CardError(fields.path, "source.handle", f"{handle!r} does not end with a version number",
                            "pin a version: a handle without one follows the newest upload")
        signature = fields.str("signature", required=False, pattern=re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$"))
        return TFHubSpec(kind=cls.kind, handle=handle, sha256=fields.sha256(), signature=signature,
                         input_shape=parse_shape(fields, example="[1, 224, 224, 3] (the leading dim is the batch)"))

    @classmethod
    def remote_files(cls, spec: TFHubSpec) -> list[RemoteFile]:
        hint = MIGRATED_HINT if urlsplit(spec.handle).netloc == "tfhub.dev" else None
        return [RemoteFile("archive", spec.archive_name, spec.sha256, url=spec.url, moved_hint=hint)]


@dataclass(frozen=True)
class KerasSpec:
    kind: str
    application: str
    weights: str
    include_top: bool = True
    input_shape: tuple[int, ...] | None = None  # Keras's convention: no batch dim
    kwargs: tuple = ()
    url: str | None = None
    sha256: str | None = None


@register
class KerasApplication(SourceKind):
    """`application: MobileNetV2`, `weights: imagenet`: file name, URL and hash from keras.applications."""

    kind, converter, formats = "keras", "tensorflow", ("keras",)
    describes = frozenset({"preprocessing", "labels"})  # from the source's own metadata
    extra_targets = ("onnx",)

    @classmethod
    def parse(cls, fields, fmt: str) -> KerasSpec:
        weights = fields.str("weights")
        if weights != "imagenet":
            raise CardError(fields.path, "source.weights", f"unknown weights {weights!r}",
                            "use `weights: imagenet` (the only weights keras.applications publishes)")
        kwargs = _scalars(fields, "kwargs")
        reserved = {"weights", "include_top", "input_shape", "input_tensor"} & {k for k, _ in kwargs}
        if reserved:
            raise CardError(fields.path, "source.kwargs", f"{sorted(reserved)[0]!r} has its own field",
                            "write it as `source.<field>` instead of under kwargs")
        return KerasSpec(kind=cls.kind, application=fields.str("application", pattern=re.compile(r"^[A-Z][A-Za-z0-9]+$"),
                                                                  hint="write the class name, e.g. MobileNetV2"),
                         weights=weights, include_top=fields.boolean("include_top", default=True),
                         input_shape=parse_shape(fields, example="[224, 224, 3] (no batch dim, as keras.applications)"), kwargs=kwargs,
                         url=fields.url("url", required=False), sha256=fields.sha256(required=False))

    @classmethod
    def remote_files(cls, spec: KerasSpec) -> list[RemoteFile]:
        url, name, file_hash = keras_weights_file(spec.application, spec.include_top, spec.input_shape, dict(spec.kwargs))
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
    def pins(cls, spec: KerasSpec) -> dict[str, Any]:
        pins = super().pins(spec)
        pins["kwargs"] = dict(spec.kwargs)
        return pins


class _Resolved(Exception):
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


def keras_weights_file(application: str, include_top: bool, input_shape: tuple | None,
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
