"""End to end through real git, real DVC, the real dvc-s3 plugin and the local S3 server.

The tests of this module run in order on one registry: stage, push, pull one model in a fresh
clone, then restage under each kind of change and check DVC reruns exactly what it must.
"""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest

from stages.files import sha256_file
from tests.support import sandbox

pytestmark = pytest.mark.e2e
NAMES = ("mnist", "resnet50", "squeezenet")


@pytest.fixture(scope="module")
def reg(tmp_path_factory, mirror_server, demo_fixtures):
    env = sandbox.env(mirror_server.url)
    with sandbox.S3Server(bucket="zoo-e2e-push") as s3:  # its own bucket: the push test counts every object
        repo = sandbox.new_registry(tmp_path_factory.mktemp("e2e") / "registry",
                                    {f"onnx/{n}": demo_fixtures[n].card for n in NAMES}, env, s3)
        yield {"repo": repo, "env": env, "s3": s3, "mirror": mirror_server,
               "tmp": tmp_path_factory.mktemp("e2e-clones")}


def dvc(reg, *args, cwd=None, check=True):
    return sandbox.run(["dvc", *args], cwd or reg["repo"], reg["env"], check=check)


def git(reg, *args, cwd=None):
    return sandbox.run(["git", *args], cwd or reg["repo"], reg["env"]).stdout


def commit_all(reg, message):
    git(reg, "add", "-A")
    git(reg, "commit", "-q", "-m", message)


def test_repro_stages_every_card_then_does_nothing(reg):
    out = dvc(reg, "repro").stdout
    assert sandbox.ran(out) == sorted([f"fetch@{n}" for n in NAMES] + [f"stage-onnx-zoo@{n}" for n in NAMES])
    for name in NAMES:
        manifest = json.loads((reg["repo"] / f"registry/onnx/{name}.manifest.json").read_text())
        assert manifest["validation"]["passed"] is True
        for rel, rec in manifest["files"].items():
            assert sha256_file(reg["repo"] / f"registry/onnx/{name}" / rel) == rec["sha256"]
    assert sandbox.ran(dvc(reg, "repro").stdout) == []
    assert "up to date" in dvc(reg, "status").stdout
    commit_all(reg, "stage the zoo")
    assert git(reg, "status", "--porcelain") == ""


def test_manifests_are_tracked_by_git_and_models_by_dvc(reg):
    tracked = set(git(reg, "ls-files").split())
    for name in NAMES:
        assert f"registry/onnx/{name}.manifest.json" in tracked
        assert not any(p.startswith(f"registry/onnx/{name}/") for p in tracked)
    assert not any(p.startswith("registry/_raw/") and not p.endswith(".gitignore") for p in tracked)


def test_push_stores_each_content_once(reg):
    dvc(reg, "push")
    keys = [k for k in reg["s3"].keys() if "/files/md5/" in k]
    md5s = set()
    for folder in ("registry/onnx", "registry/_raw"):
        for path in (reg["repo"] / folder).rglob("*"):
            if path.is_file() and path.name != ".gitignore" and not path.name.endswith((".yaml", ".manifest.json")):
                md5s.add(hashlib.md5(path.read_bytes()).hexdigest())
    file_keys = [k for k in keys if not k.endswith(".dir")]
    assert sorted(k.split("/md5/")[1].replace("/", "") for k in file_keys) == sorted(md5s)
    raw_mnist = reg["repo"] / "registry/_raw/mnist/mnist-8.onnx"
    staged_mnist = reg["repo"] / "registry/onnx/mnist/model.onnx"
    assert raw_mnist.read_bytes() == staged_mnist.read_bytes()  # identical raw and staged: one object


def test_fresh_clone_pulls_one_model_and_nothing_else(reg):
    clone = reg["tmp"] / "clone"
    sandbox.run(["git", "clone", "-q", str(reg["repo"]), str(clone)], reg["tmp"], reg["env"])
    sandbox.configure_remote(clone, reg["s3"], reg["env"])
    dvc(reg, "pull", "registry/onnx/mnist", cwd=clone)
    files = sorted(str(p.relative_to(clone)) for p in (clone / "registry").rglob("*")
                   if p.is_file() and not p.name.endswith((".yaml", ".json", ".gitignore", "dvc.lock")))  # git's files
    assert files == ["registry/onnx/mnist/labels.txt", "registry/onnx/mnist/model.onnx",
                     "registry/onnx/mnist/test_data_set_0/input_0.pb", "registry/onnx/mnist/test_data_set_0/output_0.pb"]
    verified = sandbox.run(["zoo", "verify", "registry/onnx/mnist"], clone, reg["env"]).stdout
    first, second = verified.splitlines()
    assert first == "onnx/mnist: 4 files match the manifest (size and sha256)"
    assert second.startswith("onnx/mnist: model.onnx on 1 golden set(s): max abs") and verified.endswith(" ok\n")
    manifest = json.loads((clone / "registry/onnx/mnist.manifest.json").read_text())
    for rel, rec in manifest["files"].items():
        assert sha256_file(clone / "registry/onnx/mnist" / rel) == rec["sha256"]
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    folder = clone / "registry/onnx/mnist"
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    x = numpy_helper.to_array(onnx.load_tensor(str(folder / "test_data_set_0/input_0.pb")))
    expected = numpy_helper.to_array(onnx.load_tensor(str(folder / "test_data_set_0/output_0.pb")))
    (y,) = sess.run(None, {"Input3": x})
    np.testing.assert_allclose(y, expected, atol=1e-4, rtol=1e-3)


def test_forced_restage_changes_no_hash(reg):
    out = dvc(reg, "repro", "--force", "--single-item", sandbox.stage(reg["repo"], "stage-onnx-zoo@mnist")).stdout
    assert sandbox.ran(out) == ["stage-onnx-zoo@mnist"]
    assert git(reg, "status", "--porcelain") == ""  # the shard's dvc.lock and the manifest: byte-identical


def test_editing_one_card_restages_only_that_model(reg):
    card = reg["repo"] / "registry/onnx/resnet50.yaml"
    card.write_text(card.read_text().replace("description: ", "description: (edited) ", 1))
    status = dvc(reg, "status", "--json").stdout
    assert sorted(map(sandbox.short, json.loads(status))) == ["stage-onnx-zoo@resnet50"]
    # no download: fetch depends on pins only
    assert sandbox.ran(dvc(reg, "repro").stdout) == ["stage-onnx-zoo@resnet50"]
    commit_all(reg, "edit resnet50's description")


def test_new_pins_refetch_that_card_only(reg):
    card = reg["repo"] / "registry/onnx/mnist.yaml"
    card.write_text(card.read_text().replace("mnist-8.onnx\n", "mnist-8.onnx?pinned=again\n", 1))
    sandbox.run(["zoo", "index"], reg["repo"], reg["env"])
    assert sandbox.ran(dvc(reg, "repro").stdout) == ["fetch@mnist", "stage-onnx-zoo@mnist"]
    commit_all(reg, "re-pin mnist")


def test_onnx_params_change_restages_only_onnx_stages(reg):
    params = reg["repo"] / "params.yaml"
    params.write_text(params.read_text().replace("dim_default: 1", "dim_default: 2"))
    assert sandbox.ran(dvc(reg, "repro").stdout) == [f"stage-onnx-zoo@{n}" for n in NAMES]
    commit_all(reg, "onnx params")


def test_converter_pin_change_restages_only_its_stages(reg):
    pins = reg["repo"] / "stages/pins/onnx.txt"
    pins.write_text(pins.read_text() + "# reviewed the pins\n")
    assert sandbox.ran(dvc(reg, "repro").stdout) == [f"stage-onnx-zoo@{n}" for n in NAMES]
    commit_all(reg, "touch the onnx pins")


def test_restage_after_upstream_vanished_uses_the_remote(reg):
    """Every upstream answers 404: a fresh clone still restages from the raw files kept in the remote."""
    clone = reg["tmp"] / "vanished"
    sandbox.run(["git", "clone", "-q", str(reg["repo"]), str(clone)], reg["tmp"], reg["env"])
    sandbox.configure_remote(clone, reg["s3"], reg["env"])
    dvc(reg, "push")
    dvc(reg, "pull", "registry/_raw/mnist", cwd=clone)
    env = dict(reg["env"], ZOO_MIRROR="http://127.0.0.1:9/gone")  # nothing listens on port 9
    out = sandbox.run(["dvc", "repro", "--force", "--single-item", sandbox.stage(clone, "stage-onnx-zoo@mnist")],
                      clone, env).stdout
    assert sandbox.ran(out) == ["stage-onnx-zoo@mnist"]
    assert sandbox.run(["git", "status", "--porcelain"], clone, env).stdout == ""


def test_failed_stage_leaves_nothing_under_final_names(reg, mirror_server, mirror_root):
    from tests.support.mirror import fixtures

    model = fixtures.mnist8_model(seed=21)
    x = np.random.default_rng(2).random((1, 1, 28, 28), dtype=np.float32)
    (y,) = fixtures.reference_outputs(model, {"Input3": x})
    base = "https://example.org/e2e/bad"
    sha = fixtures.publish(mirror_root, f"{base}/bad.onnx", model.SerializeToString())
    archive = fixtures.zoo_archive("bad", model.SerializeToString(), [([("Input3", x)], [("out", y * 1.5)])])
    tsha = fixtures.publish(mirror_root, f"{base}/bad.tar.gz", archive)
    (reg["repo"] / "registry/onnx/bad.yaml").write_text(
        fixtures.onnx_card("bad", f"{base}/bad.onnx", sha, f"{base}/bad.tar.gz", tsha))
    sandbox.run(["zoo", "index"], reg["repo"], reg["env"])
    proc = dvc(reg, "repro", check=False)
    assert proc.returncode != 0
    assert re.search(r"zoo: error: bad: outputs differ from the reference: Plus214_Output_0\[test_data_set_0\]: "
                     r"max abs [0-9.e-]+ \(atol 0.0001\)", proc.stderr)
    assert not (reg["repo"] / "registry/onnx/bad").exists()
    assert not (reg["repo"] / "registry/onnx/bad.manifest.json").exists()
    assert not [p for p in reg["repo"].rglob("*.incomplete")]
    locks = [reg["repo"] / "dvc.lock", *sorted((reg["repo"] / "registry/_pipeline").glob("*/dvc.lock"))]
    shard_lock = (reg["repo"] / json.loads((reg["repo"] / "registry/index.json").read_text())["cards"]["bad"]["dvcfile"]
                  ).with_name("dvc.lock")
    assert shard_lock in locks and shard_lock.is_file()  # bad's shard has a lock (its fetch, the good cards' stages)
    assert all("stage-onnx-zoo@bad" not in lock.read_text() for lock in locks if lock.is_file())
