"""Releases through real git, real DVC and the local S3 server: tag, diff, refusals, gc, consumers.

The tests run in order on one registry: release v1.0.0; re-pin a card, change the onnx section of
params.yaml and remove a model; release v1.1.0; then diff, gc, and consume v1.0.0 from elsewhere.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from stages.files import sha256_file
from tests.support import sandbox
from tests.support.mirror import fixtures

pytestmark = pytest.mark.e2e
NAMES = ("mnist", "resnet50", "squeezenet")


@pytest.fixture(scope="module")
def reg(tmp_path_factory, mirror_server, demo_fixtures, s3):
    env = sandbox.env(mirror_server.url)
    root = tmp_path_factory.mktemp("release")
    repo = sandbox.new_registry(root / "registry", {f"onnx/{n}": demo_fixtures[n].card for n in NAMES}, env, s3)
    state = {"repo": repo, "env": env, "s3": s3, "root": root}
    run(state, "dvc", "repro")
    commit(state, "stage the zoo")
    run(state, "dvc", "push")
    return state


def run(reg, *args, cwd=None, check=True):
    return sandbox.run(list(args), cwd or reg["repo"], reg["env"], check=check)


def commit(reg, message):
    run(reg, "git", "add", "-A")
    run(reg, "git", "commit", "-q", "-m", message)


def zoo(reg, *args, check=True):
    return run(reg, sys.executable, "-m", "stages", *args, check=check)


def refused(reg, version, expected):
    tags = run(reg, "git", "tag").stdout
    proc = zoo(reg, "release", version, check=False)
    assert proc.returncode == 7, proc.stdout + proc.stderr
    assert proc.stderr.startswith("zoo: error: ") and expected in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert run(reg, "git", "tag").stdout == tags  # no tag written


def test_release_1_0_0_is_an_annotated_tag(reg):
    out = zoo(reg, "release", "1.0.0").stdout
    assert "Initial release: 3 models." in out and "tagged zoo-v1.0.0" in out
    assert run(reg, "git", "cat-file", "-t", "zoo-v1.0.0").stdout.strip() == "tag"
    message = run(reg, "git", "tag", "-l", "--format=%(contents)", "zoo-v1.0.0").stdout
    assert "- `mnist` (onnx)" in message and "- `squeezenet` (onnx)" in message


def test_release_refuses_bad_or_old_versions(reg):
    refused(reg, "1.0", "'1.0' is not a semantic version")
    refused(reg, "1.0.0", "zoo-v1.0.0 already exists")
    refused(reg, "0.9.0", "zoo-v0.9.0 is older than the latest release zoo-v1.0.0")


def test_release_refuses_a_dirty_work_tree(reg):
    (reg["repo"] / "notes.txt").write_text("wip\n")
    refused(reg, "1.0.1", "the work tree is dirty (notes.txt)")
    (reg["repo"] / "notes.txt").unlink()


def test_release_refuses_stale_stages(reg):
    params = reg["repo"] / "params.yaml"
    original = params.read_text()
    params.write_text(original.replace("seed: 0", "seed: 1"))
    commit(reg, "params without repro")
    stale = sorted(sandbox.stage(reg["repo"], f"stage-onnx-zoo@{n}") for n in NAMES)  # DVC's addresses, in the shards
    refused(reg, "1.0.1", f"stale DVC stages: {', '.join(stale)}")
    params.write_text(original)
    commit(reg, "revert params")


def test_release_refuses_a_failed_validation(reg):
    path = reg["repo"] / "registry/onnx/resnet50.manifest.json"
    original = path.read_text()
    data = json.loads(original)
    data["validation"]["passed"] = False
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    run(reg, "dvc", "commit", "-f", sandbox.stage(reg["repo"], "stage-onnx-zoo@resnet50"))
    commit(reg, "a failed validation recorded")
    refused(reg, "1.0.1", "manifests record a failed validation: resnet50")
    path.write_text(original)
    run(reg, "dvc", "commit", "-f", sandbox.stage(reg["repo"], "stage-onnx-zoo@resnet50"))
    commit(reg, "restore resnet50's manifest")


def test_release_refuses_data_missing_from_the_remote(reg, mirror_root):
    model = fixtures.mnist8_model(seed=31)
    x = np.random.default_rng(31).random((1, 1, 28, 28), dtype=np.float32)
    (y,) = fixtures.reference_outputs(model, {"Input3": x})
    base = f"https://github.com/onnx/models/raw/{fixtures.ZOO_COMMIT}/vision/classification/mnist/model/v2"
    sha = fixtures.publish(mirror_root, f"{base}/mnist-8.onnx", model.SerializeToString())
    tsha = fixtures.publish(mirror_root, f"{base}/mnist-8.tar.gz", fixtures.zoo_archive(
        "mnist", model.SerializeToString(), [([("Input3", x)], [("Plus214_Output_0", y)])]))
    card = reg["repo"] / "registry/onnx/mnist.yaml"
    text = card.read_text()
    old_model = text.split("  url: ")[1].split("\n")[0]
    old_sha = text.split("  sha256: ")[1].split("\n")[0]
    old_test = text.split("    url: ")[1].split("\n")[0]
    old_tsha = text.split("    sha256: ")[1].split("\n")[0]
    card.write_text(text.replace(old_model, f"{base}/mnist-8.onnx").replace(old_sha, sha)
                    .replace(old_test, f"{base}/mnist-8.tar.gz").replace(old_tsha, tsha))
    zoo(reg, "index")
    run(reg, "dvc", "repro")
    commit(reg, "re-pin mnist")
    refused(reg, "1.1.0", "data missing from the remote: registry/")


def test_release_1_1_0_after_params_change_and_removal(reg):
    params = reg["repo"] / "params.yaml"
    params.write_text(params.read_text().replace("dim_default: 1", "dim_default: 3"))
    lock = sandbox.stage(reg["repo"], "fetch@squeezenet").partition(":")[0].replace("dvc.yaml", "dvc.lock")
    removed = zoo(reg, "remove", "squeezenet").stdout
    assert "registry/onnx/squeezenet.manifest.json" in removed and f"{lock}: fetch@squeezenet" in removed
    run(reg, "dvc", "repro")
    commit(reg, "onnx params; remove squeezenet")
    locks = [p for p in (reg["repo"] / "dvc.lock", *(reg["repo"] / "registry/_pipeline").glob("*/dvc.lock"))
             if p.exists()]
    assert reg["repo"] / lock in locks and all("squeezenet" not in p.read_text() for p in locks)
    assert "squeezenet" not in run(reg, "git", "ls-files").stdout
    assert run(reg, "git", "status", "--porcelain").stdout == ""
    run(reg, "dvc", "push")
    out = zoo(reg, "release", "1.1.0").stdout
    assert "tagged zoo-v1.1.0" in out and "- `squeezenet` (onnx)" in out


def test_diff_between_releases_shows_exactly_the_changes(reg):
    result = json.loads(zoo(reg, "diff", "zoo-v1.0.0", "zoo-v1.1.0", "--json").stdout)
    assert result["added"] == {} and result["removed"] == {"squeezenet": "onnx"}
    assert sorted(result["changed"]) == ["mnist", "resnet50"] and result["unchanged"] == []
    assert sorted(result["changed"]["resnet50"]) == ["converter"]  # only the params section touched it
    assert list(result["changed"]["resnet50"]["converter"]) == ["params_sha256"]
    mnist = result["changed"]["mnist"]
    assert sorted(mnist) == ["converter", "files", "source", "validation"]
    assert sorted(mnist["source"]) == ["model.sha256", "model.url", "test_data.sha256", "test_data.url"]
    assert sorted(mnist["files"]["changed"]) == ["model.onnx", "test_data_set_0/input_0.pb", "test_data_set_0/output_0.pb"]
    assert mnist["files"]["added"] == {} and mnist["files"]["removed"] == {}
    table = zoo(reg, "diff", "zoo-v1.0.0", "zoo-v1.1.0").stdout
    assert "1 removed, 2 changed, 0 unchanged" in table and "  - squeezenet (onnx)" in table
    assert "  ~ resnet50: converter" in table
    markdown = zoo(reg, "diff", "zoo-v1.0.0", "zoo-v1.1.0", "--markdown").stdout
    assert markdown.startswith("## Zoo changes: zoo-v1.0.0 → zoo-v1.1.0")
    assert "| `mnist` | files: model.onnx |" in markdown
    same = json.loads(zoo(reg, "diff", "zoo-v1.1.0", "zoo-v1.1.0", "--json").stdout)
    assert same["changed"] == {} and same["unchanged"] == ["mnist", "resnet50"]


def test_gc_requires_confirmation_then_keeps_every_release(reg):
    proc = zoo(reg, "gc", "--cloud", check=False)
    assert proc.returncode == 7 and "rerun with --yes" in proc.stderr
    zoo(reg, "gc", "--cloud", "--yes")
    clone = reg["root"] / "v1-clone"
    run(reg, "git", "clone", "-q", str(reg["repo"]), str(clone), cwd=reg["root"])
    run(reg, "git", "checkout", "-q", "zoo-v1.0.0", cwd=clone)
    sandbox.configure_remote(clone, reg["s3"], reg["env"])
    run(reg, "dvc", "pull", *[f"registry/onnx/{n}" for n in NAMES], cwd=clone)
    for name in NAMES:
        manifest = json.loads((clone / f"registry/onnx/{name}.manifest.json").read_text())
        for rel, rec in manifest["files"].items():
            assert sha256_file(clone / f"registry/onnx/{name}" / rel) == rec["sha256"]


def test_consumers_get_and_import_a_release_from_another_repository(reg):
    bare = reg["root"] / "registry.git"
    run(reg, "git", "clone", "-q", "--bare", str(reg["repo"]), str(bare), cwd=reg["root"])
    consumer = reg["root"] / "consumer"
    consumer.mkdir()
    run(reg, "git", "init", "-q", cwd=consumer)
    run(reg, "dvc", "init", "-q", cwd=consumer)
    endpoint = f"endpointurl={reg['s3'].endpoint}"
    run(reg, "dvc", "get", str(bare), "registry/onnx/mnist", "--rev", "zoo-v1.0.0", "-o", "mnist-v1",
        "--remote-config", endpoint, cwd=consumer)
    run(reg, "dvc", "import", str(bare), "registry/onnx/mnist", "--rev", "zoo-v1.1.0", "-o", "mnist-v11",
        "--remote-config", endpoint, cwd=consumer)
    v1 = json.loads(run(reg, "git", "show", "zoo-v1.0.0:registry/onnx/mnist.manifest.json").stdout)
    v11 = json.loads(run(reg, "git", "show", "zoo-v1.1.0:registry/onnx/mnist.manifest.json").stdout)
    assert v1["files"]["model.onnx"] != v11["files"]["model.onnx"]
    for folder, manifest in (("mnist-v1", v1), ("mnist-v11", v11)):
        for rel, rec in manifest["files"].items():
            assert sha256_file(consumer / folder / rel) == rec["sha256"]
    assert (consumer / "mnist-v11.dvc").exists()
    assert "rev_lock" in (consumer / "mnist-v11.dvc").read_text()


def test_python_api_downloads_a_release_and_says_what_it_returned(reg, tmp_path, monkeypatch):
    from stages.api import download, latest_release

    for key, value in sandbox.AWS_ENV.items():
        monkeypatch.setenv(key, value)
    bare = reg["root"] / "registry.git"
    assert latest_release(str(bare)) == "zoo-v1.1.0"
    config = {"endpointurl": reg["s3"].endpoint}
    model = download("mnist", tmp_path / "m", repo=str(bare), release="zoo-v1.0.0", remote_config=config)
    v1 = json.loads(run(reg, "git", "show", "zoo-v1.0.0:registry/onnx/mnist.manifest.json").stdout)
    assert model.release == "zoo-v1.0.0"
    assert model.commit == run(reg, "git", "rev-parse", "zoo-v1.0.0^{commit}").stdout.strip()
    assert model.files == {rel: rec["sha256"] for rel, rec in v1["files"].items()}
    assert sha256_file(tmp_path / "m" / "model.onnx") == v1["files"]["model.onnx"]["sha256"]
    latest = download("resnet50", tmp_path / "r", repo=str(bare), remote_config=config)
    assert latest.release == "zoo-v1.1.0" and (tmp_path / "r" / "model.onnx").exists()


def test_dvc_artifacts_lists_the_zoo(reg):
    import yaml

    pipeline = yaml.safe_load((reg["repo"] / "dvc.yaml").read_text())
    assert sorted(pipeline["artifacts"]) == ["mnist", "resnet50"]
    assert pipeline["artifacts"]["mnist"]["path"] == "registry/onnx/mnist"
    tags = run(reg, "git", "tag").stdout.split()
    assert sorted(t for t in tags if "@" in t) == ["mnist@v1.0.0", "mnist@v1.1.0", "resnet50@v1.0.0",
                                                     "resnet50@v1.1.0", "squeezenet@v1.0.0"]
    bare = str(reg["root"] / "registry.git")
    config = f"endpointurl={reg['s3'].endpoint}"
    for version, release in ((None, "zoo-v1.1.0"), ("v1.0.0", "zoo-v1.0.0")):
        out = reg["root"] / f"artifact-mnist-{version}"
        run(reg, "dvc", "artifacts", "get", bare, "mnist", "-o", str(out), "--remote-config", config,
            *(["--rev", version] if version else []), cwd=reg["root"])
        manifest = json.loads(run(reg, "git", "show", f"{release}:registry/onnx/mnist.manifest.json").stdout)
        assert sha256_file(out / "model.onnx") == manifest["files"]["model.onnx"]["sha256"]
