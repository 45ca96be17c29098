"""Staging ONNX-zoo cards: fetch + stage as the DVC stages run them, against the offline mirror."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from stages.errors import IndexStaleError, ParityError, StagingError, UnsafeArchiveError, VersionMismatchError
from stages.files import sha256_file
from stages.pipeline import fetch_card, stage_card
from tests.conftest import leftovers, make_root
from tests.support.mirror import fixtures

MNIST_X = np.random.default_rng(1).random((1, 1, 28, 28), dtype=np.float32)


def publish_zoo(mirror_root, name, model_bytes, sets=None, archive=None):
    """Publish a model (and a zoo archive) under example.org; return the card text."""
    base = f"https://example.org/zoo/{name}"
    sha = fixtures.publish(mirror_root, f"{base}/{name}.onnx", model_bytes)
    if archive is None and sets is not None:
        archive = fixtures.zoo_archive(name, model_bytes, sets)
    if archive is None:
        return fixtures.onnx_card(name, f"{base}/{name}.onnx", sha)
    test_sha = fixtures.publish(mirror_root, f"{base}/{name}.tar.gz", archive)
    return fixtures.onnx_card(name, f"{base}/{name}.onnx", sha, f"{base}/{name}.tar.gz", test_sha)


def mnist_sets(model, shift=0.0):
    (y,) = fixtures.reference_outputs(model, {"Input3": MNIST_X})
    return [([("Input3", MNIST_X)], [("Plus214_Output_0", (y + shift).astype(np.float32))])]


def fetch_and_stage(root, name):
    card = f"registry/onnx/{name}.yaml"
    fetch_card(root, __import__("pathlib").Path(card))
    return stage_card(root, __import__("pathlib").Path(card))


def test_demo_cards_stage_and_validate(mirror, demo_fixtures, tmp_path):
    root = make_root(tmp_path, {f"onnx/{n}": f.card for n, f in demo_fixtures.items()})
    for name in demo_fixtures:
        staged = fetch_and_stage(root, name)
        manifest = json.loads((root / f"registry/onnx/{name}.manifest.json").read_text())
        assert manifest["validation"]["passed"] is True
        assert manifest["files"]["model.onnx"]["sha256"] == sha256_file(staged / "model.onnx")
        raw_model = next(f for f in manifest["source"]["files"] if f["role"] == "model")
        assert raw_model["sha256"] == manifest["files"]["model.onnx"]["sha256"]  # staged as downloaded
        assert manifest["converter"]["versions"]["onnx"] == onnx.__version__
    mnist = json.loads((root / "registry/onnx/mnist.manifest.json").read_text())
    assert mnist["model"]["opset"] == {"ai.onnx": 8}
    assert mnist["model"]["inputs"] == [{"name": "Input3", "dtype": "float32", "shape": [1, 1, 28, 28]}]
    assert mnist["validation"]["reference"] == "zoo test_data_set" and mnist["validation"]["cases"] == 1
    assert 0 < mnist["validation"]["max_abs_error"] < 1e-4
    assert sorted(mnist["files"]) == ["labels.txt", "model.onnx", "test_data_set_0/input_0.pb",
                                      "test_data_set_0/output_0.pb"]
    assert mnist["model"]["labels"] == 10 and (root / "registry/onnx/mnist/labels.txt").read_text() == \
        "".join(f"{d}\n" for d in range(10))
    assert mnist["preprocessing"] == {"type": "image", "layout": "NCHW", "size": [28, 28], "resize": None,
                                      "interpolation": "bilinear", "color": "L", "scale": 1 / 255, "mean": [0.0],
                                      "std": [1.0], "source": "ONNX model zoo README (mnist)"}
    squeeze = json.loads((root / "registry/onnx/squeezenet.manifest.json").read_text())
    # no zoo test data: golden data from onnx's reference evaluator, and ONNX Runtime compared with it
    assert squeeze["validation"]["reference"] == "onnx.reference evaluator" and squeeze["validation"]["cases"] == 1
    assert squeeze["validation"]["generated_runs"] == 1 and squeeze["validation"]["max_abs_error"] < 1e-4
    assert sorted(squeeze["files"]) == ["labels.txt", "model.onnx", "test_data_set_0/input_0.pb",
                                        "test_data_set_0/output_0.pb"]
    assert squeeze["model"]["golden_data"].endswith("reference evaluator") and squeeze["model"]["labels"] == 1000
    assert squeeze["preprocessing"]["resize"] == 256 and squeeze["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
    assert [i["name"] for i in squeeze["model"]["inputs"]] == ["data"]  # initializers listed as inputs dropped
    assert squeeze["source"]["files"][0]["hf_repo"] == "onnxmodelzoo/squeezenet1.1-7"
    assert leftovers(root) == []


def test_symbolic_batch_runs_two_batch_sizes(mirror, mirror_root, tmp_path):
    model = fixtures.mnist8_model(seed=3)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
    model.graph.initializer[6].CopyFrom(numpy_helper.from_array(np.array([-1, 256], dtype=np.int64),
                                                                "Pooling160_Output_0_reshape0_shape"))
    root = make_root(tmp_path, {"onnx/dyn": publish_zoo(mirror_root, "dyn", model.SerializeToString())})
    fetch_and_stage(root, "dyn")
    manifest = json.loads((root / "registry/onnx/dyn.manifest.json").read_text())
    assert manifest["model"]["inputs"][0]["shape"] == ["N", 1, 28, 28]
    assert manifest["validation"]["generated_runs"] == 2


def test_parity_failure_fails_with_the_numbers_and_stages_nothing(mirror, mirror_root, tmp_path):
    model = fixtures.mnist8_model(seed=5)
    text = publish_zoo(mirror_root, "wrong", model.SerializeToString(), mnist_sets(model, shift=0.5))
    root = make_root(tmp_path, {"onnx/wrong": text})
    fetch_card(root, __import__("pathlib").Path("registry/onnx/wrong.yaml"))
    with pytest.raises(ParityError) as info:
        stage_card(root, __import__("pathlib").Path("registry/onnx/wrong.yaml"))
    message = str(info.value)
    assert "Plus214_Output_0[test_data_set_0]: max abs 0.5 (atol 0.0001)" in message
    assert "10 of 10 values off" in message and "\n" not in message
    assert info.value.failures[0]["max_abs"] == pytest.approx(0.5, abs=1e-6)
    assert not (root / "registry/onnx/wrong").exists()
    assert not (root / "registry/onnx/wrong.manifest.json").exists()
    assert leftovers(root) == []


def test_card_tolerance_overrides_params(mirror, mirror_root, tmp_path):
    model = fixtures.mnist8_model(seed=6)
    text = publish_zoo(mirror_root, "loose", model.SerializeToString(), mnist_sets(model, shift=1e-3))
    root = make_root(tmp_path, {"onnx/loose": text + "validation:\n  atol: 1.0e-2\n"})
    fetch_and_stage(root, "loose")
    manifest = json.loads((root / "registry/onnx/loose.manifest.json").read_text())
    assert manifest["validation"]["atol"] == 1e-2 and manifest["validation"]["max_abs_error"] == pytest.approx(1e-3, rel=0.01)


def test_model_failing_the_checker_is_refused(mirror, mirror_root, tmp_path):
    model = fixtures.mnist8_model(seed=7)
    model.graph.node[1].input[1] = "does_not_exist"
    root = make_root(tmp_path, {"onnx/broken": publish_zoo(mirror_root, "broken", model.SerializeToString())})
    with pytest.raises(StagingError, match=r"broken.onnx fails onnx.checker: .*does_not_exist.*; the upstream file is not a valid ONNX model"):
        fetch_and_stage(root, "broken")
    assert not (root / "registry/onnx/broken").exists() and leftovers(root) == []


def test_file_that_is_not_onnx_is_refused(mirror, mirror_root, tmp_path):
    root = make_root(tmp_path, {"onnx/junk": publish_zoo(mirror_root, "junk", b"\x00\xffnot a protobuf" * 50)})
    with pytest.raises(StagingError, match="junk.onnx (fails onnx.checker|is not a readable ONNX model)"):
        fetch_and_stage(root, "junk")
    assert not (root / "registry/onnx/junk").exists()


def test_archive_with_dotdot_entry_is_refused(mirror, mirror_root, tmp_path):
    model = fixtures.mnist8_model(seed=9)
    evil = tarfile.TarInfo("mnist/../../evil.pb")
    evil.size = 4
    archive = fixtures.tar_gz([("mnist/model.onnx", b"x")], extra=[evil])
    root = make_root(tmp_path, {"onnx/evil": publish_zoo(mirror_root, "evil", model.SerializeToString(), archive=archive)})
    with pytest.raises(UnsafeArchiveError, match=r"entry 'mnist/../../evil.pb' would extract outside the target folder"):
        fetch_and_stage(root, "evil")
    assert not (root / "registry/onnx/evil").exists()
    assert not list(tmp_path.rglob("evil.pb")) and leftovers(root) == []


def test_archive_with_link_out_is_refused(mirror, mirror_root, tmp_path):
    model = fixtures.mnist8_model(seed=10)
    link = tarfile.TarInfo("mnist/test_data_set_0/input_0.pb")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    archive = fixtures.tar_gz([], extra=[link])
    root = make_root(tmp_path, {"onnx/linky": publish_zoo(mirror_root, "linky", model.SerializeToString(), archive=archive)})
    with pytest.raises(UnsafeArchiveError, match="points outside the archive"):
        fetch_and_stage(root, "linky")


def test_archive_without_reference_outputs_is_refused(mirror, mirror_root, tmp_path):
    model = fixtures.mnist8_model(seed=11)
    archive = fixtures.tar_gz([("mnist/model.onnx", model.SerializeToString())])
    root = make_root(tmp_path, {"onnx/nodata": publish_zoo(mirror_root, "nodata", model.SerializeToString(), archive=archive)})
    with pytest.raises(StagingError, match=r"holds no test_data_set_\*/output_\*.pb"):
        fetch_and_stage(root, "nodata")


def test_failed_fetch_stages_nothing(mirror, mirror_root, tmp_path):
    model = fixtures.mnist8_model(seed=12)
    text = publish_zoo(mirror_root, "vanished", model.SerializeToString(), mnist_sets(model))
    root = make_root(tmp_path, {"onnx/vanished": text})
    mirror.set_status("/example.org/zoo/vanished/vanished.tar.gz", 404)
    with pytest.raises(Exception, match="HTTP 404: the file is gone upstream"):
        fetch_card(root, __import__("pathlib").Path("registry/onnx/vanished.yaml"))
    assert not (root / "registry/_raw/vanished").exists() and leftovers(root) == []


def test_converter_version_mismatch_is_refused(mirror, demo_fixtures, tmp_path):
    root = make_root(tmp_path, {"onnx/mnist": demo_fixtures["mnist"].card})
    (root / "stages/pins/onnx.txt").write_text("onnx==0.0.1\nonnxruntime==1.32.0\n")
    fetch_card(root, __import__("pathlib").Path("registry/onnx/mnist.yaml"))
    with pytest.raises(VersionMismatchError, match=rf"onnx {onnx.__version__} is installed but .*pins 0.0.1"):
        stage_card(root, __import__("pathlib").Path("registry/onnx/mnist.yaml"))


def test_stale_index_is_refused(mirror, demo_fixtures, tmp_path):
    root = make_root(tmp_path, {"onnx/mnist": demo_fixtures["mnist"].card})
    card = root / "registry/onnx/mnist.yaml"
    card.write_text(card.read_text().replace("sha256: ", "sha256: 0", 1).replace("sha256: 0", "sha256: ", 1)
                    .replace("mnist-8.onnx", "mnist-8.onnx?moved=1", 1))
    with pytest.raises(IndexStaleError, match="run `zoo index`"):
        fetch_card(root, __import__("pathlib").Path("registry/onnx/mnist.yaml"))


def test_fetch_refuses_pins_that_do_not_match_the_card(mirror, demo_fixtures, tmp_path):
    """dvc.yaml passes the index's pins fingerprint: a card edited without `zoo index` is caught."""
    root = make_root(tmp_path, {"onnx/mnist": demo_fixtures["mnist"].card})
    with pytest.raises(IndexStaleError, match="registry/index.json is out of date for registry/onnx/mnist.yaml"):
        fetch_card(root, __import__("pathlib").Path("registry/onnx/mnist.yaml"), pins="0123456789abcdef")
    assert not (root / "registry/_raw/mnist").exists()


def test_staging_is_byte_stable_across_processes(mirror, demo_fixtures, tmp_path):
    """Two `zoo stage` processes give byte-identical files and manifests; neither imports torch or TF."""
    root = make_root(tmp_path, {"onnx/mnist": demo_fixtures["mnist"].card})
    fetch_card(root, __import__("pathlib").Path("registry/onnx/mnist.yaml"))
    timings = tmp_path / "timings.jsonl"
    snapshots = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-m", "stages", "--root", str(root), "stage", "registry/onnx/mnist.yaml"],
                              capture_output=True, text=True, env={**__import__("os").environ, "ZOO_TIMINGS": str(timings)})
        assert proc.returncode == 0, proc.stderr
        files = sorted(p for p in (root / "registry/onnx").rglob("*") if p.is_file())
        snapshots.append({str(p.relative_to(root)): p.read_bytes() for p in files})
    assert snapshots[0] == snapshots[1]
    assert "registry/onnx/mnist.manifest.json" in snapshots[0]
    runs = [json.loads(line) for line in timings.read_text().splitlines()]
    assert len(runs) == 2 and all(r["heavy_modules"] == [] for r in runs)


def test_missing_params_section_is_a_clear_error(mirror, demo_fixtures, tmp_path):
    root = make_root(tmp_path, {"onnx/mnist": demo_fixtures["mnist"].card})
    params = root / "params.yaml"
    params.write_text(params.read_text().replace("\nonnx:\n", "\nonnx_renamed:\n"))
    fetch_card(root, __import__("pathlib").Path("registry/onnx/mnist.yaml"))
    with pytest.raises(StagingError, match=r"params.yaml has no `onnx:` section"):
        stage_card(root, __import__("pathlib").Path("registry/onnx/mnist.yaml"))
    assert not (root / "registry/onnx/mnist").exists()
