"""TensorFlow kinds end to end through real DVC: frozen, validated, byte-stable, ONNX targets, isolation.

TF Hub (direct and behind tfhub.dev's redirect to Kaggle), a Keras application and a Hugging Face
TensorFlow BERT, each from the offline mirror in its upstream's layout; three of them also ask for
an ONNX target through tf2onnx.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.support import sandbox
from tests.support.mirror import tf_fixtures

pytestmark = pytest.mark.e2e
TF = ("tfhub-tiny-classifier", "tfhub-moved-classifier", "keras-mobilenet-v2", "tiny-bert-tf")
ONNX_TARGETS = ("tfhub-tiny-classifier", "keras-mobilenet-v2", "tiny-bert-tf")
FORMATS = {"tfhub-tiny-classifier": "tensorflow", "tfhub-moved-classifier": "tensorflow",
           "keras-mobilenet-v2": "keras", "tiny-bert-tf": "tensorflow"}


def with_onnx_target(card: str, fmt: str) -> str:
    if "targets:" in card:
        return card
    return card.replace("source:\n", f"targets: [{fmt}, onnx]\nsource:\n", 1)


@pytest.fixture(scope="module")
def reg(tmp_path_factory, mirror_server, mirror_root):
    fixtures = tf_fixtures.build_tf_mirror(mirror_root)
    cards = {}
    for name in TF:
        text = fixtures[name].card
        if name in ONNX_TARGETS:
            text = with_onnx_target(text, FORMATS[name])
        cards[f"{FORMATS[name]}/{name}"] = text
    env = sandbox.env(mirror_server.url)
    repo = sandbox.new_registry(tmp_path_factory.mktemp("tf-e2e") / "registry", cards, env)
    return {"repo": repo, "env": env}


def dvc(reg, *args):
    return sandbox.run(["dvc", *args], reg["repo"], reg["env"]).stdout


def manifest(reg, fmt: str, name: str) -> dict:
    return json.loads((reg["repo"] / f"registry/{fmt}/{name}.manifest.json").read_text())


def test_every_tf_kind_stages_and_validates_through_dvc(reg):
    out = dvc(reg, "repro")
    assert sandbox.ran(out) == sorted([f"fetch@{n}" for n in TF] + [f"stage-tensorflow@{n}" for n in TF]
                              + [f"stage-tf2onnx@{n}" for n in ONNX_TARGETS])
    repo = reg["repo"]
    for name in TF:
        fmt = FORMATS[name]
        data = manifest(reg, fmt, name)
        assert data["validation"]["passed"] is True and data["validation"]["cases"] >= 2, name
        assert "model.pb" in data["files"] and (repo / f"registry/{fmt}/{name}/model.pb").is_file()
        for io in data["model"]["inputs"] + data["model"]["outputs"]:
            assert re.fullmatch(r"[\w/.-]+:\d+", io["tensor"]), io  # what a user feeds and fetches
    keras = manifest(reg, "keras", "keras-mobilenet-v2")
    assert {"model.keras", "model.h5", "model.pb"} <= set(keras["files"])
    assert keras["validation"]["files"] == ["model.h5", "model.keras", "model.pb"]
    bert = manifest(reg, "tensorflow", "tiny-bert-tf")
    assert bert["validation"]["cases"] == 4  # 2 batch sizes x 2 sequence lengths
    assert {"vocab.txt", "tokenizer.json"} <= set(bert["files"])
    assert sorted(i["name"] for i in bert["model"]["inputs"]) == ["attention_mask", "input_ids", "token_type_ids"]
    for name in ONNX_TARGETS:
        data = manifest(reg, "onnx", name)
        assert data["format"] == "onnx" and data["validation"]["passed"] is True, name
        assert data["model"]["exporter"].startswith("tf2onnx 1.17.0")
        assert data["model"]["inputs"][0]["shape"][0] == "batch"
    fetched = json.loads((repo / "registry/_raw/tfhub-moved-classifier/_fetch.json").read_text())
    assert fetched["files"][0]["redirected_to"].startswith("https://www.kaggle.com/models/zoo-fixtures/moved-classifier/")
    # golden data from the source framework beside every staged model; `zoo verify` runs each file on it
    folders = [f"registry/{FORMATS[n]}/{n}" for n in TF] + [f"registry/onnx/{n}" for n in ONNX_TARGETS]
    out = sandbox.run(["zoo", "verify", *folders], repo, reg["env"]).stdout
    assert out.count(" ok\n") == len(TF) + len(ONNX_TARGETS) + 2  # + model.keras and model.h5
    assert "keras/keras-mobilenet-v2: model.h5 on 1 golden set(s)" in out
    sandbox.run(["git", "add", "-A"], repo, reg["env"])
    sandbox.run(["git", "commit", "-q", "-m", "stage"], repo, reg["env"])
    # release diffs see each ONNX target as its own artifact, `<name>-onnx`, beside the card's own
    diff = json.loads(sandbox.run(["zoo", "diff", "HEAD~1", "HEAD", "--json"], repo, reg["env"]).stdout)
    assert diff["added"] == {f"{n}-onnx": "onnx" for n in ONNX_TARGETS}
    assert sorted(diff["changed"]) == sorted(TF)  # staged now: files, io, validation appear


def test_forced_restage_in_new_processes_changes_no_byte(reg):
    stages = [f"stage-tensorflow@{n}" for n in TF] + [f"stage-tf2onnx@{n}" for n in ONNX_TARGETS]
    out = dvc(reg, "repro", "--force", *[sandbox.stage(reg["repo"], s) for s in stages], "--single-item")
    assert sandbox.ran(out) == sorted(stages)
    # every staged file (model.pb, model.keras, model.h5, model.onnx) hashes the same: manifests
    # and the shards' dvc.lock files are unchanged
    assert sandbox.run(["git", "status", "--porcelain"], reg["repo"], reg["env"]).stdout == ""


def test_verify_fails_with_the_numbers_on_tampered_golden_data(reg, tmp_path):
    import shutil

    from stages.golden import read_tensors, write_set
    from stages.manifest import file_records

    folder = tmp_path / "registry/tensorflow/tfhub-tiny-classifier"
    shutil.copytree(reg["repo"] / "registry/tensorflow/tfhub-tiny-classifier", folder)
    shutil.copy(reg["repo"] / "registry/tensorflow/tfhub-tiny-classifier.manifest.json", folder.parent)
    inputs = read_tensors(folder / "test_data_set_0", "input")
    (name, value), = read_tensors(folder / "test_data_set_0", "output")
    write_set(folder, inputs, [(name, value + 0.01)])
    record = folder.with_name(f"{folder.name}.manifest.json")  # tampered consistently: the bytes check passes
    record.write_text(json.dumps(json.loads(record.read_text()) | {"files": file_records(folder)}))
    out = sandbox.run(["zoo", "verify", str(folder)], reg["repo"], reg["env"], check=False)
    assert out.returncode == 6
    assert "probabilities[model.pb test_data_set_0]: max abs 0.01" in out.stderr


def test_tf2onnx_params_change_touches_only_onnx_targets(reg):
    params = reg["repo"] / "params.yaml"
    params.write_text(params.read_text().replace("tf2onnx:\n  opset: 17", "tf2onnx:\n  opset: 16"))
    status = dvc(reg, "status")
    changed = sorted({sandbox.short(s) for s in re.findall(r"^(\S+@\S+):", status, flags=re.M)})
    assert changed == sorted(f"stage-tf2onnx@{n}" for n in ONNX_TARGETS)
    params.write_text(params.read_text().replace("tf2onnx:\n  opset: 16", "tf2onnx:\n  opset: 17"))
    tf_params = params.read_text().replace("tensorflow:\n  atol: 1.0e-4", "tensorflow:\n  atol: 2.0e-4")
    params.write_text(tf_params)
    changed = sorted({sandbox.short(s) for s in re.findall(r"^(\S+@\S+):", dvc(reg, "status"), flags=re.M)})
    assert changed == sorted(f"stage-tensorflow@{n}" for n in TF)
