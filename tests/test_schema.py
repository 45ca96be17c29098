"""The card schema (stages.schema, stages.card.CardModel) and the one YAML module (stages.yamlio):
errors name the line, `zoo schema` is a JSON Schema every real card satisfies, `zoo check` keeps
registry/card.schema.json current."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stages.card import load_card, parse_card
from stages.errors import CardError
from stages.yamlio import key_lines, line_of, load_yaml_lines
from tests.conftest import PROJECT, make_root
from tests.test_card import COMMIT, GOOD, SHA, write
from tests.test_user_input import one_line, zoo

WITH_TEST_DATA = GOOD.replace(f"  sha256: {SHA}\n", f"""  sha256: {SHA}
  test_data:
    url: https://github.com/onnx/models/raw/{COMMIT}/resnet50-v1-7.tar.gz
    sha256: {SHA}
""")
CARD_PATH = "registry/onnx/resnet50.yaml"


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(CardError) as info:
        load_card(write(tmp_path, text))
    message = str(info.value)
    assert "\n" not in message
    return message


# ----------------------------------------------------------------------------- lines

def test_yaml_key_lines_follow_nesting_flow_mappings_and_lists(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("a: 1\nb:\n  c: {d: 2,\n      e: 3}\n  f:\n    - g: 4\n    - 5\nh: &x {i: 1}\nj: *x\n")
    data, lines = load_yaml_lines(path)
    assert data["b"]["f"] == [{"g": 4}, 5]
    assert lines[("a",)] == 1 and lines[("b", "c")] == 3 and lines[("b", "c", "e")] == 4
    assert lines[("b", "f", 0)] == 6 and lines[("b", "f", 0, "g")] == 6 and lines[("b", "f", 1)] == 7
    assert lines[("h", "i")] == 8 and ("j", "i") not in lines  # an alias's keys are listed once
    assert line_of(lines, ("b", "c", "missing")) == 3 and line_of(lines, ("nothing",)) is None
    assert key_lines(None) == {}


def test_a_nested_field_names_its_line(tmp_path):
    text = WITH_TEST_DATA.replace(f"    sha256: {SHA}\n", "    sha256: abc123\n")
    line = text.splitlines().index("    sha256: abc123") + 1
    message = error(tmp_path, text)
    assert message.startswith(f"{tmp_path / CARD_PATH}: line {line}: source.test_data.sha256: 'abc123' is malformed; ")
    assert "64 lowercase hex" in message and f"run `zoo pin {tmp_path / CARD_PATH}`" in message


def test_a_missing_nested_field_names_its_sections_line(tmp_path):
    text = WITH_TEST_DATA.replace(f"    sha256: {SHA}\n", "")
    line = text.splitlines().index("  test_data:") + 1
    message = error(tmp_path, text)
    path = tmp_path / CARD_PATH
    assert message == (f"{path}: line {line}: source.test_data.sha256: missing (every file is pinned by its sha256); "
                       f"run `zoo pin {path}` to fetch the file and write its sha256")


@pytest.mark.parametrize("edit,expected", [
    (lambda t: t + "colour: blue\n", "line 13: colour: unknown key; remove it or fix its spelling (known here: "
                                     "description, format, inputs, labels, license, name, preprocessing, source, "
                                     "tags, targets, trust_code, validation)"),
    (lambda t: t.replace("description: ResNet-50 v1\n", ""), ": description: missing; add `description:` to the card"),
    (lambda t: t.replace("description: ResNet-50 v1", "description: 5"),
     "line 3: description: expected a non-empty string, got 5; write `description: <text>`"),
    (lambda t: t.replace("tags: [vision, classification]", "tags: vision"),
     "line 5: tags: expected a list of strings, got 'vision'; write `tags: [vision, classification]`"),
    (lambda t: t + "trust_code: yes please\n",
     "line 13: trust_code: expected true or false, got 'yes please'; write `trust_code: true` or `trust_code: false`"),
    (lambda t: t.replace("  rtol: 1.0e-3", "  rtol: [1]"),
     "line 12: validation.rtol: expected a non-negative number, got [1]; write e.g. `rtol: 1.0e-4`"),
    (lambda t: t.replace("validation:\n  atol: 1.0e-4\n  rtol: 1.0e-3\n", "validation: strict\n"),
     "line 10: validation: expected a mapping, got str; write it as `key: value` lines"),
    (lambda t: t.replace("kind: onnx-zoo", "kind: 7"), "line 7: source.kind: expected a non-empty string, got 7"),
    (lambda t: t.replace("license: apache-2.0", "license: Apache 2.0"),
     "line 4: license: 'Apache 2.0' is malformed; use an SPDX licence id"),
    (lambda t: t + "targets: onnx\n", "line 13: targets: expected a list of distinct formats, got 'onnx'; "
                                      "write e.g. `targets: [onnx]`"),
    (lambda t: t + "targets: [keras, onnx]\n", "line 13: targets: kind 'onnx-zoo' cannot also stage 'keras'"),
    (lambda t: t.replace("name: resnet50", "name: resnet18"), "line 1: name: 'resnet18' does not match the file name"),
])
def test_card_errors_name_the_line_field_and_fix(tmp_path, edit, expected):
    message = error(tmp_path, edit(GOOD))
    assert message.startswith(str(tmp_path / CARD_PATH)) and expected in message, message


def test_a_card_that_is_not_a_mapping(tmp_path):
    assert error(tmp_path, "- name: resnet50\n").endswith(
        "registry/onnx/resnet50.yaml: expected a mapping, got list; write it as `key: value` lines")


def test_a_key_with_no_value_is_absent():
    """`tags:` or `validation:` written empty is the default, as before; a required one is missing."""
    data = {"name": "resnet50", "format": "onnx", "description": "d", "license": "mit", "tags": None,
            "validation": None, "source": {"kind": "onnx-zoo", "sha256": SHA,
                                           "url": f"https://github.com/onnx/models/raw/{COMMIT}/r.onnx"}}
    card = parse_card(Path(CARD_PATH), data)
    assert card.tags == () and card.validation.atol is None
    with pytest.raises(CardError, match="description: missing; add `description:`"):
        parse_card(Path(CARD_PATH), data | {"description": None})


# ----------------------------------------------------------------------------- zoo schema

def fixture_cards(mirror_root: Path, onnx_fixtures) -> dict[str, str]:
    """Every card the tests' upstream fixtures (and so the demo zoo) are built with: "<format>/<name>" -> YAML."""
    from tests.support.mirror.tf_fixtures import build_tf_mirror
    from tests.support.mirror.torch_fixtures import build_torch_mirror

    cards = {f"onnx/{f.name}": f.card for f in onnx_fixtures}
    cards.update({f"onnx/{name}": f.card for name, f in build_torch_mirror(mirror_root).items()})
    for name, f in build_tf_mirror(mirror_root).items():
        cards[f"{f.card.split('format: ')[1].split()[0]}/{name}"] = f.card
    return cards


def zoo_schema() -> tuple[str, dict]:
    proc = subprocess.run([sys.executable, "-m", "stages", "schema"], capture_output=True, text=True, cwd=PROJECT)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, json.loads(proc.stdout)


def test_zoo_schema_is_a_json_schema_every_card_satisfies(mirror_root, demo_fixtures):
    import yaml

    text, schema = zoo_schema()
    assert text == json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"  # deterministic
    assert text == (PROJECT / "registry/card.schema.json").read_text()
    cards = {str(p.relative_to(PROJECT)): p.read_text() for p in sorted((PROJECT / "registry").glob("*/*.yaml"))}
    cards.update(fixture_cards(mirror_root, demo_fixtures.values()))
    assert len(cards) > 20
    try:
        import jsonschema
    except ImportError:  # the structure, at least
        assert schema["$schema"].endswith("2020-12/schema") and schema["additionalProperties"] is False
        assert {"name", "format", "description", "license", "source"} <= set(schema["required"])
        return
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for key, card in cards.items():
        data = yaml.safe_load(card)
        assert list(validator.iter_errors(data)) == [], key
    good = yaml.safe_load(GOOD)
    assert not list(validator.iter_errors(good))
    for bad in (good | {"colour": "blue"}, {k: v for k, v in good.items() if k != "name"},
                good | {"source": good["source"] | {"kind": "onnx-hub"}}, good | {"name": "Res_Net"},
                good | {"validation": {"atol": -1}}, good | {"format": "caffe"},
                good | {"source": good["source"] | {"mirror": "https://x"}},  # each kind's own keys
                good | {"source": good["source"] | {"sha256": "abc123"}},
                good | {"source": good["source"] | {"url": "http://github.com/x.onnx"}}):
        assert list(validator.iter_errors(bad)), bad


def test_zoo_check_catches_a_stale_card_schema(tmp_path):
    root = make_root(tmp_path, {"onnx/resnet50": GOOD + (
        "preprocessing: {type: tensor, note: raw tensors}\nlabels: imagenet-1k\n")})
    assert zoo(root, "check").returncode == 0
    path = root / "registry/card.schema.json"
    text = path.read_text()
    assert text == zoo(root, "schema").stdout
    path.write_text(text.replace('"additionalProperties": false', '"additionalProperties": true', 1))
    one_line(zoo(root, "check"), 3, "registry/card.schema.json does not match the card schema",
             "run `zoo index` and commit the result")
    path.unlink()
    one_line(zoo(root, "check"), 3, "registry/card.schema.json does not match the card schema")
    assert zoo(root, "index").returncode == 0 and path.read_text() == text
    assert zoo(root, "check").returncode == 0


def test_zoo_help_does_not_import_pydantic_or_yaml():
    code = "import sys, stages.cli; print(sorted(m for m in ('pydantic', 'yaml', 'ruamel.yaml') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT)
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- the kinds' models

def test_every_kind_validates_its_section_with_a_frozen_hashable_model(mirror_root, demo_fixtures, tmp_path):
    from pydantic import BaseModel

    from stages.sources import get_kind, kinds

    assert all(isinstance(cls.spec, type) and issubclass(cls.spec, BaseModel) for cls in kinds().values())
    seen = set()
    for key, text in fixture_cards(mirror_root, demo_fixtures.values()).items():
        fmt, name = key.split("/")
        card = load_card(write(tmp_path, text, name, fmt))
        kind = get_kind(card.kind)
        assert isinstance(card.source, kind.spec) and card.source.kind == card.kind
        assert hash(card.source) == hash(load_card(write(tmp_path, text, name, fmt)).source)
        with pytest.raises(Exception):
            card.source.kind = "other"
        pins = kind.pins(card.source)
        assert json.loads(json.dumps(pins)) is not None and None not in pins.values()
        seen.add(card.kind)
    assert seen == set(kinds())


def test_onnx_zoo_spec_keeps_its_shape(tmp_path):
    """The card writes url/file/sha256 beside repo/revision; the spec has them as `model` (a FileRef)."""
    from stages.sources import get_kind
    from stages.sources.onnx_zoo import FileRef

    card = load_card(write(tmp_path, WITH_TEST_DATA))
    assert card.source.model == FileRef(sha256=SHA, url=f"https://github.com/onnx/models/raw/{COMMIT}/resnet50-v1-7.onnx")
    assert card.source.test_data.url.endswith(".tar.gz") and card.source.repo is None
    assert get_kind("onnx-zoo").pins(card.source) == {
        "kind": "onnx-zoo", "model": {"sha256": SHA, "url": card.source.model.url, "file": None},
        "test_data": {"sha256": SHA, "url": card.source.test_data.url, "file": None}}


TORCHHUB = f"""name: hub
format: onnx
description: a hub model
license: mit
trust_code: true
source:
  kind: torchhub
  repo: owner/repo
  ref: {COMMIT}
  sha256: {SHA}
  entrypoint: resnet18
  kwargs: {{weights: null}}
  input_shape: [1, 3, 224, 224]
  weights:
    url: https://example.org/w.pth
    sha256: {SHA}
"""


@pytest.mark.parametrize("old,new,expected", [
    (f"    sha256: {SHA}\n", "", "line 14: source.weights.sha256: missing (every file is pinned by its sha256); "
                                  "run `zoo pin"),
    ("    url: https://example.org/w.pth", "    url: http://example.org/w.pth",
     "line 15: source.weights.url: 'http://example.org/w.pth' is not an https:// URL"),
    ("kwargs: {weights: null}", "kwargs: [weights]", "line 12: source.kwargs: expected a mapping, got ['weights']"),
    ("trust_code: true\n", "", ": trust_code: kind 'torchhub' runs third-party code"),
    ("ref: " + COMMIT, "ref: v1.0", "line 9: source.ref: 'v1.0' is not a 40-hex commit"),
])
def test_torchhub_errors_name_nested_fields_and_lines(tmp_path, old, new, expected):
    text = TORCHHUB.replace(old, new)
    with pytest.raises(CardError) as info:
        load_card(write(tmp_path, text, "hub"))
    assert expected in str(info.value), str(info.value)
    if old.startswith("kwargs"):
        return
    card = load_card(write(tmp_path, TORCHHUB, "hub"))
    assert card.source.weights == ("https://example.org/w.pth", SHA) and card.source.kwargs == (("weights", None),)


def test_a_framework_that_fixes_the_format_names_the_format_line(tmp_path):
    text = f"""name: bert
format: tensorflow
description: d
license: mit
source:
  kind: huggingface
  framework: pytorch
  repo: owner/bert
  revision: {COMMIT}
  task: fill-mask
"""
    with pytest.raises(CardError) as info:
        load_card(write(tmp_path, text, "bert", "tensorflow"))
    assert ": line 2: format: framework 'pytorch' is staged as format 'onnx', not 'tensorflow'; set `format: onnx`" \
        in str(info.value)


def test_pinning_mode_lets_only_pins_be_missing():
    """`zoo pin`'s check: a branch, a moving URL or a missing sha256 pass; anything else is the usual error."""
    from stages.card import parse_source
    from stages.sources import get_kind

    zoo_kind = get_kind("onnx-zoo")
    moving = {"kind": "onnx-zoo", "url": "https://github.com/onnx/models/raw/main/m.onnx"}
    assert parse_source(Path(CARD_PATH), zoo_kind, moving, "onnx", pinning=True) is None
    hf = {"kind": "onnx-zoo", "repo": "onnxmodelzoo/m", "file": "m.onnx"}  # no revision yet: main
    assert parse_source(Path(CARD_PATH), zoo_kind, hf, "onnx", pinning=True) is None
    with pytest.raises(CardError, match="source.url: 'http://x/m.onnx' is not an https:// URL"):
        parse_source(Path(CARD_PATH), zoo_kind, moving | {"url": "http://x/m.onnx"}, "onnx", pinning=True)
    with pytest.raises(CardError, match="source.sha256: missing"):
        parse_source(Path(CARD_PATH), zoo_kind, moving, "onnx")
    hub = {"kind": "torchhub", "repo": "owner/repo", "ref": 2.0, "entrypoint": "m", "input_shape": [1, 3]}
    assert parse_source(Path(CARD_PATH), get_kind("torchhub"), hub, "onnx", pinning=True) is None
    with pytest.raises(CardError, match="source.input_shape: missing"):
        parse_source(Path(CARD_PATH), get_kind("torchhub"), {k: v for k, v in hub.items() if k != "input_shape"},
                     "onnx", pinning=True)
    with pytest.raises(CardError, match=r"source.ref: \{'a': 1\} is not a 40-hex commit"):
        parse_source(Path(CARD_PATH), get_kind("torchhub"), hub | {"ref": {"a": 1}}, "onnx", pinning=True)
