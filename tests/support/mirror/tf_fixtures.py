"""Fixture files for the offline mirror: TensorFlow-side models in their upstreams' real layouts.

- TF Hub: `https://tfhub.dev/<publisher>/<model>/<version>?tf-hub-format=compressed` answers the
  compressed SavedModel (a .tar.gz whose entries are `saved_model.pb`, `variables/...` with no
  top folder). The mirror serves it from `ROOT/tfhub.dev/<publisher>/<model>/<version>` (the
  query is not part of the lookup). Since tfhub.dev moved to Kaggle Models, a handle answers 302
  to `https://www.kaggle.com/models/<publisher>/<model>/tensorFlow2/<variation>/<version>`
  (+ the same query): `build_tfhub_moved` lays that out; `tfhub_migrated_403` a handle that
  answers 403 instead.
- Keras applications: `https://storage.googleapis.com/tensorflow/keras-applications/<app>/<file>`,
  the file name computed by Keras itself (stages.sources.keras.weights_file), weights
  in the legacy Keras-2 HDF5 layout the real files use, so `keras.applications.X(weights=<file>)`
  loads them.
- Hugging Face: a TF BERT repo (`config.json`, `tf_model.h5`, tokenizer files), as
  `TFBertModel.save_pretrained` writes it.

Weights are seeded and calibrated so outputs depend on the input (a default-initialised
MobileNetV2 outputs an exactly uniform softmax, merely random weights one that is the same for
every input: either would make every comparison pass trivially). SavedModel and HDF5 bytes
are cached in the root: the builders are idempotent, and a rebuild into the same root reuses them.
"""

from __future__ import annotations

import json
import os
import tarfile
import tempfile
from pathlib import Path

from tests.support.mirror.fixtures import Fixture, tar_gz
from tests.support.mirror.common import hf_files, place, read_dir, sha256_hex
from tests.support.mirror.torch_fixtures import CIFAR10

TFHUB = "https://tfhub.dev/zoo-fixtures"
KAGGLE = "https://www.kaggle.com/models/zoo-fixtures"
CACHE = ".tf-fixture-cache"


def _tf():
    from stages.frameworks import import_tf

    return import_tf()


def _card(name: str, fmt: str, description: str, tags: list[str], source: dict,
          targets: list[str] | None = None, meta: str = "") -> str:
    lines = [f"name: {name}", f"format: {fmt}", f"description: {description}", "license: apache-2.0",
             f"tags: [{', '.join(tags)}]"]
    if targets:
        lines.append(f"targets: [{', '.join(targets)}]")
    if meta:
        lines.append(meta.rstrip("\n"))
    lines.append("source:")
    for key, value in source.items():
        if isinstance(value, dict):
            value = "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
        elif isinstance(value, (list, tuple)):
            value = "[" + ", ".join(str(v) for v in value) + "]"
        lines.append(f"  {key}: {value}")
    return "\n".join(lines) + "\n"


def _cached(root: Path, key: str, make) -> bytes:
    """Bytes built once per root (SavedModel and HDF5 writers are not byte-stable across runs)."""
    path = Path(root) / CACHE / key
    if path.is_file():
        return path.read_bytes()
    data = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return data


def _routes(root: Path, update: dict) -> None:
    path = Path(root) / "_routes.json"
    routes = json.loads(path.read_text()) if path.exists() else {}
    for table, entries in update.items():
        routes.setdefault(table, {}).update(entries)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(routes, indent=2, sort_keys=True))
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- SavedModels

def _classifier_module(seed: int):
    """A small NHWC image classifier as a tf.Module (no Keras): conv-relu, strided conv-relu, pool, dense, softmax."""
    import numpy as np

    tf = _tf()
    rng = np.random.default_rng(seed)

    def var(shape, scale):
        return tf.Variable((rng.standard_normal(shape) * scale).astype(np.float32))

    class TinyClassifier(tf.Module):
        def __init__(self):
            super().__init__()
            self.k1, self.b1 = var((3, 3, 3, 8), 0.5), var((8,), 0.1)
            self.k2, self.b2 = var((3, 3, 8, 16), 0.3), var((16,), 0.1)
            self.w, self.b = var((16, 10), 0.5), var((10,), 0.1)

        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32, name="images")])
        def __call__(self, images):
            x = tf.nn.relu(tf.nn.conv2d(images, self.k1, 1, "SAME") + self.b1)
            x = tf.nn.relu(tf.nn.conv2d(x, self.k2, 2, "SAME") + self.b2)
            x = tf.reduce_mean(x, axis=[1, 2])
            return {"probabilities": tf.nn.softmax(tf.matmul(x, self.w) + self.b)}

    return TinyClassifier()


def _table_module():
    """A model that reads a lookup table: variables fold into constants, the table does not."""
    import numpy as np

    tf = _tf()

    class TableModel(tf.Module):
        def __init__(self):
            super().__init__()
            keys = tf.constant(np.arange(8, dtype=np.int64))
            values = tf.constant(np.linspace(0.5, 4.0, 8, dtype=np.float32))
            self.table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, values), 0.0)
            self.scale = tf.Variable(2.0)

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.int64, name="ids")])
        def __call__(self, ids):
            return {"scores": self.table.lookup(ids) * self.scale}

    return TableModel()


def _savedmodel_entries(module) -> list[tuple[str, bytes]]:
    tf = _tf()
    with tempfile.TemporaryDirectory(prefix="zoo-tfhub-") as tmp:
        tf.saved_model.save(module, tmp, signatures={"serving_default": module.__call__.get_concrete_function()})
        return sorted((p.relative_to(tmp).as_posix(), p.read_bytes()) for p in Path(tmp).rglob("*") if p.is_file())


def _savedmodel_tar(root: Path, key: str, make_module, extra_entries=(), extra_infos=None) -> bytes:
    return _cached(root, f"{key}.tar.gz",
                   lambda: tar_gz(_savedmodel_entries(make_module()) + list(extra_entries), extra_infos))


# TF Hub's image-module convention ("color values in the range [0,1]", NHWC, RGB), which the hub
# files themselves do not record: the cards declare it, and the labels of these 10-class heads.
TFHUB_PRE = ("preprocessing: {type: image, layout: NHWC, size: [32, 32], interpolation: bilinear, color: RGB, "
             "scale: 0.00392156862745098, mean: [0.0], std: [1.0], source: TF Hub image module convention}\n"
             f"labels: [{', '.join(CIFAR10)}]\n")


def _tfhub_card(name: str, handle: str, sha: str, description: str, targets: list[str] | None = None,
                tags: tuple[str, ...] = ("vision", "image-classification")) -> str:
    return _card(name, "tensorflow", description, list(tags), {"kind": "tfhub", "handle": handle, "sha256": sha},
                 targets, TFHUB_PRE)


def build_tfhub_tiny(root: Path) -> Fixture:
    data = _savedmodel_tar(root, "tiny-classifier", lambda: _classifier_module(21))
    handle = f"{TFHUB}/tiny-classifier/1"
    rel, sha = place(root, handle, data)
    card = _tfhub_card("tfhub-tiny-classifier", handle, sha, "Tiny TF2 SavedModel image classifier, 10 classes, "
                       "32x32 NHWC (seeded random weights, a test fixture)", ["tensorflow", "onnx"])
    return Fixture("tfhub-tiny-classifier", card, {rel: sha})


def build_tfhub_moved(root: Path) -> Fixture:
    """A tfhub.dev handle that redirects to its Kaggle Models page, as tfhub.dev does since 2023."""
    data = _savedmodel_tar(root, "moved-classifier", lambda: _classifier_module(22))
    handle = f"{TFHUB}/moved-classifier/2"
    location = f"{KAGGLE}/moved-classifier/tensorFlow2/default/2"
    rel, sha = place(root, location, data)
    _routes(root, {"redirects": {f"/{handle[len('https://'):]}": f"{location}?tf-hub-format=compressed"}})
    card = _tfhub_card("tfhub-moved-classifier", handle, sha, "Tiny TF2 SavedModel image classifier behind tfhub.dev's "
                       "redirect to Kaggle Models (seeded random weights, a test fixture)")
    return Fixture("tfhub-moved-classifier", card, {rel: sha})


def _bad_tfhub(root: Path, name: str, data: bytes, description: str) -> str:
    handle = f"{TFHUB}/{name}/1"
    _, sha = place(root, handle, data)
    return _tfhub_card(f"tfhub-{name}", handle, sha, description)


def tfhub_traversal(root: Path) -> str:
    data = _savedmodel_tar(root, "traversal", lambda: _classifier_module(31), [("../evil.txt", b"escaped\n")])
    return _bad_tfhub(root, "traversal", data, "A SavedModel archive with a ../ entry (a test fixture)")


def tfhub_symlink(root: Path) -> str:
    link = tarfile.TarInfo("variables/link")
    link.type, link.linkname, link.mtime = tarfile.SYMTYPE, "/etc/passwd", 0
    data = _savedmodel_tar(root, "symlink", lambda: _classifier_module(32), extra_infos=[link])
    return _bad_tfhub(root, "symlink", data, "A SavedModel archive with a link pointing out (a test fixture)")


def tfhub_no_savedmodel(root: Path) -> str:
    data = tar_gz([("README.md", b"# not a model\n"), ("variables/variables.index", b"\0" * 16)])
    return _bad_tfhub(root, "no-savedmodel", data, "An archive without saved_model.pb (a test fixture)")


def tfhub_empty(root: Path) -> str:
    return _bad_tfhub(root, "empty", tar_gz([]), "An empty archive (a test fixture)")


def tfhub_table(root: Path) -> str:
    data = _savedmodel_tar(root, "table", _table_module)
    return _bad_tfhub(root, "table", data, "A SavedModel that reads a lookup table (a test fixture)")


def _two_input_module(seed: int):
    """Two named inputs declared in an order that is not their sorted order (`zeta`, then `alpha`),
    whose outputs change when the two are swapped, through a Keras LayerNormalization with BERT's
    epsilon (1e-12) on activations of small variance: what a real sentence encoder's frozen graph needs
    to survive (TensorFlow's oneDNN layer-norm fusion ignores the epsilon in frozen graphs)."""
    import numpy as np
    import tf_keras

    tf = _tf()
    rng = np.random.default_rng(seed)

    class TwoInputs(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable((rng.standard_normal((8, 6)) * 0.02).astype(np.float32))
            self.norm = tf_keras.layers.LayerNormalization(epsilon=1e-12)
            self.norm.build((None, 6))
            self.norm.gamma.assign(rng.normal(1.0, 0.3, 6).astype(np.float32))
            self.norm.beta.assign(rng.normal(0.0, 0.3, 6).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="zeta"),
                                      tf.TensorSpec([None, 4], tf.float32, name="alpha")])
        def __call__(self, zeta, alpha):
            h = tf.matmul(tf.concat([zeta, 3.0 * alpha], axis=-1), self.w)
            return {"normed": self.norm(h), "raw": h}

    return TwoInputs()


def build_tfhub_two_inputs(root: Path) -> Fixture:
    data = _savedmodel_tar(root, "two-inputs", lambda: _two_input_module(41))
    handle = f"{TFHUB}/two-inputs/1"
    rel, sha = place(root, handle, data)
    card = _card("tfhub-two-inputs", "tensorflow", "A SavedModel with two inputs declared out of name order and a "
                 "layer norm with epsilon 1e-12 (seeded weights, a test fixture)", ["tensor"],
                 {"kind": "tfhub", "handle": handle, "sha256": sha}, ["tensorflow", "onnx"],
                 "preprocessing: {type: tensor, note: two float vectors of 4 (a test fixture)}\n")
    return Fixture("tfhub-two-inputs", card, {rel: sha})


def tfhub_migrated_403(root: Path) -> str:
    handle = f"{TFHUB}/migrated/1"
    _routes(root, {"status": {f"/{handle[len('https://'):]}": {"status": 403,
                                                             "body": "This model has moved to Kaggle Models"}}})
    return _tfhub_card("tfhub-migrated", handle, sha256_hex(b"gone"), "A handle that answers 403 (a test fixture)")


# ----------------------------------------------------------------------------- Keras applications

def informative_weights(model, seed: int) -> None:
    """Seeded weights whose outputs depend on the input: He-scaled kernels, random BatchNorm affine
    terms, and BatchNorm moving statistics calibrated on one seeded batch.

    Random moving statistics alone do not renormalise the activations: the input's part shrinks
    ~10x per block while the BatchNorm offsets stay, and MobileNetV2's softmax came out identical
    (to 1e-9) for every input. So every BatchNorm gets the batch statistics it sees in one
    training-mode pass with momentum 0 (all layers at once: each sees the already-normalised
    layers before it, which is what inference then computes).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        current = layer.get_weights()
        if not current:
            continue
        new = []
        for variable, value in zip(layer.weights, current):
            name = variable.path.split("/")[-1]
            if "moving_variance" in name:
                array = rng.uniform(0.5, 1.5, value.shape)
            elif any(k in name for k in ("moving_mean", "beta", "bias")):
                array = rng.normal(0.0, 0.1, value.shape)
            elif "gamma" in name:
                array = rng.uniform(0.8, 1.2, value.shape)
            else:
                fan_in = int(np.prod(value.shape[:2])) if "depthwise" in name else int(np.prod(value.shape[:-1]) or 1)
                array = rng.normal(0.0, np.sqrt(2.0 / max(fan_in, 1)), value.shape)
            new.append(array.astype(value.dtype))
        layer.set_weights(new)
    norms = [layer for layer in model.layers if "moving_mean" in {v.path.split("/")[-1] for v in layer.weights}]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    model(rng.uniform(-1.0, 1.0, (8, *model.input_shape[1:])).astype(np.float32), training=True)
    for layer, momentum in zip(norms, momenta):
        layer.momentum = momentum


KERAS_MOBILENET = ("MobileNetV2", True, (96, 96, 3), {"alpha": 0.35})


def build_keras_mobilenet(root: Path) -> Fixture:
    """MobileNetV2 (alpha 0.35, 96 px, with top) weights under Keras's own file name and URL."""
    from stages.sources.keras import weights_file as keras_weights_file

    url, _, _ = keras_weights_file(*KERAS_MOBILENET)

    def make() -> bytes:
        _tf()
        import h5py
        import keras
        from keras.src.legacy.saving import legacy_h5_format

        app, include_top, shape, kwargs = KERAS_MOBILENET
        model = getattr(keras.applications, app)(weights=None, include_top=include_top, input_shape=shape, **kwargs)
        informative_weights(model, 23)
        with tempfile.TemporaryDirectory(prefix="zoo-keras-") as tmp:
            path = Path(tmp) / "weights.h5"
            with h5py.File(path, "w") as f:
                legacy_h5_format.save_weights_to_hdf5_group(f, model)
            return path.read_bytes()

    rel, sha = place(root, url, _cached(root, "keras-mobilenet-v2.h5", make))
    card = _card("keras-mobilenet-v2", "keras", "MobileNetV2 alpha 0.35 at 96x96 from keras.applications "
                 "(seeded weights under Keras's real file name, a test fixture)", ["vision", "image-classification"],
                 {"kind": "keras", "application": "MobileNetV2", "weights": "imagenet", "input_shape": [96, 96, 3],
                  "kwargs": {"alpha": 0.35}, "sha256": sha}, ["keras", "onnx"])
    return Fixture("keras-mobilenet-v2", card, {rel: sha})


# ----------------------------------------------------------------------------- Hugging Face (TensorFlow)

BERT_TF_REPO = "zoo-fixtures/tiny-bert-tf"


def build_tiny_bert_tf(root: Path) -> Fixture:
    """A tiny TFBertModel repo as save_pretrained writes it (config.json, tf_model.h5) plus a tokenizer."""
    from tests.support.mirror.torch_fixtures import bert_config, tokenizer_files

    cache = Path(root) / CACHE / "tiny-bert-tf"
    if not (cache / "tf_model.h5").is_file():
        tf = _tf()
        import transformers

        with tempfile.TemporaryDirectory(prefix="zoo-bert-tf-") as tmp:
            tmp = Path(tmp)
            files = tokenizer_files(tmp)
            tf.random.set_seed(24)
            transformers.set_seed(24)
            model = transformers.TFBertModel(bert_config())
            model(model.dummy_inputs)
            model.save_pretrained(str(tmp / "model"))
            files.update(read_dir(tmp / "model"))
        staging = cache.with_name(f".tiny-bert-tf.{os.getpid()}.tmp")
        for rel, data in files.items():
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            (staging / rel).write_bytes(data)
        cache.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, cache)
    commit, served = hf_files(root, BERT_TF_REPO, read_dir(cache))
    card = _card("tiny-bert-tf", "tensorflow", "Tiny BERT encoder, TensorFlow weights (tf_model.h5), with a WordPiece "
                 "tokenizer (seeded random weights, a test fixture)", ["text", "feature-extraction"],
                 {"kind": "huggingface", "framework": "tensorflow", "repo": BERT_TF_REPO, "revision": commit,
                  "task": "feature-extraction"})
    return Fixture("tiny-bert-tf", card, served)


BUILDERS = (build_tfhub_tiny, build_tfhub_moved, build_keras_mobilenet, build_tiny_bert_tf)


def build_tf_mirror(root: Path) -> dict[str, Fixture]:
    """Every good TensorFlow-side fixture under `root`, by card name; idempotent on the same root."""
    fixtures = [builder(Path(root)) for builder in BUILDERS]
    return {f.name: f for f in fixtures}
