"""PyTorch kinds end to end through real DVC: staged, validated, byte-stable, and isolated per converter."""

from __future__ import annotations

import json

import pytest

from tests.support import sandbox

pytestmark = pytest.mark.e2e
from tests.support.mirror import torch_fixtures
TORCH = ("tv-squeezenet", "timm-test-effnet", "tiny-bert", "tiny-bert-cls", "mar-scripted", "mar-eager", "hub-tiny")


@pytest.fixture(scope="module")
def reg(tmp_path_factory, mirror_server, mirror_root, demo_fixtures):
    cards = torch_fixtures.build_torch_mirror(mirror_root)
    env = sandbox.env(mirror_server.url)
    repo = sandbox.new_registry(tmp_path_factory.mktemp("torch-e2e") / "registry",
                                {**{f"onnx/{n}": cards[n].card for n in TORCH}, "onnx/mnist": demo_fixtures["mnist"].card},
                                env)
    return {"repo": repo, "env": env}


def dvc(reg, *args):
    return sandbox.run(["dvc", *args], reg["repo"], reg["env"]).stdout


def test_every_torch_kind_stages_through_dvc(reg):
    out = dvc(reg, "repro")
    assert sandbox.ran(out) == sorted([f"fetch@{n}" for n in (*TORCH, "mnist")] + [f"stage-torch@{n}" for n in TORCH]
                              + ["stage-onnx-zoo@mnist"])
    for name in TORCH:
        manifest = json.loads((reg["repo"] / f"registry/onnx/{name}.manifest.json").read_text())
        assert manifest["validation"]["passed"] is True, name
    sandbox.run(["git", "add", "-A"], reg["repo"], reg["env"])
    sandbox.run(["git", "commit", "-q", "-m", "stage"], reg["repo"], reg["env"])


def test_forced_restage_of_every_torch_model_changes_no_byte(reg):
    stages = [sandbox.stage(reg["repo"], f"stage-torch@{n}") for n in TORCH]  # their shards' DVC addresses
    out = dvc(reg, "repro", "--force", *stages, "--single-item")
    assert sandbox.ran(out) == sorted(f"stage-torch@{n}" for n in TORCH)
    assert sandbox.run(["git", "status", "--porcelain"], reg["repo"], reg["env"]).stdout == ""


def test_torch_params_change_reruns_only_torch_stages(reg):
    params = reg["repo"] / "params.yaml"
    params.write_text(params.read_text().replace("  external_data_threshold_mb: 1800", "  external_data_threshold_mb: 1700"))
    assert sandbox.ran(dvc(reg, "repro")) == sorted(f"stage-torch@{n}" for n in TORCH)  # not stage-onnx-zoo@mnist


def test_onnx_params_change_reruns_only_onnx_zoo_stages(reg):
    params = reg["repo"] / "params.yaml"
    params.write_text(params.read_text().replace("  dim_default: 1", "  dim_default: 2"))
    assert sandbox.ran(dvc(reg, "repro")) == ["stage-onnx-zoo@mnist"]
