"""Preprocessing records and labels: taken from each source's metadata, and applied by `zoo run`
exactly as the source's own code applies them (torchvision, timm, Keras, transformers)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stages import labels, preprocess
from stages.sources import huggingface as huggingface_kind
from stages.sources import timm as timm_kind
from stages.sources import torchvision as torchvision_kind
from stages.card import load_card, missing_metadata
from stages.errors import CardError, StagingError
from tests.support.demo import picture
from tests.test_card import GOOD, write

PRE = """preprocessing: {type: image, layout: NCHW, size: [224, 224], resize: 256, interpolation: bilinear,
  color: RGB, scale: 0.00392156862745098, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}
labels: imagenet-1k
"""


def image_file(tmp_path: Path, size=(300, 240), seed: int = 0, name: str = "img.png") -> Path:
    """A generated RGB picture, not square, so resize and crop matter."""
    return picture(tmp_path / name, size, seed)


def test_card_declaration_parses_and_fills_channels(tmp_path):
    card = load_card(write(tmp_path, GOOD.replace("source:\n", PRE + "source:\n")))
    assert card.preprocessing["size"] == [224, 224] and card.preprocessing["source"] == "declared in the card"
    assert len(card.labels) == 1000 and card.labels[0] == "tench, Tinca tinca"
    assert missing_metadata(card) == []
    bare = load_card(write(tmp_path, GOOD))
    assert missing_metadata(bare) == ["preprocessing", "labels"]  # the ONNX zoo describes neither
    gray = load_card(write(tmp_path, GOOD.replace("source:\n", "preprocessing: {type: image, layout: NCHW, size: "
                                                  "[28, 28], interpolation: nearest, color: L, scale: 1, mean: [0], "
                                                  "std: [1]}\nlabels: [a, b]\nsource:\n")))
    assert gray.preprocessing["mean"] == [0.0] and gray.labels == ("a", "b")


@pytest.mark.parametrize("block,field", [
    ("{type: picture}", "preprocessing.type"),
    ("{type: image, layout: CHW, size: [2, 2], interpolation: bilinear, color: RGB, scale: 1, mean: [0], std: [1]}",
     "preprocessing.layout"),
    ("{type: image, layout: NCHW, size: 224, interpolation: bilinear, color: RGB, scale: 1, mean: [0], std: [1]}",
     "preprocessing.size"),
    ("{type: image, layout: NCHW, size: [224, 224], resize: 100, interpolation: bilinear, color: RGB, scale: 1, "
     "mean: [0], std: [1]}", "preprocessing.resize"),
    ("{type: image, layout: NCHW, size: [2, 2], interpolation: bilinear, color: RGB, scale: 1, mean: [0, 0], "
     "std: [1]}", "preprocessing.mean"),
    ("{type: image, layout: NCHW, size: [2, 2], interpolation: cubic, color: RGB, scale: 1, mean: [0], std: [1]}",
     "preprocessing.interpolation"),
    ("{type: text, tokenizer: tokenizer.json}", "preprocessing.max_length"),
    ("{type: tensor}", "preprocessing.note"),
])
def test_bad_declarations_name_the_field(tmp_path, block, field):
    with pytest.raises(CardError) as err:
        load_card(write(tmp_path, GOOD.replace("source:\n", f"preprocessing: {block}\nsource:\n")))
    line = GOOD.split("source:\n")[0].count("\n") + 1  # the flow mapping's line
    assert f"registry/onnx/resnet50.yaml: line {line}: {field}:" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("value,problem", [("imagenet-21k", "unknown label set"), ("[]", "expected a list"),
                                           ("{a: 1}", "expected a list")])
def test_bad_labels_refused(tmp_path, value, problem):
    with pytest.raises(CardError, match=problem):
        load_card(write(tmp_path, GOOD.replace("source:\n", f"labels: {value}\nsource:\n")))


def test_zoo_check_names_every_card_lacking_metadata(tmp_path):
    write(tmp_path, GOOD)
    write(tmp_path, GOOD.replace("name: resnet50", "name: other").replace("tags: [vision, classification]",
                                                                          "tags: [vision]"), name="other")
    write(tmp_path, GOOD.replace("name: resnet50", "name: fine").replace("source:\n", PRE + "source:\n"), name="fine")
    subprocess.run([sys.executable, "-m", "stages", "--root", str(tmp_path), "index"], check=True, capture_output=True)
    proc = subprocess.run([sys.executable, "-m", "stages", "--root", str(tmp_path), "check"],
                          capture_output=True, text=True)
    assert proc.returncode == 3
    (line,) = proc.stderr.strip().splitlines()
    assert "2 card(s) lack what their source does not describe: registry/onnx/other.yaml (preprocessing); " \
           "registry/onnx/resnet50.yaml (preprocessing, labels);" in line and "fine" not in line


def test_torchvision_record_reproduces_the_weights_transforms(tmp_path):
    from torchvision.models import get_model_weights

    for model, weights in (("squeezenet1_1", "IMAGENET1K_V1"), ("efficientnet_b0", "IMAGENET1K_V1"),
                           ("vit_b_16", "IMAGENET1K_V1")):
        w = getattr(get_model_weights(model), weights)
        pre = torchvision_kind.preprocessing(w)
        for size in ((300, 240), (200, 320)):
            path = image_file(tmp_path, size)
            from PIL import Image

            with Image.open(path) as img:
                expected = w.transforms()(img.convert("RGB")).unsqueeze(0).numpy()
            got = preprocess.load_image(pre, path)
            assert got.shape == expected.shape, model
            # the same PIL resize and crop, the same arithmetic up to float rounding (measured 7.2e-7)
            assert np.abs(got - expected).max() < 1e-5, (model, np.abs(got - expected).max())


def test_timm_record_reproduces_timms_eval_transform(tmp_path):
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    for cfg in ({"input_size": (3, 160, 160), "interpolation": "bicubic", "crop_pct": 0.875,
                 "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
                {"input_size": (3, 224, 224), "interpolation": "bilinear", "crop_pct": 0.9, "mean": (0.5,) * 3,
                 "std": (0.5,) * 3}):
        data_config = resolve_data_config({}, pretrained_cfg=cfg)
        pre = timm_kind.preprocessing(data_config)
        path = image_file(tmp_path, (301, 257))
        with Image.open(path) as img:
            expected = create_transform(**data_config, is_training=False)(img.convert("RGB")).unsqueeze(0).numpy()
        got = preprocess.load_image(pre, path)
        assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-5


@pytest.mark.parametrize("application,mode,color", [("MobileNetV2", "tf", "RGB"), ("ResNet50", "caffe", "BGR"),
                                                    ("DenseNet121", "torch", "RGB"),
                                                    ("EfficientNetB0", "none", "RGB")])
def test_keras_record_reproduces_preprocess_input(tmp_path, application, mode, color):
    from stages.frameworks import import_tf

    import_tf()
    import importlib

    import keras

    from stages.sources.keras import application_class, preprocessing

    pre = preprocessing(application, (96, 96, 3))
    assert f"(mode {mode}" in pre["source"] and pre["color"] == color and pre["layout"] == "NHWC"
    module = importlib.import_module(application_class(application).__module__.replace("keras.src.", "keras."))
    path = image_file(tmp_path, (150, 120))
    x = keras.utils.img_to_array(keras.utils.load_img(path, target_size=(96, 96)))[None]
    expected = np.asarray(module.preprocess_input(x.copy()))
    got = preprocess.load_image(pre, path)
    assert np.abs(got - expected).max() < 1e-3 * max(1.0, float(np.abs(expected).max()))


def test_text_record_tokenizes_like_transformers(tmp_path):
    from tests.support.mirror.torch_fixtures import tokenizer_files
    from transformers import AutoTokenizer

    folder = tmp_path / "tok"
    folder.mkdir()
    for name, data in tokenizer_files(tmp_path).items():
        (folder / name).write_bytes(data)
    pre = huggingface_kind.text_preprocessing(folder, {"max_position_embeddings": 64})
    assert pre["tokenizer"] == "tokenizer.json" and pre["max_length"] == 64 and "vocab.txt" in pre["files"]
    inputs = [("input_ids", "int64", [1, "seq"]), ("attention_mask", "int64", [1, "seq"]),
              ("token_type_ids", "int64", [1, "seq"])]
    text = "A tiny model reads THIS sentence " * 20  # longer than max_length: truncated like transformers
    feeds = preprocess.encode_text(pre, folder, text, inputs)
    expected = AutoTokenizer.from_pretrained(str(folder))(text, truncation=True, max_length=64, return_tensors="np")
    for name, _, _ in inputs:
        assert feeds[name].tolist() == expected[name].tolist()
    assert feeds["input_ids"].shape == (1, 64)


def test_labels_width_must_match_the_output(tmp_path):
    card = load_card(write(tmp_path, GOOD.replace("source:\n", PRE + "source:\n")))
    labels.check_width(card, list(card.labels), [{"name": "prob", "shape": [1, 1000, 1, 1]}])
    labels.check_width(card, list(card.labels), [{"name": "prob", "shape": ["N", "classes"]}])  # symbolic: later
    with pytest.raises(StagingError, match=r"1000 class names for output prob of shape \[1, 1001\]"):
        labels.check_width(card, list(card.labels), [{"name": "prob", "shape": [1, 1001]}])
    assert labels.named("imagenet-1k+background")[:2] == ["background", "tench, Tinca tinca"]


def test_preprocessing_must_fit_the_model_input(tmp_path):
    card = load_card(write(tmp_path, GOOD.replace("source:\n", PRE + "source:\n")))
    preprocess.check(card.preprocessing, card, [{"name": "x", "shape": ["N", 3, 224, 224]}], tmp_path)
    with pytest.raises(StagingError, match=r"NCHW width 224, the model.s input x has shape \[1, 224, 224, 3\]"):
        preprocess.check(card.preprocessing, card, [{"name": "x", "shape": [1, 224, 224, 3]}], tmp_path)
    with pytest.raises(StagingError, match="no preprocessing: the onnx-zoo source carries none"):
        preprocess.check(None, card, [], tmp_path)


def test_zoo_diff_shows_licence_and_preprocessing_changes():
    from types import SimpleNamespace

    from stages import diff

    pre = {"type": "image", "layout": "NCHW", "size": [224, 224], "resize": 256, "interpolation": "bilinear",
           "color": "RGB", "scale": 1 / 255, "mean": [0.5] * 3, "std": [0.5] * 3, "source": "card"}
    old = {"format": "onnx", "license": "apache-2.0", "preprocessing": pre, "model": {"labels": 1000}}
    new = {**old, "license": "mit", "preprocessing": {**pre, "interpolation": "bicubic"}}

    def snap(rev, manifest):
        return SimpleNamespace(rev=rev, commit=rev * 4, index={"cards": {"m": {"format": "onnx"}}},
                               manifests={"m": manifest})

    result = diff.diff(snap("a", old), snap("b", new))
    assert result["changed"]["m"] == {
        "license": {"": {"from": "apache-2.0", "to": "mit"}},
        "preprocessing": {"interpolation": {"from": "bilinear", "to": "bicubic"}}}
    assert "mit" in diff.render_table(result) and "bicubic" in diff.render_markdown(result)


@pytest.mark.parametrize("processor,config", [
    ("ViTImageProcessor", {"do_resize": True, "size": 224, "resample": 2, "do_normalize": True,  # google/vit-*'s
                           "image_mean": [0.5] * 3, "image_std": [0.5] * 3}),                   # int size: a square
    ("ViTImageProcessor", {"do_resize": True, "size": {"height": 224, "width": 224}, "resample": 2, "do_rescale": True,
                           "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5] * 3,
                           "image_std": [0.5] * 3}),
    ("CLIPImageProcessor", {"do_resize": True, "size": {"shortest_edge": 224}, "resample": 3, "do_center_crop": True,
                            "crop_size": {"height": 224, "width": 224}, "do_rescale": True,
                            "rescale_factor": 1 / 255, "do_normalize": True,
                            "image_mean": [0.48145466, 0.4578275, 0.40821073],
                            "image_std": [0.26862954, 0.26130258, 0.27577711], "do_convert_rgb": True}),
    ("CLIPImageProcessor", {"size": 224, "crop_size": 224, "do_center_crop": True, "resample": 3}),  # int: shortest edge
])
def test_hugging_face_record_reproduces_the_image_processor(tmp_path, processor, config):
    import json

    import transformers
    from PIL import Image

    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "preprocessor_config.json").write_text(json.dumps({**config, "image_processor_type": processor}))
    pre, extra = huggingface_kind.preprocessing(folder, {}, "image-classification", tmp_path)
    assert extra == {} and pre["source"] == f"Hugging Face preprocessor_config.json ({processor})"
    path = image_file(tmp_path, (300, 240))
    with Image.open(path) as img:
        expected = getattr(transformers, processor)(**config)(img.convert("RGB"), return_tensors="np")["pixel_values"]
    got = preprocess.load_image(pre, path)
    assert got.shape == expected.shape == (1, 3, 224, 224)
    assert np.abs(got - expected).max() < 1e-4  # both resize with PIL, then the same arithmetic


def test_a_repo_without_tokenizer_json_gets_transformers_conversion(tmp_path):
    """distilbert-sst2's repo, e.g., has vocab.txt and tokenizer_config.json only: transformers converts
    its slow tokenizer to tokenizer.json (byte-stable), which tokenizes as the slow one does."""
    from tests.support.mirror.torch_fixtures import tokenizer_files
    from transformers import BertTokenizer

    folder = tmp_path / "repo"
    folder.mkdir()
    for name, data in tokenizer_files(tmp_path).items():
        if name != "tokenizer.json":
            (folder / name).write_bytes(data)
    outs = []
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        pre, extra = huggingface_kind.preprocessing(folder, {"max_position_embeddings": 64}, "text-classification", tmp_path / run)
        outs.append(extra["tokenizer.json"].read_bytes())
    assert outs[0] == outs[1] and pre["tokenizer"] == "tokenizer.json" and "tokenizer.json" in pre["files"]
    assert pre["source"].startswith("tokenizer.json converted by transformers")
    (folder / "tokenizer.json").write_bytes(outs[0])  # staged beside the model, as the stage does
    inputs = [("input_ids", "int64", [1, "s"]), ("attention_mask", "int64", [1, "s"]), ("token_type_ids", "int64", [1, "s"])]
    text = "The tiny model reads this sentence, slowly!"
    feeds = preprocess.encode_text(pre, folder, text, inputs)
    slow = BertTokenizer.from_pretrained(str(folder))(text, truncation=True, max_length=64, return_tensors="np")
    assert feeds["input_ids"].tolist() == slow["input_ids"].tolist()


def test_zoo_run_refuses_per_position_scores(tmp_path):
    """A token classifier's [1, seq, classes] output is not a top-k: one clear line, not a wrong table."""
    import json

    import onnx
    from onnx import TensorProto, helper

    from stages.errors import RunError
    from stages.run import run

    folder = tmp_path / "registry/onnx/tok"
    folder.mkdir(parents=True)
    graph = helper.make_graph([helper.make_node("Cast", ["input_ids"], ["c"], to=TensorProto.FLOAT),
                               helper.make_node("Unsqueeze", ["c", "axes"], ["u"]),
                               helper.make_node("Concat", ["u", "u"], ["logits"], axis=2)], "tok",
                              [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "s"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, "s", 2])],
                              [helper.make_tensor("axes", TensorProto.INT64, [1], [2])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), folder / "model.onnx")
    from tests.support.mirror.torch_fixtures import tokenizer_files

    for name, data in tokenizer_files(tmp_path).items():
        (folder / name).write_bytes(data)
    (folder / "labels.txt").write_text("O\nB-X\n")
    (folder.parent / "tok.manifest.json").write_text(json.dumps({
        "format": "onnx", "model": {"inputs": [{"name": "input_ids", "dtype": "int64", "shape": [1, "s"]}]},
        "preprocessing": {"type": "text", "tokenizer": "tokenizer.json", "files": ["tokenizer.json"], "max_length": 8}}))
    with pytest.raises(RunError, match=r"output logits has shape \[1, 4, 2\]: scores per position"):
        run(folder, ["a b"])


def test_zoo_run_refuses_a_model_that_takes_raw_tensors(tmp_path):
    import json

    from stages.errors import RunError
    from stages.run import run

    folder = tmp_path / "registry/onnx/raw"
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"")
    (folder.parent / "raw.manifest.json").write_text(json.dumps({
        "format": "onnx", "preprocessing": {"type": "tensor", "note": "four numbers", "source": "declared in the card"}}))
    with pytest.raises(RunError, match=r"records no image or text preprocessing \(four numbers\)"):
        run(folder, ["x"])
