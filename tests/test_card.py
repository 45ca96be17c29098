"""Card schema: every malformed card is one line naming the file, the field and the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stages import index, indexfile
from stages.card import load_card
from stages.errors import CardError, IndexStaleError

SHA = "a" * 64
COMMIT = "b" * 40
GOOD = f"""name: resnet50
format: onnx
description: ResNet-50 v1
license: apache-2.0
tags: [vision, classification]
source:
  kind: onnx-zoo
  url: https://github.com/onnx/models/raw/{COMMIT}/resnet50-v1-7.onnx
  sha256: {SHA}
validation:
  atol: 1.0e-4
  rtol: 1.0e-3
"""
PROJECT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str, name: str = "resnet50", fmt: str = "onnx") -> Path:
    if not (tmp_path / "dvc.yaml").exists():
        (tmp_path / "dvc.yaml").write_text((PROJECT / "dvc.yaml").read_text().split("\nartifacts:")[0])
    path = tmp_path / "registry" / fmt / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_good_card_parses_into_frozen_schema(tmp_path):
    card = load_card(write(tmp_path, GOOD))
    assert (card.name, card.format, card.kind, card.license) == ("resnet50", "onnx", "onnx-zoo", "apache-2.0")
    assert card.tags == ("vision", "classification")
    assert card.source.model.sha256 == SHA and card.source.model.url.endswith("resnet50-v1-7.onnx")
    assert card.validation.atol == 1e-4 and card.validation.rtol == 1e-3
    assert str(card.staged_dir) == "registry/onnx/resnet50"
    with pytest.raises(AttributeError):
        card.name = "other"


def test_hugging_face_form_parses(tmp_path):
    text = GOOD.replace(f"  url: https://github.com/onnx/models/raw/{COMMIT}/resnet50-v1-7.onnx\n",
                        f"  repo: onnxmodelzoo/resnet50-v1-7\n  revision: {COMMIT}\n  file: resnet50-v1-7.onnx\n")
    card = load_card(write(tmp_path, text))
    (remote,) = __import__("stages.sources", fromlist=["get_kind"]).get_kind("onnx-zoo").remote_files(card.source)
    assert (remote.hf_repo, remote.hf_revision, remote.hf_path, remote.url) == (
        "onnxmodelzoo/resnet50-v1-7", COMMIT, "resnet50-v1-7.onnx", None)


BAD = [
    ("unknown top-level key", GOOD + "colour: blue\n", "colour: unknown key", "remove it or fix its spelling"),
    ("unknown source key", GOOD.replace("  kind: onnx-zoo\n", "  kind: onnx-zoo\n  mirror: x\n"),
     "source.mirror: unknown key", "remove it"),
    ("missing description", GOOD.replace("description: ResNet-50 v1\n", ""), "description: missing", "add `description:`"),
    ("name differs from file", GOOD.replace("name: resnet50", "name: resnet18"),
     "name: 'resnet18' does not match the file name", "rename the file"),
    ("missing sha256", GOOD.replace(f"  sha256: {SHA}\n", ""), "source.sha256: missing", "run `zoo pin"),
    ("malformed sha256", GOOD.replace(SHA, "abc123"), "source.sha256: 'abc123' is malformed", "64 lowercase hex"),
    ("unknown kind", GOOD.replace("kind: onnx-zoo", "kind: onnx-hub"), "source.kind: unknown kind 'onnx-hub'",
     "use one of: huggingface, keras, onnx-zoo, tfhub, timm"),
    ("unknown format", GOOD.replace("format: onnx", "format: caffe"), "format: unknown format 'caffe'", "use one of"),
    ("moving branch", GOOD.replace(f"/raw/{COMMIT}/", "/raw/main/"), "points at a moving branch", "run `zoo pin"),
    ("http url", GOOD.replace("https://github.com", "http://github.com"), "is not an https:// URL", "ZOO_MIRROR"),
    ("short revision", GOOD.replace(f"  url: https://github.com/onnx/models/raw/{COMMIT}/resnet50-v1-7.onnx\n",
                                    "  repo: onnxmodelzoo/r\n  revision: main\n  file: r.onnx\n"),
     "source.revision: 'main' is not a 40-hex commit", "run `zoo pin"),
    ("negative tolerance", GOOD.replace("atol: 1.0e-4", "atol: -1"), "validation.atol: expected a non-negative number",
     "write e.g."),
    ("name not an artifact name", GOOD.replace("name: resnet50", "name: Res_Net50"),
     "name: 'Res_Net50' is malformed", "as DVC artifact names"),
    ("not yaml", "name: [unclosed\n", "not valid YAML", "fix the YAML syntax"),
    ("not onnx file", GOOD.replace("resnet50-v1-7.onnx", "resnet50-v1-7.pb"), "is not an .onnx file", "point it at"),
    ("wrong folder", GOOD.replace("format: onnx", "format: keras"), "format: 'keras' but the card is in onnx/",
     "move the card to registry/keras/"),
]


@pytest.mark.parametrize("label,text,problem,fix", BAD, ids=[b[0] for b in BAD])
def test_bad_card_is_one_line_with_file_field_and_fix(tmp_path, label, text, problem, fix):
    path = write(tmp_path, text)
    with pytest.raises(CardError) as info:
        load_card(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    assert problem in message and fix in message


def test_wrong_folder_for_format(tmp_path):
    path = write(tmp_path, GOOD.replace("format: onnx", "format: tensorflow"), fmt="tensorflow")
    with pytest.raises(CardError, match=r"format: 'tensorflow' is not a format that kind 'onnx-zoo' stages"):
        load_card(path)


def test_duplicate_names_across_formats_refused(tmp_path, monkeypatch):
    from stages.sources.onnx_zoo import OnnxZoo

    monkeypatch.setattr(OnnxZoo, "formats", ("onnx", "keras"))  # until a kind stages two formats
    write(tmp_path, GOOD)
    other = tmp_path / "registry" / "keras" / "resnet50.yaml"
    other.parent.mkdir(parents=True)
    other.write_text(GOOD.replace("format: onnx", "format: keras"))
    with pytest.raises(CardError, match="'resnet50' is already used by registry/onnx/resnet50.yaml"):
        index.load_all(tmp_path)


def test_index_is_stale_until_regenerated(tmp_path):
    write(tmp_path, GOOD)
    own = "stages:\n  report:  # the registry's own stage, hand-written\n    cmd: echo report\n"
    (tmp_path / "dvc.yaml").write_text((tmp_path / "dvc.yaml").read_text() + own)
    with pytest.raises(IndexStaleError, match="run `zoo index`"):
        index.check(tmp_path)
    assert index.write(tmp_path) is True
    index.check(tmp_path)
    assert index.write(tmp_path) is False
    data = indexfile.read(tmp_path)
    assert data["cards"]["resnet50"]["source"]["model"]["sha256"] == SHA
    import yaml

    pipeline = yaml.safe_load((tmp_path / "dvc.yaml").read_text())
    assert pipeline["artifacts"] == {"resnet50": {
        "path": "registry/onnx/resnet50", "type": "model", "desc": "ResNet-50 v1",
        "labels": ["classification", "onnx", "onnx-zoo", "vision"]}}
    root_text = (tmp_path / "dvc.yaml").read_text()
    assert own in root_text and root_text.startswith("# The registry's root pipeline.")  # hand-written part kept
    assert pipeline["stages"] == {"report": {"cmd": "echo report"}}  # the cards' stages live in the shards
    assert data["converters"]["onnx_zoo"] == {"resnet50": {"card": "registry/onnx/resnet50.yaml", "format": "onnx"}}
    assert data["shards"] == 1 and data["cards"]["resnet50"]["dvcfile"] == "registry/_pipeline/0000/dvc.yaml"
    shard = yaml.safe_load((tmp_path / "registry/_pipeline/0000/dvc.yaml").read_text())["stages"]
    assert sorted(shard) == ["fetch", "stage-onnx-zoo"]
    assert shard["stage-onnx-zoo"]["foreach"] == {"resnet50": {"card": "registry/onnx/resnet50.yaml", "format": "onnx"}}
    assert shard["stage-onnx-zoo"]["do"]["cmd"] == "python -m stages stage ${item.card}"
    write(tmp_path, GOOD.replace(SHA, "c" * 64))
    with pytest.raises(IndexStaleError):
        index.check(tmp_path)


def test_zoo_check_on_the_repository_itself():
    """CI runs `zoo check`: the registry's own cards, index and dvc.yaml are consistent."""
    proc = subprocess.run([sys.executable, "-m", "stages", "check"], cwd=PROJECT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "cards ok" in proc.stdout


def test_zoo_check_reports_bad_card_in_one_line(tmp_path):
    write(tmp_path, GOOD.replace(SHA, "xyz"))
    proc = subprocess.run([sys.executable, "-m", "stages", "--root", str(tmp_path), "check"],
                          capture_output=True, text=True)
    assert proc.returncode == 3
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zoo: error: ") and "source.sha256" in lines[0]


@pytest.mark.parametrize("command", ["fetch", "stage"])
def test_bad_card_stages_nothing(tmp_path, command):
    """The DVC stages' commands refuse a bad card in one line, before touching registry/."""
    path = write(tmp_path, GOOD + "surprise: 1\n")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert not (tmp_path / "registry/_raw").exists()
    proc = subprocess.run([sys.executable, "-m", "stages", "--root", str(tmp_path), command,
                           str(path.relative_to(tmp_path))], capture_output=True, text=True)
    assert proc.returncode == 3
    assert proc.stderr.strip().splitlines() == [
        "zoo: error: registry/onnx/resnet50.yaml: line 13: surprise: unknown key; remove it or fix its spelling "
        "(known here: description, format, inputs, labels, license, name, preprocessing, source, tags, targets, trust_code, "
        "validation)"]
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
