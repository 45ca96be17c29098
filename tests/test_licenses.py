"""Licences: every stage checks its card's SPDX id against params.yaml's allow-list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stages.errors import StagingError
from stages.pipeline import fetch_card, stage_card
from tests.conftest import leftovers, make_root


def mnist_root(tmp_path, demo_fixtures, license_id: str) -> Path:
    card = demo_fixtures["mnist"].card.replace("license: apache-2.0", f"license: {license_id}")
    assert f"license: {license_id}" in card
    root = make_root(tmp_path, {"onnx/mnist": card})
    fetch_card(root, Path("registry/onnx/mnist.yaml"))
    return root


def test_a_licence_off_the_allow_list_fails_its_stage(mirror, demo_fixtures, tmp_path):
    root = mnist_root(tmp_path, demo_fixtures, "cc-by-nc-4.0")
    with pytest.raises(StagingError) as info:
        stage_card(root, Path("registry/onnx/mnist.yaml"))
    message = str(info.value)
    assert "licence 'cc-by-nc-4.0' is not in params.yaml licenses.allow (apache-2.0, mit" in message
    assert "\n" not in message and "add it there" in message
    assert not (root / "registry/onnx/mnist").exists() and not (root / "registry/onnx/mnist.manifest.json").exists()
    assert leftovers(root) == []


def test_allowing_it_stages_it_and_the_manifest_records_it(mirror, demo_fixtures, tmp_path):
    root = mnist_root(tmp_path, demo_fixtures, "CC-BY-NC-4.0")
    params = root / "params.yaml"
    params.write_text(params.read_text().replace("allow: [apache-2.0,", "allow: [cc-by-nc-4.0, apache-2.0,"))
    stage_card(root, Path("registry/onnx/mnist.yaml"))  # compared case-insensitively
    assert json.loads((root / "registry/onnx/mnist.manifest.json").read_text())["license"] == "CC-BY-NC-4.0"


def test_every_stage_block_depends_on_the_allow_list():
    import yaml

    from tests.conftest import PROJECT

    from stages.convert import CONVERTERS

    shards = sorted((PROJECT / "registry/_pipeline").glob("*/dvc.yaml"))  # the cards' stages, generated
    blocks = [(shard.parent.name, name, block) for shard in shards
              for name, block in yaml.safe_load(shard.read_text())["stages"].items() if name.startswith("stage-")]
    assert {name for _, name, _ in blocks} == {c.stage for c in CONVERTERS.values()}  # every converter is there
    assert all("licenses" in block["do"]["params"] for _, _, block in blocks), blocks
