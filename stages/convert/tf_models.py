"""Building the source model a TensorFlow-side card describes, from its raw files only.

One builder per kind, each giving the same thing (`TFSource`): the model's serving signature as a
concrete function (named tensors in, a dict of named tensors out), which is what gets frozen, and
a `reference` that runs the SOURCE model (the downloaded SavedModel, the Keras model built from
the downloaded weights, the transformers model), which is what every staged file is compared with.

- tfhub: the compressed SavedModel is extracted entry by entry (no `..`, no absolute paths, no
  links pointing out) and loaded with `tf.saved_model.load`; its `serving_default` signature (or
  the card's `signature:`, or `__call__` traced at the card's `input_shape`) is the function.
- keras: `keras.applications.<Application>(weights=<downloaded file>, ...)`; Keras loads the
  file itself. The function is the model called in inference mode.
- huggingface (tensorflow): `TFAutoModel`/`TFAutoModelFor<Task>.from_pretrained` on the raw
  folder (from TF weights, or from PyTorch weights with `from_pytorch: true`, safetensors only).

Keras-built models (keras, huggingface) are saved as a SavedModel with a `serving_default`
signature and loaded back, so every kind is frozen from a SavedModel signature.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from stages.errors import StagingError
from stages.frameworks import import_tf
from stages.inputs import TensorSpec

SERVING = "serving_default"


@dataclass
class TFSource:
    fn: Any                                   # ConcreteFunction(**{input: tensor}) -> {output: tensor}
    inputs: list[TensorSpec]
    outputs: list[str]
    reference: Callable[[dict[str, Any]], dict[str, Any]]           # the source model's outputs, by name
    text: bool = False
    vocab: int | None = None  # a text model's vocabulary size (token ids are drawn below it)
    declared: tuple = ()  # validation inputs the source itself implies (a tfhub card's input_shape)
    keras_model: Any = None
    side_files: dict[str, Path] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    labels: list[str] | None = None  # a classifier's class names, in output order (labels.txt)
    preprocessing: dict[str, Any] | None = None  # from the source's metadata (stages.preprocess)


def signature_specs(fn) -> list[TensorSpec]:
    _, kwargs = fn.structured_input_signature
    return [TensorSpec(name, spec.dtype.as_numpy_dtype.__name__, tuple(spec.shape.as_list()))
            for name, spec in sorted(kwargs.items())]


def _numpy_dict(result) -> dict[str, Any]:
    return {k: v.numpy() for k, v in result.items()}


# ----------------------------------------------------------------------------- tfhub

def build_tfhub(card, raw, settings, workdir: Path) -> TFSource:
    from stages.archives import extract_matching

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
    fn = _hub_function(card, loaded, tf)
    fn._zoo_keepalive = loaded  # noqa: SLF001 - the function needs its object graph alive
    specs = signature_specs(fn)

    def reference(feeds: dict[str, Any]) -> dict[str, Any]:
        return _numpy_dict(fn(**{k: tf.constant(v) for k, v in feeds.items()}))

    declared = ()
    if spec.input_shape and len(specs) == 1:  # the card's shape for a signature that leaves dims unknown
        from stages.inputs import Declared

        declared = (Declared(specs[0].name, ("batch", *spec.input_shape[1:])),)
    return TFSource(fn=fn, inputs=specs, outputs=sorted(fn.structured_outputs), reference=reference,
                    declared=declared, info={"signature": spec.signature or SERVING, "handle": spec.handle})


def _hub_function(card, loaded, tf):
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


# ----------------------------------------------------------------------------- keras

def build_keras(card, raw, settings, workdir: Path) -> TFSource:
    tf = import_tf()
    import keras

    from stages.sources.tensorflow import application_class

    spec = card.source
    keras.utils.set_random_seed(int(settings["seed"]))
    weights = raw.file("weights")
    try:
        model = application_class(spec.application)(weights=str(weights), include_top=spec.include_top,
                                                    input_shape=spec.input_shape, **dict(spec.kwargs))
    except (ValueError, OSError) as exc:
        raise StagingError(f"{card.path}: keras.applications.{spec.application} cannot load {weights.name}: "
                           f"{str(exc).strip().splitlines()[0][:300]}",
                           fix="the weights do not fit these arguments; check `input_shape`, `include_top`, `kwargs`") from None
    input_name = model.layers[0].name if model.layers else "input"
    output_name = model.layers[-1].name
    shape = [None, *model.inputs[0].shape[1:]]
    signature = tf.TensorSpec(shape, tf.float32, name=input_name)

    @tf.function(input_signature=[signature])
    def serve(x):
        return {output_name: model(x, training=False)}

    fn = _through_saved_model(serve, {"model": model}, workdir, tf)
    specs = signature_specs(fn)

    def reference(feeds: dict[str, Any]) -> dict[str, Any]:
        return {output_name: model(feeds[input_name], training=False).numpy()}

    from stages import labels, preprocess

    # An ImageNet top: the 1000 classes of Keras's decode_predictions (ILSVRC-2012 synset order).
    imagenet_top = spec.include_top and spec.weights == "imagenet" and model.outputs[0].shape[-1] == 1000
    return TFSource(fn=fn, inputs=specs, outputs=[output_name], reference=reference, keras_model=model,
                    preprocessing=preprocess.from_keras(spec.application, tuple(model.inputs[0].shape[1:])),
                    labels=labels.named("imagenet-1k") if imagenet_top else None,
                    info={"architecture": f"keras.applications.{spec.application}", "keras_name": model.name,
                          "parameters": int(model.count_params())})


def _through_saved_model(serve, tracked: dict[str, Any], workdir: Path, tf):
    """Save `serve` as a SavedModel's serving_default signature, load it back, return that signature."""
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


# ----------------------------------------------------------------------------- huggingface (tensorflow)

HF_TF_CLASSES = {
    "feature-extraction": "TFAutoModel",
    "text-classification": "TFAutoModelForSequenceClassification",
    "token-classification": "TFAutoModelForTokenClassification",
    "fill-mask": "TFAutoModelForMaskedLM",
    "question-answering": "TFAutoModelForQuestionAnswering",
    "image-classification": "TFAutoModelForImageClassification",
}


def build_huggingface_tf(card, raw, settings, workdir: Path) -> TFSource:
    spec = card.source
    tf = import_tf()
    import transformers

    config = json.loads(raw.file_named("config.json").read_text())
    if config.get("auto_map"):
        raise StagingError(f"{card.path}: {spec.repo} needs remote code ({sorted(config['auto_map'])[0]})",
                           fix="the TensorFlow path runs no remote code; pick a model transformers implements")
    files = raw.all("repo")  # verifies every file's hash before transformers reads the folder
    if spec.from_pytorch and not any(p.suffix == ".safetensors" for p in files):
        raise StagingError(f"{card.path}: from_pytorch needs model.safetensors in {spec.repo}@{spec.revision[:12]}",
                           fix="refusing to unpickle pytorch_model.bin; pin a revision with safetensors weights")
    cls = getattr(transformers, HF_TF_CLASSES[spec.task])
    tf.random.set_seed(int(settings["seed"]))
    try:
        model = cls.from_pretrained(str(raw.path), local_files_only=True, from_pt=spec.from_pytorch)
    except Exception as exc:  # noqa: BLE001 - transformers wraps many failures
        raise StagingError(f"{card.path}: transformers cannot build {HF_TF_CLASSES[spec.task]} from "
                           f"{spec.repo}@{spec.revision[:12]}: {str(exc).strip().splitlines()[0][:200]}",
                           fix="check `task:`, and `from_pytorch:` when the repo has no tf_model.h5") from None
    accepted = set(model.input_signature) if hasattr(model, "input_signature") else set()
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in accepted]
    signature = [tf.TensorSpec([None, None], tf.int32, name=n) for n in names]

    def call(*args):
        result = model(**dict(zip(names, args)), training=False, return_dict=True)
        return {k: v for k, v in result.items() if isinstance(v, tf.Tensor)}

    serve = tf.function(call, input_signature=signature)
    outputs = sorted(serve.get_concrete_function().structured_outputs)
    fn = _through_saved_model(serve, {"model": model}, workdir, tf)
    def reference(feeds: dict[str, Any]) -> dict[str, Any]:
        result = model(**{k: tf.constant(v) for k, v in feeds.items()}, training=False, return_dict=True)
        return {k: result[k].numpy() for k in outputs}

    side = {p.name: p for p in files if p.suffix not in (".h5", ".bin", ".safetensors", ".msgpack")
            and not p.name.endswith(".index.json")}
    from stages import preprocess

    pre, extra = preprocess.from_hf(raw.path, config, spec.task, workdir)
    side.update(extra)
    from stages.labels import hf_labels

    return TFSource(fn=fn, inputs=signature_specs(fn), outputs=outputs, vocab=int(config.get("vocab_size", 100)),
                    reference=reference, text=True, side_files=side, labels=hf_labels(config, spec.task),
                    preprocessing=pre,
                    info={"architecture": (config.get("architectures") or ["?"])[0], "task": spec.task,
                          "weights": "pytorch (safetensors)" if spec.from_pytorch else "tensorflow (tf_model.h5)"})


def build(card, raw, settings, workdir: Path) -> TFSource:
    kind = card.kind
    if kind == "tfhub":
        return build_tfhub(card, raw, settings, workdir)
    if kind == "keras":
        return build_keras(card, raw, settings, workdir)
    if kind == "huggingface":
        return build_huggingface_tf(card, raw, settings, workdir)
    raise StagingError(f"{card.path}: the tensorflow converter cannot build kind {kind!r}", fix="this is a registry bug")
