"""Local faults: staged bytes changed after the fact, a full disk, a process killed mid-write, two runs at once.

Each case injects one fault into the real CLI (a subprocess) and checks that the run ended clearly (one
line, its exit code) with nothing half-written under a final name; then the same command runs again and
its output must match what git records (the pinned sha256, the manifest). Every case is recorded in the
fault campaign's ledger (tests/support/campaign.py).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stages.files import sha256_file, temp_sibling
from stages.pipeline import fetch_card, stage_card
from stages.manifest import check_files
from tests.conftest import PROJECT, leftovers, make_root
from tests.support import campaign, sandbox
from tests.support.mirror import fixtures

MNIST = "registry/onnx/mnist.yaml"
LIMIT = 10_000  # bytes: below mnist's model.onnx (25 780), above every file written before it
INTEGRITY, NO_SPACE = 8, 74


def zoo(root: Path, *args: str, mirror: str | None = None, limit: int | None = None,
        code: str | None = None, wait: bool = True) -> subprocess.CompletedProcess | subprocess.Popen:
    """The real CLI in a subprocess from the registry root; `limit` caps the size of any file it writes
    (RLIMIT_FSIZE: Python ignores SIGXFSZ, so write() fails with EFBIG), `code` replaces `-m stages`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOO_")}
    env |= {"PYTHONPATH": str(PROJECT), "ZOO_PROGRESS": "0", "ZOO_RETRY_BACKOFF": "0.01"}
    if mirror:
        env["ZOO_MIRROR"] = mirror
    argv = [sys.executable, *(["-c", code] if code else ["-m", "stages"]), *args]
    preexec = (lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))) if limit else None
    if not wait:
        return subprocess.Popen(argv, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=preexec)
    return subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, preexec_fn=preexec)


def one_error_line(proc: subprocess.CompletedProcess, code: int, start: str) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code and len(lines) == 1 and lines[0].startswith(start), (proc.returncode, proc.stderr)
    return lines[0]


def wait_for(what: str, found, proc: subprocess.Popen, timeout: float = 60):
    """Poll until `found()` is truthy while `proc` runs; returns its value."""
    deadline = time.monotonic() + timeout
    while not (value := found()):
        assert proc.poll() is None, f"exited {proc.returncode} before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.02)
    return value


def sigkill(proc: subprocess.Popen) -> None:
    """SIGKILL `proc` if it still runs (no handler, no cleanup: what the OOM killer or `kill -9` does)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)


def pinned_raw(root: Path, card: str) -> bool:
    """Every raw file of the card is there and hashes to its pin in the card."""
    from stages.card import load_card
    from stages.sources import get_kind

    loaded = load_card(Path(card), root)
    raw = root / loaded.raw_dir
    return all((raw / f.filename).is_file() and sha256_file(raw / f.filename) == f.sha256
               for f in get_kind(loaded.kind).remote_files(loaded.source))


def manifest_of(root: Path, name: str = "mnist") -> dict:
    return json.loads((root / f"registry/onnx/{name}.manifest.json").read_text())


# ----------------------------------------------------------------------------- zoo verify checks the bytes first


@pytest.fixture(scope="module")
def staged_mnist(tmp_path_factory, mirror_server, demo_fixtures) -> Path:
    """mnist fetched and staged once (in process); each test copies the folder and its manifest."""
    root = make_root(tmp_path_factory.mktemp("staged"), {"onnx/mnist": demo_fixtures["mnist"].card})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ZOO_MIRROR", mirror_server.url)
        patch.setenv("ZOO_PROGRESS", "0")
        fetch_card(root, Path(MNIST))
        stage_card(root, Path(MNIST))
    return root


def copy_staged(staged: Path, dest: Path) -> Path:
    folder = dest / "registry/onnx/mnist"
    shutil.copytree(staged / "registry/onnx/mnist", folder)
    shutil.copy2(staged / "registry/onnx/mnist.manifest.json", folder.parent)
    return folder


def flip_middle_bit(folder: Path) -> str:
    """Flip the lowest bit of the middle byte of model.onnx: a weight's least significant mantissa bit, so
    the model still loads and still matches its golden data; only the bytes tell."""
    import numpy as np
    import onnxruntime as ort

    from stages.golden import read_tensors
    from stages.validate import tolerances

    path = folder / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    sess = ort.InferenceSession(bytes(data), providers=["CPUExecutionProvider"])
    (name, x), = read_tensors(folder / "test_data_set_0", "input")
    (_, expected), = read_tensors(folder / "test_data_set_0", "output")
    recorded = json.loads(folder.with_name("mnist.manifest.json").read_text())["validation"]
    atol, rtol = tolerances(None, {}, recorded=recorded)
    assert np.allclose(sess.run(None, {name: x})[0], expected, atol=atol, rtol=rtol)
    return "model.onnx: expected sha256"


def change_labels(folder: Path) -> str:
    path = folder / "labels.txt"
    path.write_text(path.read_text().replace("7\n", "1\n"))  # same size, other bytes
    return "labels.txt: expected sha256"


def add_file(folder: Path) -> str:
    (folder / "test_data_set_0" / "notes.txt").write_text("left here by hand\n")
    return "test_data_set_0/notes.txt: not in the manifest (an extra file, 18 bytes)"


def remove_file(folder: Path) -> str:
    (folder / "labels.txt").unlink()
    return "labels.txt: missing (expected 20 bytes, sha256"


def truncate_golden(folder: Path) -> str:
    path = folder / "test_data_set_0" / "output_0.pb"
    path.write_bytes(path.read_bytes()[:-4])
    return "test_data_set_0/output_0.pb: expected 66 bytes, got 62"


CORRUPTIONS = [("bit flip in model.onnx", flip_middle_bit), ("labels.txt changed", change_labels),
               ("extra file", add_file), ("missing file", remove_file), ("golden output truncated", truncate_golden)]


@pytest.mark.parametrize("label,corrupt", CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_verify_names_a_file_that_differs_from_the_manifest(staged_mnist, tmp_path, request, label, corrupt):
    folder = copy_staged(staged_mnist, tmp_path)
    fragment = corrupt(folder)
    proc = zoo(tmp_path, "verify", "registry/onnx/mnist")
    line = one_error_line(proc, INTEGRITY, "zoo: error: registry/onnx/mnist: 1 file differs from "
                          "registry/onnx/mnist.manifest.json: ")
    assert fragment in line and "`dvc pull registry/onnx/mnist`" in line and "zoo audit" in line, line
    shutil.rmtree(folder)  # what `dvc checkout --force` does: the recorded bytes back
    copy_staged(staged_mnist, tmp_path)
    again = zoo(tmp_path, "verify", "registry/onnx/mnist")
    campaign.record("corrupt staged file", f"{label}, then `zoo verify`", 1, again.returncode == 0,
                    test=request.node.name)
    assert again.returncode == 0, again.stderr


def test_verify_passes_a_good_folder_and_counts_its_files(staged_mnist, tmp_path):
    folder = copy_staged(staged_mnist, tmp_path)
    proc = zoo(tmp_path, "verify", "--json", "registry/onnx/mnist")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["bytes"] == {"files": 4, "ok": True} and result["files"]["model.onnx"]["passed"] is True
    assert check_files(folder, manifest_of(tmp_path))[0] == 4


# ----------------------------------------------------------------------------- stale temp files


def test_a_dead_writers_temp_is_swept_and_a_live_ones_kept(tmp_path):
    dest = tmp_path / "model.onnx"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".model.onnx.{int(dead.stdout)}-0123456789ab.incomplete"
    live = tmp_path / f".model.onnx.{os.getpid()}-0123456789ab.incomplete"
    other = tmp_path / f".model.onnx.data.{int(dead.stdout)}-0123456789ab.incomplete"  # another file's temp
    for path in (stale, live, other):
        path.write_bytes(b"half")
    fresh = temp_sibling(dest)
    assert fresh.name.startswith(f".model.onnx.{os.getpid()}-") and fresh.name.endswith(".incomplete")
    assert not stale.exists() and live.exists() and other.exists()


# ----------------------------------------------------------------------------- disk full


@pytest.fixture
def mnist_root(mirror, demo_fixtures, tmp_path) -> Path:
    return make_root(tmp_path, {"onnx/mnist": demo_fixtures["mnist"].card})


def test_disk_full_during_fetch(mnist_root, mirror, request):
    proc = zoo(mnist_root, "fetch", MNIST, mirror=mirror.url, limit=LIMIT)
    line = one_error_line(proc, NO_SPACE, "zoo: error: no space left writing ")
    assert "registry/_raw/mnist/mnist-8.onnx (File too large)" in line, line  # the final name, not a temp one
    assert not (mnist_root / "registry/_raw/mnist").exists() and leftovers(mnist_root) == []
    again = zoo(mnist_root, "fetch", MNIST, mirror=mirror.url)
    recovered = again.returncode == 0 and pinned_raw(mnist_root, MNIST) and leftovers(mnist_root) == []
    campaign.record("disk full", "file-size limit below the model during `zoo fetch`", 1, recovered,
                    test=request.node.name)
    assert recovered, again.stderr


def test_disk_full_during_stage(mnist_root, mirror, request):
    assert zoo(mnist_root, "fetch", MNIST, mirror=mirror.url).returncode == 0
    proc = zoo(mnist_root, "stage", MNIST, limit=LIMIT)
    line = one_error_line(proc, NO_SPACE, "zoo: error: no space left writing ")
    assert "registry/onnx/mnist/model.onnx (File too large)" in line, line
    assert not (mnist_root / "registry/onnx/mnist").exists()
    assert not (mnist_root / "registry/onnx/mnist.manifest.json").exists() and leftovers(mnist_root) == []
    again = zoo(mnist_root, "stage", MNIST)
    recovered = (again.returncode == 0 and leftovers(mnist_root) == []
                 and check_files(mnist_root / "registry/onnx/mnist", manifest_of(mnist_root))[0] == 4)
    campaign.record("disk full", "file-size limit below the model during `zoo stage`", 1, recovered,
                    test=request.node.name)
    assert recovered, again.stderr


# ----------------------------------------------------------------------------- SIGKILL


def test_sigkill_mid_download_then_rerun(mirror, mirror_root, tmp_path, request):
    """The upstream stalls after 128 KiB of a 256 KiB file; the fetch is killed while its temp file holds
    bytes. The rerun sweeps the dead process's temp folder and completes."""
    url = "https://example.org/faults/blob.onnx"
    sha = fixtures.publish(mirror_root, url, os.urandom(1 << 18))
    card = "registry/onnx/blob.yaml"
    root = make_root(tmp_path, {"onnx/blob": fixtures.onnx_card("blob", url, sha)})
    mirror.fault("/example.org/faults/blob.onnx", delay=30, delay_after=1 << 17)
    proc = zoo(root, "fetch", card, mirror=mirror.url, wait=False)
    try:
        partial = wait_for("a temp file holding bytes", lambda: [
            p for p in (root / "registry/_raw").glob(".blob.*.incomplete/.blob.onnx.*.incomplete")
            if p.stat().st_size >= 1 << 16], proc)
    finally:
        sigkill(proc)
    assert proc.returncode == -signal.SIGKILL and partial
    assert not (root / "registry/_raw/blob").exists() and leftovers(root) != []
    mirror.clear_faults()
    again = zoo(root, "fetch", card, mirror=mirror.url)
    recovered = again.returncode == 0 and pinned_raw(root, card) and leftovers(root) == []
    campaign.record("SIGKILL", "`zoo fetch` killed mid-download", 1, recovered, test=request.node.name)
    assert recovered, (again.stderr, leftovers(root))


PAUSE_BEFORE_TEST_DATA = """\
import sys, time
from stages import cli, pipeline
file = pipeline.RawFolder.file
def paused(self, role):
    if role == "test_data":  # model.onnx is in the temp folder by now: the kill lands mid-stage
        time.sleep(120)
    return file(self, role)
pipeline.RawFolder.file = paused
sys.exit(cli.main(sys.argv[1:]))
"""


def test_sigkill_mid_stage_then_rerun_is_identical(mnist_root, mirror, request):
    assert zoo(mnist_root, "fetch", MNIST, mirror=mirror.url).returncode == 0
    assert zoo(mnist_root, "stage", MNIST).returncode == 0
    folder, manifest = mnist_root / "registry/onnx/mnist", mnist_root / "registry/onnx/mnist.manifest.json"
    uninterrupted = manifest.read_bytes()
    shutil.rmtree(folder)
    manifest.unlink()
    proc = zoo(mnist_root, "stage", MNIST, code=PAUSE_BEFORE_TEST_DATA, wait=False)
    try:
        wait_for("the staging temp folder", lambda: list(folder.parent.glob(".mnist.*.incomplete/model.onnx")), proc)
    finally:
        sigkill(proc)
    assert proc.returncode == -signal.SIGKILL
    assert not folder.exists() and not manifest.exists() and leftovers(mnist_root) != []
    again = zoo(mnist_root, "stage", MNIST)
    recovered = again.returncode == 0 and manifest.read_bytes() == uninterrupted and leftovers(mnist_root) == []
    campaign.record("SIGKILL", "`zoo stage` killed mid-conversion", 1, recovered, test=request.node.name)
    assert recovered, (again.stderr, leftovers(mnist_root))
    assert check_files(folder, json.loads(uninterrupted))[0] == 4


# ----------------------------------------------------------------------------- two runs at once


@pytest.mark.e2e
def test_two_dvc_repro_at_once_never_corrupt(mirror, demo_fixtures, tmp_path, request):
    """A second `dvc repro` while the first is downloading: DVC's lock on the stage's outputs refuses it
    in one clear message; the first completes, and the checkout is consistent."""
    import yaml

    env = sandbox.env(mirror.url)
    repo = sandbox.new_registry(tmp_path / "registry", {"onnx/mnist": demo_fixtures["mnist"].card}, env)
    model_path = "/" + next(iter(demo_fixtures["mnist"].files))
    mirror.fault(model_path, delay=8)
    seen = len(mirror.requests_log)
    first = subprocess.Popen(["dvc", "repro"], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        wait_for("the first run's download", lambda: ("GET", model_path, None) in mirror.requests_log[seen:], first)
        second = sandbox.run(["dvc", "repro"], repo, env, check=False)
        assert first.poll() is None, "the first run ended before the second: nothing ran at once"
        out, err = first.communicate(timeout=120)
    finally:
        sigkill(first)
    assert first.returncode == 0, err
    # DVC refuses: the stage's outputs are write-locked (rwlock), or the repo lock is held at that moment
    assert second.returncode != 0 and ("is busy, it is being blocked by" in second.stderr
                                       or "Unable to acquire lock" in second.stderr), second.stderr
    locks = sorted((repo / "registry/_pipeline").rglob("dvc.lock"))
    parsed = [yaml.safe_load(lock.read_text()) for lock in locks]
    final = sandbox.run(["dvc", "repro"], repo, env)
    status = sandbox.run(["dvc", "status"], repo, env).stdout
    recovered = (bool(locks) and all(isinstance(p, dict) and p.get("stages") for p in parsed)
                 and sandbox.ran(final.stdout) == [] and "up to date" in status and leftovers(repo) == []
                 and check_files(repo / "registry/onnx/mnist", manifest_of(repo))[0] == 4)
    campaign.record("concurrent runs", "a second `dvc repro` while the first downloads", 1, recovered,
                    test=request.node.name)
    assert recovered, (status, leftovers(repo), final.stdout)
