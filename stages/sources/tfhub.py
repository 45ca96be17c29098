"""TensorFlow Hub handles (tfhub.dev, or the Kaggle Models page it moved to): a compressed SavedModel.

The archive is extracted entry by entry (no `..`, no absolute paths, no links pointing out) and
loaded with `tf.saved_model.load`; its `serving_default` signature (or the card's `signature:`,
or `__call__` traced at the card's `input_shape`) is what the tensorflow converter freezes, and
the loaded SavedModel is the reference every staged file is compared with.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator

from stages import schema
from stages.errors import StagingError
from stages.sources import register
from stages.sources.base import RemoteFile, SourceKind, SourceModel

TFHUB_HOSTS = ("tfhub.dev", "www.kaggle.com", "kaggle.com")
TFHUB_FORMAT_QUERY = "tf-hub-format=compressed"
MIGRATED_HINT = ("tfhub.dev moved to Kaggle Models: open the handle in a browser, pin the Kaggle handle it "
                 "leads to (https://www.kaggle.com/models/...) with `zoo pin`")


def _handle(handle: str) -> str:
    parts = urlsplit(handle)
    if parts.netloc not in TFHUB_HOSTS or parts.query or parts.fragment or handle.endswith("/"):
        raise schema.invalid(f"{handle!r} is not a TF Hub model handle",
                             "write the handle as published, e.g. https://tfhub.dev/google/imagenet/"
                             "mobilenet_v2_100_224/classification/5 or its https://www.kaggle.com/models/... page")
    if not re.search(r"/\d+$", parts.path):
        raise schema.invalid(f"{handle!r} does not end with a version number",
                             "pin a version: a handle without one follows the newest upload")
    return handle


class TFHubSpec(schema.Schema):
    """`source:` of a tfhub card."""

    kind: Literal["tfhub"]
    handle: Annotated[schema.HttpsUrl, AfterValidator(_handle)]
    sha256: schema.Sha256  # of the compressed archive the handle serves
    signature: schema.matching(re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$"), "write the signature's name, "
                               "e.g. serving_default") | None = None
    # for SavedModels whose signature leaves dims unknown
    input_shape: schema.shape("[1, 224, 224, 3] (the leading dim is the batch)") | None = None

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
    spec = TFHubSpec

    @classmethod
    def remote_files(cls, spec: TFHubSpec) -> list[RemoteFile]:
        hint = MIGRATED_HINT if urlsplit(spec.handle).netloc == "tfhub.dev" else None
        return [RemoteFile("archive", spec.archive_name, spec.sha256, url=spec.url, moved_hint=hint)]

    @classmethod
    def pin(cls, source, pinner, changes: list[str]) -> None:
        """Hash the compressed SavedModel the handle serves (following tfhub.dev's redirects)."""
        from stages.sources.pinning import pin_sha256

        pin_sha256(source, f"{source['handle']}?{TFHUB_FORMAT_QUERY}", pinner, changes)

    @classmethod
    def build(cls, card, raw, settings: dict, workdir: Path) -> SourceModel:
        from stages.archives import extract_matching
        from stages.frameworks import import_tf
        from stages.inputs import Declared
        from stages.sources._tf import SERVING, numpy_dict, signature_specs

        spec = card.source
        archive = raw.file("archive")
        folder = workdir / "savedmodel"
        names = extract_matching(archive, re.compile(r".*"), folder, re.compile(r".*"))
        if not names:
            raise StagingError(f"{card.path}: {archive.name} is an empty archive",
                               fix="the handle served no model; check `source.handle` and pin it again")
        if "saved_model.pb" not in names:
            hint = (" (it is a TF1 Hub module: tfhub_module.pb)" if "tfhub_module.pb" in names else "")
            raise StagingError(f"{card.path}: {archive.name} holds no SavedModel at its root (no saved_model.pb among "
                               f"{len(names)} entries: {', '.join(names[:4])}){hint}",
                               fix="pin a TF2 SavedModel handle (TF Hub's TF2 format), not a TF1 Hub module or another file")
        tf = import_tf()
        try:
            loaded = tf.saved_model.load(str(folder))
        except Exception as exc:  # noqa: BLE001 - TF raises many types for a bad SavedModel
            raise StagingError(f"{card.path}: TensorFlow cannot load the SavedModel: {type(exc).__name__}: "
                               f"{str(exc).strip().splitlines()[0][:300]}",
                               fix="the archive is damaged or needs ops this TensorFlow lacks; check the handle") from None
        fn = _signature(card, loaded, tf)
        fn._zoo_keepalive = loaded  # noqa: SLF001 - the function needs its object graph alive
        specs = signature_specs(fn)

        def reference(feeds: dict[str, Any]) -> dict[str, Any]:
            return numpy_dict(fn(**{k: tf.constant(v) for k, v in feeds.items()}))

        declared = ()
        if spec.input_shape and len(specs) == 1:  # the card's shape for a signature that leaves dims unknown
            declared = (Declared(specs[0].name, ("batch", *spec.input_shape[1:])),)
        return SourceModel(inputs=specs, outputs=sorted(fn.structured_outputs), reference=reference, native=fn,
                           described="tensorflow SavedModel as downloaded (its signature)", declared=declared,
                           info={"signature": spec.signature or SERVING, "handle": spec.handle})


def _signature(card, loaded, tf):
    from stages.sources._tf import SERVING

    spec = card.source
    signatures = dict(getattr(loaded, "signatures", {}) or {})
    name = spec.signature or SERVING
    if name in signatures:
        fn = signatures[name]
    elif spec.signature:
        raise StagingError(f"{card.path}: the SavedModel has no signature {spec.signature!r} "
                           f"(it has {sorted(signatures) or 'none'})", fix="fix `source.signature`")
    elif callable(loaded) and spec.input_shape:
        shape = [None, *spec.input_shape[1:]]
        traced = tf.function(lambda x: {"output_0": loaded(x)})
        fn = traced.get_concrete_function(tf.TensorSpec(shape, tf.float32, name="inputs"))
    else:
        raise StagingError(f"{card.path}: the SavedModel has no {SERVING} signature "
                           f"(it has {sorted(signatures) or 'none'}) and the card gives no input_shape",
                           fix="add `source.input_shape: [1, H, W, C]` so its __call__ can be traced, or name a "
                               "signature with `source.signature`")
    _, kwargs = fn.structured_input_signature
    if not kwargs:
        raise StagingError(f"{card.path}: signature {name!r} takes no named inputs",
                           fix="name another signature with `source.signature`")
    return fn
