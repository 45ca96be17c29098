"""TensorFlow staging: bad archives, unfreezable graphs, hash mismatches and parity failures, one line each.

Called through stages.pipeline in this process (the DVC path is test_tf_e2e). Every failure must
leave nothing under the final names: no staged folder, no manifest, no temp files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stages.errors import HashMismatchError, ParityError, StagingError, UnsafeArchiveError
from stages.pipeline import fetch_card, stage_card
from tests.conftest import leftovers, make_root

from tests.support.mirror import tf_fixtures  # noqa: E402  (imports TensorFlow only when a builder runs)


@pytest.fixture(scope="session")
def tf_cards(mirror_root):
    return tf_fixtures.build_tf_mirror(mirror_root)


def card_path(text: str) -> tuple[str, str, str]:
    name = text.split("name: ", 1)[1].split("\n", 1)[0]
    fmt = text.split("format: ", 1)[1].split("\n", 1)[0]
    return name, fmt, f"registry/{fmt}/{name}.yaml"


def fetch_then_stage(tmp_path: Path, text: str, target: str | None = None) -> tuple[Path, str, str]:
    name, fmt, path = card_path(text)
    root = make_root(tmp_path, {f"{fmt}/{name}": text})
    fetch_card(root, Path(path))
    stage_card(root, Path(path), target)
    return root, name, fmt


def assert_nothing_staged(root: Path, name: str, fmt: str) -> None:
    assert not (root / f"registry/{fmt}/{name}").exists()
    assert not (root / f"registry/{fmt}/{name}.manifest.json").exists()
    assert leftovers(root) == []


@pytest.mark.parametrize("builder,problem", [
    ("tfhub_traversal", "would extract outside the target folder"),
    ("tfhub_symlink", "points outside the archive"),
    ("tfhub_no_savedmodel", "holds no SavedModel"),
    ("tfhub_empty", "is an empty archive"),
    ("tfhub_table", "cannot be frozen"),
])
def test_bad_tfhub_archives_fail_with_one_line(mirror, mirror_root, tmp_path, builder, problem):
    text = getattr(tf_fixtures, builder)(mirror_root)
    name, fmt, path = card_path(text)
    root = make_root(tmp_path, {f"{fmt}/{name}": text})
    fetch_card(root, Path(path))
    with pytest.raises((StagingError, UnsafeArchiveError)) as info:
        stage_card(root, Path(path))
    message = str(info.value)
    assert problem in message and "\n" not in message and "; " in message  # what, then how to fix
    assert_nothing_staged(root, name, fmt)


def test_the_table_model_says_why_it_cannot_be_frozen(mirror, mirror_root, tmp_path):
    text = tf_fixtures.tfhub_table(mirror_root)
    name, fmt, path = card_path(text)
    root = make_root(tmp_path, {f"{fmt}/{name}": text})
    fetch_card(root, Path(path))
    with pytest.raises(StagingError, match=r"still reads a lookup table \(LookupTableFindV2\)"):
        stage_card(root, Path(path))


def test_a_tarball_cut_short_is_damaged_not_a_model(mirror, mirror_root, tmp_path, tf_cards):
    import hashlib

    good = (mirror_root / "tfhub.dev/zoo-fixtures/tiny-classifier/1").read_bytes()
    cut = good[: len(good) // 2]
    target = mirror_root / "tfhub.dev/zoo-fixtures/cut/1"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(cut)
    text = (tf_cards["tfhub-tiny-classifier"].card.replace("tfhub-tiny-classifier", "tfhub-cut")
            .replace("tiny-classifier/1", "cut/1").replace("targets: [tensorflow, onnx]\n", ""))
    text = text.replace(text.split("sha256: ")[1].split("\n")[0], hashlib.sha256(cut).hexdigest())
    name, fmt, path = card_path(text)
    root = make_root(tmp_path, {f"{fmt}/{name}": text})
    fetch_card(root, Path(path))
    with pytest.raises(StagingError, match="truncated or damaged"):
        stage_card(root, Path(path))
    assert_nothing_staged(root, name, fmt)


def test_hash_mismatch_keeps_nothing(mirror, mirror_root, tmp_path, tf_cards):
    text = tf_cards["tfhub-tiny-classifier"].card
    text = text.replace(text.split("sha256: ")[1].split("\n")[0], "f" * 64)
    name, fmt, path = card_path(text)
    root = make_root(tmp_path, {f"{fmt}/{name}": text})
    with pytest.raises(HashMismatchError, match="sha256 mismatch: pinned ffff"):
        fetch_card(root, Path(path))
    assert not (root / f"registry/_raw/{name}").exists() and leftovers(root) == []


def test_the_frozen_graph_imports_alone_and_matches_the_savedmodel(mirror, tmp_path, tf_cards):
    """The staged model.pb, read with nothing but TensorFlow, gives the SavedModel's numbers."""
    import numpy as np
    import tensorflow as tf

    root, name, fmt = fetch_then_stage(tmp_path, tf_cards["tfhub-tiny-classifier"].card)
    data = json.loads((root / f"registry/{fmt}/{name}.manifest.json").read_text())
    (inp,), (out,) = data["model"]["inputs"], data["model"]["outputs"]
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString((root / f"registry/{fmt}/{name}/model.pb").read_bytes())
    assert not {n.op for n in graph_def.node} & {"VarHandleOp", "ReadVariableOp"}  # variables are folded in
    x = np.random.default_rng(5).random((3, *inp["shape"][1:]), dtype=np.float32)
    with tf.Graph().as_default() as graph:
        tf.compat.v1.import_graph_def(graph_def, name="")
        with tf.compat.v1.Session(graph=graph) as sess:
            frozen = sess.run(out["tensor"], {inp["tensor"]: x})
    import tarfile

    with tarfile.open(root / f"registry/_raw/{name}/saved_model.tar.gz") as tar:
        tar.extractall(tmp_path / "sm", filter="data")
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    source = loaded.signatures["serving_default"](**{inp["name"]: tf.constant(x)})[out["name"]].numpy()
    np.testing.assert_allclose(frozen, source, rtol=1e-5, atol=1e-6)
    assert data["validation"]["max_abs_error"] is not None


def test_a_parity_failure_reports_the_numbers(mirror, tmp_path, tf_cards):
    """ONNX Runtime and TensorFlow never agree to the last bit: with zero tolerance the stage must fail, with numbers."""
    text = tf_cards["tfhub-tiny-classifier"].card + "validation:\n  atol: 0\n  rtol: 0\n"
    name, fmt, path = card_path(text)
    root = make_root(tmp_path, {f"{fmt}/{name}": text})
    fetch_card(root, Path(path))
    with pytest.raises(ParityError) as info:
        stage_card(root, Path(path), "onnx")
    message = str(info.value)
    assert "[model.onnx batch1]" in message and "max abs" in message
    assert_nothing_staged(root, name, "onnx")


def test_huggingface_tf_from_pytorch_weights(mirror, mirror_root, tmp_path):
    """A repo with only PyTorch safetensors, built as a TF model with `from_pytorch: true`, frozen and validated."""
    from tests.support.mirror import torch_fixtures

    pt = torch_fixtures.build_tiny_bert(mirror_root).card  # model.safetensors, no tf_model.h5
    text = (pt.replace("name: tiny-bert", "name: tiny-bert-from-pt").replace("format: onnx", "format: tensorflow")
            .replace("framework: pytorch", "framework: tensorflow") + "  from_pytorch: true\n")
    root, name, fmt = fetch_then_stage(tmp_path, text)
    data = json.loads((root / f"registry/{fmt}/{name}.manifest.json").read_text())
    assert data["validation"]["passed"] is True and data["validation"]["cases"] == 4
    assert data["model"]["weights"] == "pytorch (safetensors)"
    assert [f["filename"] for f in data["source"]["files"] if f["filename"].endswith(".safetensors")] == ["model.safetensors"]
    without = text.replace("  from_pytorch: true\n", "").replace("tiny-bert-from-pt", "tiny-bert-no-tf")
    name, fmt, path = card_path(without)
    root = make_root(tmp_path / "no-tf", {f"{fmt}/{name}": without})
    with pytest.raises(StagingError, match=r"no weights in a usable format \(tf_model.h5.*from_pytorch: true"):
        fetch_card(root, Path(path))


def test_a_tf_classifier_stages_its_labels_in_both_formats(mirror, mirror_root, tmp_path):
    """transformers' id2label, in output order, as labels.txt beside model.pb and the ONNX target's model.onnx."""
    from tests.support.mirror import torch_fixtures

    pt = torch_fixtures.build_tiny_bert_cls(mirror_root).card
    text = (pt.replace("name: tiny-bert-cls", "name: tiny-bert-cls-tf").replace("format: onnx", "format: tensorflow")
            .replace("framework: pytorch", "framework: tensorflow").replace("source:\n", "targets: [tensorflow, onnx]\nsource:\n")
            + "  from_pytorch: true\n")
    root, name, fmt = fetch_then_stage(tmp_path, text)
    stage_card(root, Path(f"registry/{fmt}/{name}.yaml"), "onnx")
    for folder in ("tensorflow", "onnx"):
        manifest = json.loads((root / f"registry/{folder}/{name}.manifest.json").read_text())
        assert manifest["model"]["labels"] == 3 and "labels.txt" in manifest["files"]
        assert (root / f"registry/{folder}/{name}/labels.txt").read_text() == "negative\nneutral\npositive\n"
        # the tokenizer files staged beside both formats are what the preprocessing record names
        pre = manifest["preprocessing"]
        assert pre["type"] == "text" and pre["max_length"] == 64 and set(pre["files"]) <= set(manifest["files"])


def test_declared_labels_must_fit_the_output_and_nothing_is_staged(mirror, tmp_path, tf_cards):
    text = tf_cards["tfhub-tiny-classifier"].card
    text = text[:text.index("\nlabels: ") + 1] + "labels: imagenet-1k\n" + text[text.index("\nsource:\n") + 1:]
    name, fmt, path = card_path(text)
    root = make_root(tmp_path, {f"{fmt}/{name}": text})
    fetch_card(root, Path(path))
    with pytest.raises(StagingError, match=r"1000 class names for output probabilities of shape \[.*, 10\]"):
        stage_card(root, Path(path))
    assert_nothing_staged(root, name, fmt)


def test_a_classifier_without_labels_or_preprocessing_is_refused(mirror, tmp_path, tf_cards):
    full = tf_cards["tfhub-tiny-classifier"].card
    no_labels = full[:full.index("\nlabels: ") + 1] + full[full.index("\nsource:\n") + 1:]
    no_pre = full[:full.index("\npreprocessing: ") + 1] + full[full.index("\nlabels: ") + 1:]
    for text, problem in ((no_labels, "a classifier without class names: the tfhub source gives none"),
                          (no_pre, "no preprocessing: the tfhub source carries none and the card declares none")):
        name, fmt, path = card_path(text)
        root = make_root(tmp_path / problem[:5], {f"{fmt}/{name}": text})
        fetch_card(root, Path(path))
        with pytest.raises(StagingError, match=problem):
            stage_card(root, Path(path))
        assert_nothing_staged(root, name, fmt)


def test_two_inputs_out_of_name_order_and_a_layer_norm_freeze_correctly(mirror, mirror_root, tmp_path):
    """Found on a real sentence encoder: its frozen model.pb differed from its source by 0.24. Both
    targets are staged, and model.pb, read back with plain TensorFlow and fed by the manifest's
    names, matches the original SavedModel; feeding the two inputs swapped does not."""
    import numpy as np

    from stages.frameworks import import_tf
    from stages.convert.tensorflow import frozen_runner

    text = tf_fixtures.build_tfhub_two_inputs(mirror_root).card
    root, name, fmt = fetch_then_stage(tmp_path, text)
    stage_card(root, Path(f"registry/{fmt}/{name}.yaml"), "onnx")
    manifest = json.loads((root / f"registry/tensorflow/{name}.manifest.json").read_text())
    assert [(i["name"], i["tensor"]) for i in manifest["model"]["inputs"]] == [("alpha", "alpha:0"), ("zeta", "zeta:0")]
    assert manifest["validation"]["passed"] and manifest["validation"]["runs"][0]["shapes"] == {
        "alpha": [1, 4], "zeta": [1, 4]}
    tf = import_tf()
    folder = mirror_root / ".tf-fixture-cache" / "sm"
    import tarfile

    with tarfile.open(mirror_root / ".tf-fixture-cache" / "two-inputs.tar.gz") as tar:
        tar.extractall(folder, filter="data")
    source = tf.saved_model.load(str(folder)).signatures["serving_default"]
    rng = np.random.default_rng(5)
    feeds = {"alpha": rng.random((3, 4), dtype=np.float32), "zeta": rng.random((3, 4), dtype=np.float32)}
    expected = {k: v.numpy() for k, v in source(**{k: tf.constant(v) for k, v in feeds.items()}).items()}
    run = frozen_runner(root / f"registry/tensorflow/{name}/model.pb", manifest["model"]["inputs"],
                        manifest["model"]["outputs"])
    got = run(feeds)
    for key in ("normed", "raw"):
        np.testing.assert_allclose(got[key], expected[key], atol=1e-5)
    swapped = run({"alpha": feeds["zeta"], "zeta": feeds["alpha"]})
    assert np.abs(swapped["raw"] - expected["raw"]).max() > 1e-2
    from stages import onnxrt

    onnx_manifest = json.loads((root / f"registry/onnx/{name}.manifest.json").read_text())
    assert [i["name"] for i in onnx_manifest["model"]["inputs"]] == ["alpha", "zeta"]
    sess = onnxrt.session(root / f"registry/onnx/{name}/model.onnx", {"threads": 1})
    onnx_out = onnxrt.run(sess, feeds, "test")
    for key in ("normed", "raw"):
        np.testing.assert_allclose(onnx_out[key], expected[key], atol=1e-5)
