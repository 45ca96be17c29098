"""PyTorch zoos and Hugging Face (PyTorch) staged as ONNX: every kind, its safety rules and its numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stages.card import load_card
from stages.errors import CardError, HashMismatchError, ParityError, StagingError, UnsafeArchiveError
from stages.files import sha256_file
from stages.pipeline import fetch_card, stage_card
from tests.conftest import leftovers, make_root

from tests.support.mirror import torch_fixtures
GOOD = ("tv-squeezenet", "timm-test-effnet", "tiny-bert", "tiny-bert-cls", "mar-scripted", "mar-eager", "hub-tiny")


@pytest.fixture(scope="session")
def torch_cards(mirror_root):
    return torch_fixtures.build_torch_mirror(mirror_root)


def fetch_and_stage(root: Path, name: str) -> dict:
    card = Path(f"registry/onnx/{name}.yaml")
    fetch_card(root, card)
    stage_card(root, card)
    return json.loads((root / f"registry/onnx/{name}.manifest.json").read_text())


def set_param(root: Path, key: str, value: str) -> None:
    params = root / "params.yaml"
    text = params.read_text()
    head, tail = text.split("\ntorch:\n")
    lines = [f"  {key}: {value}" if line.strip().startswith(f"{key}:") else line for line in tail.split("\n")]
    params.write_text(head + "\ntorch:\n" + "\n".join(lines))


@pytest.mark.parametrize("name", GOOD)
def test_each_kind_stages_and_matches_pytorch(mirror, torch_cards, tmp_path, name):
    root = make_root(tmp_path, {f"onnx/{name}": torch_cards[name].card})
    manifest = fetch_and_stage(root, name)
    validation = manifest["validation"]
    assert validation["passed"] is True and validation["reference"].startswith("pytorch model")
    text = name.startswith("tiny-bert")
    assert validation["cases"] == (4 if text else 2)  # 2 batch sizes (x 2 sequence lengths for text)
    model = manifest["model"]
    assert model["opset"]["ai.onnx"] == 18
    assert model["exporter"] == ("torchscript" if name == "mar-scripted" else "dynamo")
    first = model["inputs"][0]
    assert isinstance(first["shape"][0], str)  # a symbolic batch dim
    if text:
        assert isinstance(first["shape"][1], str)  # and a symbolic sequence dim
        assert {"tokenizer.json", "vocab.txt", "config.json"} <= set(manifest["files"])
    for rel, rec in manifest["files"].items():
        assert sha256_file(root / f"registry/onnx/{name}" / rel) == rec["sha256"]
    # golden data computed by PyTorch, and the staged model passes `zoo verify` on it
    from stages.verify import verify

    assert {"test_data_set_0/input_0.pb", "test_data_set_0/output_0.pb"} <= set(manifest["files"])
    assert verify(root / f"registry/onnx/{name}")["files"]["model.onnx"]["passed"] is True
    # class names from the source's own metadata: torchvision's weights meta, the model's id2label, timm's
    # ImageNet info, the .mar's index_to_name.json; the torch.hub card declares its own
    labels_file = root / f"registry/onnx/{name}/labels.txt"
    expected = {"tv-squeezenet": 1000, "timm-test-effnet": 1000, "tiny-bert-cls": 3, "mar-scripted": 10,
                "mar-eager": 10, "hub-tiny": 10}.get(name)
    assert model.get("labels") == expected and labels_file.exists() == bool(expected)
    if name == "tv-squeezenet":
        assert labels_file.read_text().splitlines()[:2] == ["tench", "goldfish"]
    if name == "timm-test-effnet":
        assert labels_file.read_text().splitlines()[:2] == ["tench, Tinca tinca", "goldfish, Carassius auratus"]
    if name.startswith(("mar-", "hub-")):
        assert labels_file.read_text().splitlines()[:2] == ["airplane", "automobile"]
    # preprocessing from the source's metadata (torchvision transforms, timm's pretrained_cfg, the tokenizer)
    # or, for torch.hub and TorchServe, declared by the card
    pre = manifest["preprocessing"]
    if name == "tv-squeezenet":
        assert (pre["size"], pre["resize"], pre["interpolation"], pre["mean"]) == (
            [224, 224], 256, "bilinear", [0.485, 0.456, 0.406]) and pre["source"].startswith("torchvision")
    elif name == "timm-test-effnet":
        assert (pre["size"], pre["resize"], pre["interpolation"]) == ([160, 160], 168, "bicubic")  # floor(160 / 0.95)
        assert pre["source"].startswith("timm pretrained_cfg (crop_pct 0.95,")
    elif text:
        assert pre == {"type": "text", "tokenizer": "tokenizer.json", "max_length": 64,
                       "files": ["special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"],
                       "source": "the repo's tokenizer files; max length from tokenizer_config.json model_max_length"}
    else:
        assert (pre["size"], pre["source"]) == ([32, 32], "declared in the card")
    if name == "tiny-bert-cls":
        assert labels_file.read_text() == "negative\nneutral\npositive\n"
    assert "torch" in manifest["converter"]["versions"] and "onnxruntime" in manifest["converter"]["versions"]
    assert leftovers(root) == []


def test_classifier_outputs_and_token_type_inputs(mirror, torch_cards, tmp_path):
    root = make_root(tmp_path, {"onnx/tiny-bert-cls": torch_cards["tiny-bert-cls"].card})
    manifest = fetch_and_stage(root, "tiny-bert-cls")
    assert [o["name"] for o in manifest["model"]["outputs"]] == ["logits"]
    assert [i["name"] for i in manifest["model"]["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert manifest["model"]["outputs"][0]["shape"][1] == 3
    # `zoo run` on texts: the staged tokenizer and labels.txt give transformers' own class probabilities
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from stages.run import run

    texts = ["a tiny sentence", "the quick brown fox jumps over the lazy dog"]
    result = run(root / "registry/onnx/tiny-bert-cls", texts, top_k=3)
    raw = root / "registry/_raw/tiny-bert-cls"
    tokenizer = AutoTokenizer.from_pretrained(str(raw))
    model = AutoModelForSequenceClassification.from_pretrained(str(raw)).eval()
    for text, row in zip(texts, result["results"], strict=True):
        with torch.no_grad():
            probs = torch.softmax(model(**tokenizer(text, return_tensors="pt")).logits, -1)[0].numpy()
        assert [t["label"] for t in row["top"]] == [model.config.id2label[int(i)] for i in np.argsort(-probs)]
        assert max(abs(t["score"] - probs[t["index"]]) for t in row["top"]) < 1e-5


@pytest.mark.parametrize("name", ["tv-squeezenet", "tiny-bert"])
def test_export_is_byte_stable_across_processes(mirror, torch_cards, tmp_path, name):
    root = make_root(tmp_path, {f"onnx/{name}": torch_cards[name].card})
    fetch_card(root, Path(f"registry/onnx/{name}.yaml"))
    timings = tmp_path / "timings.jsonl"
    snapshots = []
    for seed in ("0", "123"):
        env = {**os.environ, "ZOO_TIMINGS": str(timings), "PYTHONHASHSEED": seed}
        proc = subprocess.run([sys.executable, "-m", "stages", "--root", str(root), "stage", f"registry/onnx/{name}.yaml"],
                              capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        folder = root / "registry/onnx"
        snapshots.append({str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()})
    assert snapshots[0] == snapshots[1]
    runs = [json.loads(line) for line in timings.read_text().splitlines()]
    assert all("tensorflow" not in r["heavy_modules"] and "torch" in r["heavy_modules"] for r in runs)


def test_staged_bytes_do_not_name_where_the_registry_code_lives(mirror, torch_cards, tmp_path):
    """torch's dynamo exporter writes every module's qualified name into the nodes' metadata. The
    Hugging Face wrapper's name is pinned (stages.sources.huggingface.WRAPPER_*), so moving the
    registry's own code does not change staged bytes (it did once: the restructure that moved the
    builders into stages/sources/ changed tiny-bert's model.onnx until the name was pinned)."""
    import onnx

    from stages.sources import huggingface

    root = make_root(tmp_path, {"onnx/tiny-bert": torch_cards["tiny-bert"].card})
    fetch_and_stage(root, "tiny-bert")
    model = onnx.load(str(root / "registry/onnx/tiny-bert/model.onnx"), load_external_data=False)
    values = [p.value for n in model.graph.node for p in n.metadata_props]
    pinned = f"{huggingface.WRAPPER_MODULE}.{huggingface.WRAPPER_QUALNAME}"
    assert values and any(pinned in v for v in values)
    assert not [v for v in values if "stages.sources" in v or "stages.convert.torch." in v]


def test_external_data_above_the_threshold(mirror, torch_cards, tmp_path):
    root = make_root(tmp_path, {"onnx/tv-squeezenet": torch_cards["tv-squeezenet"].card})
    set_param(root, "external_data_threshold_mb", "0")
    manifest = fetch_and_stage(root, "tv-squeezenet")
    assert sorted(manifest["files"]) == ["labels.txt", "model.onnx", "model.onnx.data", "test_data_set_0/input_0.pb",
                                         "test_data_set_0/output_0.pb"]
    assert manifest["files"]["model.onnx.data"]["size"] > manifest["files"]["model.onnx"]["size"]
    from stages.verify import verify  # the external data is found beside model.onnx

    assert verify(root / "registry/onnx/tv-squeezenet")["files"]["model.onnx"]["passed"] is True
    assert manifest["validation"]["passed"] is True


def test_torchvision_url_and_hash_prefix_come_from_the_weights_enum(mirror, torch_cards, mirror_root, tmp_path):
    """Without `url:`, the enum's URL is fetched and its file name's sha256 prefix is checked."""
    from stages.sources.torchvision import Torchvision

    text = torch_cards["tv-squeezenet"].card
    card_text = "\n".join(line for line in text.splitlines()
                          if not line.strip().startswith(("url:", "sha256:"))) + "\n"
    root = make_root(tmp_path, {"onnx/tv-squeezenet": card_text})
    card = load_card(Path("registry/onnx/tv-squeezenet.yaml"), root)
    (remote,) = Torchvision.remote_files(card.source)
    assert remote.url == "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth"
    assert remote.sha256 is None and remote.sha256_prefix == "b8a52dc0"
    served = sorted((mirror_root / "download.pytorch.org/models").glob("squeezenet1_1-*.pth"))[0].read_bytes()
    from tests.support.mirror.fixtures import publish

    publish(mirror_root, remote.url, served)  # the mirror serves other bytes under the real name
    with pytest.raises(HashMismatchError, match=r"pinned b8a52dc0\.\.\., got"):
        fetch_card(root, card.path)
    assert not (root / "registry/_raw/tv-squeezenet").exists() and leftovers(root) == []


def test_torchhub_without_trust_code_is_refused(mirror, torch_cards, mirror_root, tmp_path):
    root = make_root(tmp_path, {})
    path = root / "registry/onnx/hub-tiny.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(torch_fixtures.hub_without_trust(mirror_root))
    with pytest.raises(CardError, match="trust_code: kind 'torchhub' runs third-party code.*add `trust_code: true`"):
        load_card(path.relative_to(root), root)


def test_eager_mar_without_trust_code_is_refused(mirror, torch_cards, tmp_path):
    text = torch_cards["mar-eager"].card.replace("trust_code: true\n", "")
    root = make_root(tmp_path, {"onnx/mar-eager": text})
    with pytest.raises(StagingError, match=r"staging runs third-party code \(.*model.py\).*set `trust_code: true`"):
        fetch_and_stage(root, "mar-eager")
    assert not (root / "registry/onnx/mar-eager").exists()


@pytest.mark.parametrize("builder,problem", [
    ("bad_mar_traversal", r"entry '../evil.py' would extract outside the target folder"),
    ("bad_mar_absolute", r"entry '/tmp/evil.py' has an absolute path"),
])
def test_mar_with_unsafe_entries_is_refused(mirror, torch_cards, mirror_root, tmp_path, builder, problem):
    text = getattr(torch_fixtures, builder)(mirror_root)
    name = text.split("name: ")[1].split("\n")[0]
    root = make_root(tmp_path, {f"onnx/{name}": text})
    with pytest.raises(UnsafeArchiveError, match=problem):
        fetch_and_stage(root, name)
    assert not (root / f"registry/onnx/{name}").exists() and not list(tmp_path.rglob("evil.py"))


def test_pickle_needing_weights_only_false_is_refused(mirror, torch_cards, mirror_root, tmp_path):
    text = torch_fixtures.unsafe_pickle_repo(mirror_root)
    name = text.split("name: ")[1].split("\n")[0]
    root = make_root(tmp_path, {f"onnx/{name}": text})
    with pytest.raises(StagingError, match="is a pickle that needs weights_only=False"):
        fetch_and_stage(root, name)
    assert not (root / f"registry/onnx/{name}").exists()


def test_branch_as_revision_is_refused(tmp_path, torch_cards):
    text = torch_cards["tiny-bert"].card
    revision = text.split("revision: ")[1].split("\n")[0]
    root = make_root(tmp_path, {})
    path = root / "registry/onnx/tiny-bert.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.replace(revision, "main"))
    with pytest.raises(CardError, match=r"source.revision: 'main' is not a 40-hex commit \(a branch such as main moves\)"):
        load_card(path.relative_to(root), root)


def test_wrong_export_fails_its_stage_with_the_numbers(mirror, torch_cards, mirror_root, tmp_path):
    """Python control flow on a tensor: the TorchScript tracer bakes one branch in. The check catches it."""
    text = torch_fixtures.branchy_hub(mirror_root)
    name = text.split("name: ")[1].split("\n")[0]
    root = make_root(tmp_path, {f"onnx/{name}": text})
    set_param(root, "exporter", "torchscript")
    with pytest.raises(ParityError) as info:
        fetch_and_stage(root, name)
    message = str(info.value)
    assert "outputs differ from the reference" in message and "max abs" in message and "(atol 0.0001)" in message
    assert not (root / f"registry/onnx/{name}").exists() and leftovers(root) == []


def test_data_dependent_model_fails_dynamo_export_clearly(mirror, torch_cards, mirror_root, tmp_path):
    text = torch_fixtures.branchy_hub(mirror_root)
    name = text.split("name: ")[1].split("\n")[0]
    root = make_root(tmp_path, {f"onnx/{name}": text})
    with pytest.raises((StagingError, ParityError), match=r"torch.onnx.export \(dynamo, opset 18\) failed|outputs differ"):
        fetch_and_stage(root, name)
    assert not (root / f"registry/onnx/{name}").exists()
