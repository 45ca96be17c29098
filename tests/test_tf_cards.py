"""TensorFlow-side cards (tfhub, keras, huggingface tensorflow, targets): schema, index, and fetch rules.

No TensorFlow here except where Keras itself names a weight file (marked).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from stages import index
from stages.card import load_card
from stages.errors import CardError, HashMismatchError, HTTPStatusError
from tests.test_card import PROJECT, write

SHA = "c" * 64
COMMIT = "d" * 40
TFHUB = f"""name: hub-model
format: tensorflow
description: a TF Hub classifier
license: apache-2.0
tags: [vision]
targets: [tensorflow, onnx]
source:
  kind: tfhub
  handle: https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/classification/5
  sha256: {SHA}
"""
KERAS = """name: keras-model
format: keras
description: a Keras application
license: apache-2.0
source:
  kind: keras
  application: MobileNetV2
  weights: imagenet
  input_shape: [96, 96, 3]
  kwargs: {alpha: 0.35}
"""
HF_TF = f"""name: bert-tf
format: tensorflow
description: BERT, TensorFlow weights
license: apache-2.0
source:
  kind: huggingface
  framework: tensorflow
  repo: google-bert/bert-base-uncased
  revision: {COMMIT}
  task: feature-extraction
"""


def error(tmp_path, text, name, fmt) -> str:
    with pytest.raises(CardError) as info:
        load_card(write(tmp_path, text, name, fmt))
    return str(info.value)


def test_tfhub_card_parses_with_its_onnx_target(tmp_path):
    card = load_card(write(tmp_path, TFHUB, "hub-model", "tensorflow"))
    assert (card.kind, card.format, card.targets) == ("tfhub", "tensorflow", ("onnx",))
    assert card.source.url.endswith("/classification/5?tf-hub-format=compressed")
    assert str(card.target_dir("onnx")) == "registry/onnx/hub-model"
    assert card.target_artifact("onnx") == "hub-model-onnx" and card.target_artifact("tensorflow") == "hub-model"


@pytest.mark.parametrize("old,new,field,fix", [
    ("mobilenet_v2_100_224/classification/5", "mobilenet_v2_100_224/classification", "source.handle", "pin a version"),
    ("https://tfhub.dev/google", "https://example.com/google", "source.handle", "TF Hub model handle"),
    (f"  sha256: {SHA}\n", "", "source.sha256", "zoo pin"),
    ("targets: [tensorflow, onnx]", "targets: [onnx]", "targets", "write `targets: [tensorflow, ...]`"),
    ("targets: [tensorflow, onnx]", "targets: [tensorflow, keras]", "targets", "targets besides"),
    ("format: tensorflow", "format: onnx", "format", "use format: tensorflow"),
])
def test_bad_tfhub_cards_are_one_line_errors(tmp_path, old, new, field, fix):
    fmt = "onnx" if new == "format: onnx" else "tensorflow"
    message = error(tmp_path, TFHUB.replace(old, new), "hub-model", fmt)
    assert f": {field}:" in message and fix in message and "\n" not in message


def test_keras_card_fields(tmp_path):
    card = load_card(write(tmp_path, KERAS, "keras-model", "keras"))
    assert (card.source.application, card.source.include_top, card.source.input_shape) == ("MobileNetV2", True, (96, 96, 3))
    assert dict(card.source.kwargs) == {"alpha": 0.35}
    assert "weights" in error(tmp_path, KERAS.replace("weights: imagenet", "weights: custom"), "keras-model", "keras")
    assert "has its own field" in error(tmp_path, KERAS.replace("{alpha: 0.35}", "{include_top: false}"),
                                        "keras-model", "keras")


def test_huggingface_framework_decides_format_and_converter(tmp_path):
    from stages.convert import for_card

    card = load_card(write(tmp_path, HF_TF, "bert-tf", "tensorflow"))
    assert for_card(card).name == "tensorflow" and card.source.from_pytorch is None
    wrong = error(tmp_path, HF_TF.replace("format: tensorflow", "format: onnx"), "bert-tf", "onnx")
    assert "framework 'tensorflow' is staged as format 'tensorflow'" in wrong
    pt = error(tmp_path, HF_TF.replace("framework: tensorflow", "framework: pytorch"), "bert-tf", "tensorflow")
    assert "format 'onnx'" in pt
    from_pt = load_card(write(tmp_path, HF_TF + "  from_pytorch: true\n", "bert-tf", "tensorflow"))
    assert from_pt.source.from_pytorch is True


def test_index_lists_targets_under_their_converters_and_artifacts(tmp_path):
    write(tmp_path, TFHUB, "hub-model", "tensorflow")
    write(tmp_path, KERAS, "keras-model", "keras")
    built = index.build(index.load_all(tmp_path))
    assert built["converters"]["tensorflow"] == {
        "hub-model": {"card": "registry/tensorflow/hub-model.yaml", "format": "tensorflow"},
        "keras-model": {"card": "registry/keras/keras-model.yaml", "format": "keras"}}
    assert built["converters"]["tf2onnx"] == {"hub-model": {"card": "registry/tensorflow/hub-model.yaml",
                                                            "format": "onnx"}}
    assert built["shards"] == 1  # both cards' stages, the tf2onnx one too, in the one pipeline shard
    assert {n: e["dvcfile"] for n, e in built["cards"].items()} == {
        "hub-model": "registry/_pipeline/0000/dvc.yaml", "keras-model": "registry/_pipeline/0000/dvc.yaml"}
    arts = index.artifacts(index.load_all(tmp_path))
    assert arts["hub-model-onnx"]["path"] == "registry/onnx/hub-model"
    assert arts["hub-model"]["path"] == "registry/tensorflow/hub-model"
    assert "onnx" in arts["hub-model-onnx"]["labels"]


def test_a_card_cannot_take_another_cards_target_artifact_name(tmp_path):
    write(tmp_path, TFHUB, "hub-model", "tensorflow")
    write(tmp_path, TFHUB.replace("name: hub-model", "name: hub-model-onnx").replace("targets: [tensorflow, onnx]\n", ""),
          "hub-model-onnx", "tensorflow")
    with pytest.raises(CardError, match="artifact name of"):
        index.load_all(tmp_path)


def test_parsing_tf_cards_imports_no_framework(tmp_path):
    path = write(tmp_path, TFHUB, "hub-model", "tensorflow")
    write(tmp_path, KERAS, "keras-model", "keras")
    code = ("import sys; from pathlib import Path; from stages import index; "
            f"index.build(index.load_all(Path({str(tmp_path)!r}))); "
            "print(sorted(m for m in ('tensorflow', 'keras', 'torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT)
    assert out.stdout.strip() == "[]" and path.exists()


# --------------------------------------------------------------------------- fetching rules (offline mirror)

def test_md5_pins_are_checked_and_sha256_recorded(mirror, mirror_root, tmp_path):
    import hashlib

    from stages.fetch import download

    data = b"keras weights" * 100
    (mirror_root / "storage.googleapis.com/zoo-md5").mkdir(parents=True, exist_ok=True)
    (mirror_root / "storage.googleapis.com/zoo-md5/w.h5").write_bytes(data)
    url = "https://storage.googleapis.com/zoo-md5/w.h5"
    size, sha = download(url, tmp_path / "ok.h5", None, md5=hashlib.md5(data).hexdigest())
    assert (size, sha) == (len(data), hashlib.sha256(data).hexdigest())
    with pytest.raises(HashMismatchError, match="md5"):
        download(url, tmp_path / "bad.h5", None, md5="0" * 32)
    assert not (tmp_path / "bad.h5").exists()


def test_redirects_are_reported(mirror, mirror_root, tmp_path):
    from stages.fetch import download

    (mirror_root / "www.kaggle.com/zoo-moved").mkdir(parents=True, exist_ok=True)
    (mirror_root / "www.kaggle.com/zoo-moved/model").write_bytes(b"m" * 64)
    mirror.redirect("/tfhub.dev/zoo-moved/model/1", "https://www.kaggle.com/zoo-moved/model?tf-hub-format=compressed")
    hops: list[str] = []
    download("https://tfhub.dev/zoo-moved/model/1?tf-hub-format=compressed", tmp_path / "m", None, redirects=hops)
    assert hops == ["https://www.kaggle.com/zoo-moved/model?tf-hub-format=compressed"]


def test_a_migrated_tfhub_handle_says_where_to_look(mirror, tmp_path, monkeypatch):
    from tests.conftest import make_root

    from stages.pipeline import fetch_card

    mirror.set_status("/tfhub.dev/zoo-gone/model/3", 403, b"This model has moved to Kaggle Models")
    root = make_root(tmp_path, {"tensorflow/gone": TFHUB.replace("hub-model", "gone").replace(
        "google/imagenet/mobilenet_v2_100_224/classification/5", "zoo-gone/model/3")})
    with pytest.raises(HTTPStatusError) as info:
        fetch_card(root, load_card("registry/tensorflow/gone.yaml", root).path)
    message = str(info.value)
    assert "HTTP 403" in message and "Kaggle Models" in message and "zoo pin" in message
    assert not (root / "registry/_raw/gone").exists()


def test_keras_resolves_names_and_hashes_from_keras_itself():
    """(imports keras) the file name, URL and hash are what keras.applications would download."""
    pytest.importorskip("keras")
    from stages.sources.keras import weights_file as keras_weights_file

    url, name, digest = keras_weights_file("ResNet50", True, None, {})
    assert name == "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
    assert url == f"https://storage.googleapis.com/tensorflow/keras-applications/resnet/{name}"
    assert len(digest) == 32  # Keras publishes an md5 for ResNet50
    url, name, digest = keras_weights_file("MobileNetV2", True, (96, 96, 3), {"alpha": 0.35})
    assert name == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96.h5" and digest is None
    with pytest.raises(CardError, match="has no NoSuchNet"):
        keras_weights_file("NoSuchNet", True, None, {})
    assert json.dumps([url])  # plain strings


def test_zoo_pin_hashes_a_moved_tfhub_archive_and_a_keras_file(mirror, mirror_root, tmp_path):
    """`zoo pin` follows tfhub.dev's redirect to hash the archive; for Keras it asks Keras for the URL."""
    from tests.conftest import make_root

    from tests.support.mirror import tf_fixtures
    from stages.pin import pin_card

    fixtures = {name: tf_fixtures.build_tf_mirror(mirror_root)[name] for name in ("tfhub-moved-classifier",
                                                                                     "keras-mobilenet-v2")}
    cards, expected = {}, {}
    for name, fmt in (("tfhub-moved-classifier", "tensorflow"), ("keras-mobilenet-v2", "keras")):
        text = fixtures[name].card
        sha = text.split("sha256: ")[1].split("\n")[0]
        cards[f"{fmt}/{name}"] = text.replace(f"  sha256: {sha}\n", "")
        expected[name] = sha
    root = make_root(tmp_path, {})
    for key, text in cards.items():
        path = root / f"registry/{key}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        name = key.split("/")[1]
        assert pin_card(root, path.relative_to(root)) == [f"source.sha256 -> {expected[name]}"]
        assert load_card(path.relative_to(root), root).source.sha256 == expected[name]


def test_a_kaggle_models_handle_is_a_tfhub_handle(tmp_path):
    kaggle = ("https://www.kaggle.com/models/google/mobilenet-v2/frameworks/tensorFlow2/variations/"
              "100-224-classification/versions/2")
    text = TFHUB.replace("https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/classification/5", kaggle)
    card = load_card(write(tmp_path, text, "hub-model", "tensorflow"))
    (remote,) = __import__("stages.sources", fromlist=["get_kind"]).get_kind("tfhub").remote_files(card.source)
    assert remote.url == f"{kaggle}?tf-hub-format=compressed" and remote.moved_hint is None
