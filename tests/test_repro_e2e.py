"""`zoo repro` end to end: Dask workers staging cards in parallel, merged back through DVC's run-cache.

Every registry here is real git + real DVC on the offline mirror. A registry staged by `zoo repro
--workers 2` (cache isolation, then remote isolation through the local S3 server) must be
byte-identical to the same registry staged by a serial `dvc repro`; a failing card, a killed worker,
uncommitted card edits and a mistyped target each behave as `zoo repro` promises.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.support import sandbox
from tests.support.mirror import fixtures, tf_fixtures, torch_fixtures

pytestmark = pytest.mark.e2e

SKIP = {".git", ".dvc/tmp", ".dvc/cache", ".dvc/config.local"}  # git's, DVC's scratch and cache, the machine's
TF = "tfhub-tiny-classifier"


# --- helpers -------------------------------------------------------------------------------------------------------

def zoo_repro(repo: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return sandbox.run(["zoo", "repro", *args], repo, env, check=False)


def tree(repo: Path) -> dict[str, bytes]:
    """Every file of a registry's working tree (staged models, manifests, locks, cards, code), by
    relative path, with its bytes; git's folder, DVC's cache, scratch and machine config left out."""
    files = {}
    for folder, dirs, names in os.walk(repo):
        rel_folder = Path(folder).relative_to(repo).as_posix()
        dirs[:] = [d for d in dirs if (d if rel_folder == "." else f"{rel_folder}/{d}") not in SKIP]
        for name in names:
            rel = name if rel_folder == "." else f"{rel_folder}/{name}"
            if rel not in SKIP:
                files[rel] = (Path(folder) / name).read_bytes()
    return files


def assert_same_tree(got: Path, want: Path) -> None:
    a, b = tree(got), tree(want)
    assert sorted(a) == sorted(b), (sorted(set(a) - set(b)), sorted(set(b) - set(a)))
    differ = sorted(rel for rel in a if a[rel] != b[rel])
    assert differ == [], differ
    # not vacuous: the locks, the manifests and the staged models are among what was compared
    assert [rel for rel in a if re.fullmatch(r"registry/_pipeline/\d+/dvc\.lock", rel)]
    assert len([rel for rel in a if rel.endswith(".manifest.json")]) >= 4
    assert "registry/onnx/mnist/model.onnx" in a and "registry/onnx/tv-squeezenet/model.onnx" in a
    assert any(rel.startswith(f"registry/tensorflow/{TF}/") for rel in a)
    assert f"registry/onnx/{TF}/model.onnx" in a


def table(out: str) -> dict[str, dict[str, str]]:
    """The end-of-run table, {card: {column: cell}}, cut where the header's columns start (a cell may be empty)."""
    lines = out.splitlines()
    start = next((i for i, line in enumerate(lines) if re.match(r"card +stages +status +seconds +peak MB +error$", line)),
                 None)
    assert start is not None, f"no table in:\n{out}"
    header, names = lines[start], ["card", "stages", "status", "seconds", "peak MB", "error"]
    cuts = [header.index(name) for name in names] + [None]
    rows = {}
    for line in lines[start + 1:]:
        if not line.strip() or line.startswith("zoo repro:"):
            break
        cells = {name: line[cuts[i]:cuts[i + 1]].strip() for i, name in enumerate(names)}
        rows[cells["card"]] = cells
    return rows


def status(repo: Path, env: dict) -> list[str]:
    """The stale stages by short name (`stage-torch@x`), as `dvc status` reports them."""
    return sorted(map(sandbox.short, json.loads(sandbox.run(["dvc", "status", "--json"], repo, env).stdout)))


# --- registries ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def env(mirror_server):
    return sandbox.env(mirror_server.url)


@pytest.fixture(scope="module")
def cards(mirror_root, demo_fixtures):
    """Two ONNX-zoo cards, a torchvision card and a TF Hub card with an ONNX target (fetch + 2 stages)."""
    tv = torch_fixtures.build_torchvision(mirror_root)
    tf = tf_fixtures.build_tfhub_tiny(mirror_root)
    assert "targets: [tensorflow, onnx]" in tf.card
    return {"onnx/mnist": demo_fixtures["mnist"].card, "onnx/squeezenet": demo_fixtures["squeezenet"].card,
            "onnx/tv-squeezenet": tv.card, f"tensorflow/{TF}": tf.card}


EXPECTED = sorted(["fetch@mnist", "stage-onnx-zoo@mnist", "fetch@squeezenet", "stage-onnx-zoo@squeezenet",
                   "fetch@tv-squeezenet", "stage-torch@tv-squeezenet",
                   f"fetch@{TF}", f"stage-tensorflow@{TF}", f"stage-tf2onnx@{TF}"])


@pytest.fixture(scope="module")
def serial(tmp_path_factory, cards, env):
    """The reference: the same cards staged by one serial `dvc repro`."""
    repo = sandbox.new_registry(tmp_path_factory.mktemp("repro-serial") / "registry", cards, env)
    assert sandbox.ran(sandbox.run(["dvc", "repro"], repo, env).stdout) == EXPECTED
    return repo


@pytest.fixture(scope="module")
def parallel(tmp_path_factory, cards, env):
    repo = sandbox.new_registry(tmp_path_factory.mktemp("repro-parallel") / "registry", cards, env)
    return repo, zoo_repro(repo, env, "--workers", "2")


# --- tests ---------------------------------------------------------------------------------------------------------

def test_parallel_repro_is_byte_identical_to_serial_dvc_repro(parallel, serial, env):
    repo, proc = parallel
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "4 card(s) to stage on a local cluster of 2 worker(s) (cache isolation)" in out
    # every stage came back through the run-cache; DVC here ran none itself (" and ran M itself" absent)
    assert re.search(rf"^zoo repro: dvc repro here restored {len(EXPECTED)} stage\(s\) from the run-cache$", out, re.M), out
    rows = table(out)
    assert sorted(rows) == ["mnist", "squeezenet", TF, "tv-squeezenet"]
    assert {card: row["status"] for card, row in rows.items()} == dict.fromkeys(rows, "ok")
    assert rows[TF]["stages"] == "fetch, stage-tensorflow, stage-tf2onnx"
    assert re.search(r"^zoo repro: 4 card\(s\) staged, 0 failed", out, re.M)
    assert re.search(r"Dask dashboard: http://127\.0\.0\.1:\d+/status$", out, re.M)  # printed at start
    # off a terminal: one line per finished card, counted in order of completion
    finished = re.findall(r"^\[(\d)/4\] (\S+) ok in [\d.]+ s$", out, re.M)
    assert [n for n, _ in finished] == ["1", "2", "3", "4"] and sorted(c for _, c in finished) == sorted(rows)
    assert_same_tree(repo, serial)
    assert sandbox.ran(sandbox.run(["dvc", "repro"], repo, env).stdout) == []
    again = zoo_repro(repo, env, "--workers", "2")
    assert again.returncode == 0 and "Data and pipelines are up to date." in again.stdout
    assert "to stage on" not in again.stdout  # no cluster started


def test_remote_isolation_shares_only_the_remote(tmp_path_factory, cards, env, serial):
    with sandbox.S3Server(bucket="zoo-repro-remote") as s3:  # its own bucket: its keys are this test's
        repo = sandbox.new_registry(tmp_path_factory.mktemp("repro-remote") / "registry", cards, env, s3)
        assert s3.keys() == []
        proc = zoo_repro(repo, env, "--workers", "2", "--isolation", "remote")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "4 card(s) to stage on a local cluster of 2 worker(s) (remote isolation)" in proc.stdout
        assert re.search(rf"^zoo repro: dvc repro here restored {len(EXPECTED)} stage\(s\) from the run-cache$",
                         proc.stdout, re.M), proc.stdout
        assert_same_tree(repo, serial)
        # the workers pushed one run-cache entry per stage (the coordinator pushes nothing) ...
        runs = [k for k in s3.keys() if "/runs/" in k]
        assert len(runs) == len(EXPECTED), runs
        # ... and every object those runs made: the coordinator pulled them into its own cache
        assert (repo / ".dvc" / "cache" / "files" / "md5").is_dir()
        cloud = sandbox.run(["dvc", "status", "-c"], repo, env).stdout
        assert "Cache and remote 'zoo' are in sync." in cloud, cloud
        assert status(repo, env) == []


def test_a_failing_card_fails_alone(tmp_path_factory, demo_fixtures, env):
    import hashlib

    url = "https://example.org/repro-e2e/unserved.onnx"  # the mirror has no such file: HTTP 404
    bad = fixtures.onnx_card("unserved", url, hashlib.sha256(b"never served").hexdigest())
    repo = sandbox.new_registry(tmp_path_factory.mktemp("repro-failing") / "registry",
                                {"onnx/mnist": demo_fixtures["mnist"].card,
                                 "onnx/squeezenet": demo_fixtures["squeezenet"].card, "onnx/unserved": bad}, env)
    proc = zoo_repro(repo, env, "--workers", "2")
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    rows = table(proc.stdout)
    assert {card: row["status"] for card, row in rows.items()} == {"mnist": "ok", "squeezenet": "ok",
                                                                    "unserved": "failed"}
    assert re.search(r"^zoo repro: 2 card\(s\) staged, 1 failed", proc.stdout, re.M)
    logs = list((repo / ".dvc" / "tmp" / "zoo-repro").glob("*/unserved.log"))
    assert len(logs) == 1
    assert not list((repo / ".dvc" / "tmp" / "zoo-repro").glob("*/mnist.log"))  # only failed cards keep a log
    errors = [line for line in logs[0].read_text().splitlines() if line.startswith("zoo: error:")]
    assert len(errors) == 1 and url in errors[0] and "HTTP 404" in errors[0], errors
    assert rows["unserved"]["error"] == errors[0][:300]  # the card's one `zoo: error:` line, in the table
    for name in ("mnist", "squeezenet"):
        assert json.loads((repo / f"registry/onnx/{name}.manifest.json").read_text())["validation"]["passed"] is True
        assert (repo / f"registry/onnx/{name}/model.onnx").is_file()
    assert status(repo, env) == ["fetch@unserved", "stage-onnx-zoo@unserved"]  # the good cards are no longer stale
    assert not (repo / "registry/onnx/unserved").exists()


def _stage_process(zoo: psutil.Process, card: str) -> psutil.Process | None:
    for proc in zoo.children(recursive=True):
        try:
            cmd = proc.cmdline()
        except psutil.Error:
            continue
        if cmd[-4:-1] == ["-m", "stages", "stage"] and f"/{card}.yaml" in cmd[-1]:
            return proc
    return None


def _worker_of(stage: psutil.Process, zoo_pid: int) -> psutil.Process:
    """The Dask worker running a stage: its ancestor whose parent is the zoo process (the LocalCluster's
    nannies live in the zoo process; each spawns its worker with multiprocessing)."""
    proc = stage
    while proc.ppid() != zoo_pid:
        proc = proc.parent()
        assert proc is not None and proc.pid > 1, "the stage is not under the zoo process"
    assert "multiprocessing" in " ".join(proc.cmdline()), proc.cmdline()
    return proc


def test_a_killed_worker_has_its_card_retried(tmp_path_factory, demo_fixtures, mirror_root, env):
    tv = torch_fixtures.build_torchvision(mirror_root)
    repo = sandbox.new_registry(tmp_path_factory.mktemp("repro-killed") / "registry",
                                {"onnx/mnist": demo_fixtures["mnist"].card, "onnx/tv-squeezenet": tv.card}, env)
    zoo = subprocess.Popen(["zoo", "repro", "--workers", "2"], cwd=repo, env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        top = psutil.Process(zoo.pid)
        deadline, stage = time.monotonic() + 120, None
        while stage is None and zoo.poll() is None and time.monotonic() < deadline:
            stage = _stage_process(top, "tv-squeezenet")
            time.sleep(0.05)
        assert stage is not None, "never saw `python -m stages stage registry/onnx/tv-squeezenet.yaml` run"
        worker = _worker_of(stage, zoo.pid)
        assert stage.is_running()  # the card was still on that worker when it died
        worker.send_signal(signal.SIGKILL)
        out, err = zoo.communicate(timeout=300)
    finally:
        if zoo.poll() is None:
            os.killpg(zoo.pid, signal.SIGKILL)
            zoo.wait()
    assert zoo.returncode == 0, out + err
    assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
    rows = table(out)
    assert {card: row["status"] for card, row in rows.items()} == {"mnist": "ok", "tv-squeezenet": "ok"}, out
    assert re.search(r"^zoo repro: dvc repro here restored 4 stage\(s\) from the run-cache$", out, re.M), out
    assert status(repo, env) == []
    manifest = json.loads((repo / "registry/onnx/tv-squeezenet.manifest.json").read_text())
    assert manifest["validation"]["passed"] is True


def test_workers_stage_the_uncommitted_working_tree(parallel, env):
    repo, first = parallel
    assert first.returncode == 0
    card = repo / "registry/onnx/squeezenet.yaml"
    text = card.read_text()
    assert "\ndescription: " in text
    card.write_text(text.replace("\ndescription: ", "\ndescription: (edited, not committed) ", 1))
    new = repo / "registry/onnx/mnist-again.yaml"
    committed = sandbox.run(["git", "show", "HEAD:registry/onnx/mnist.yaml"], repo, env).stdout
    assert committed.startswith("name: mnist\n")
    new.write_text(committed.replace("name: mnist\n", "name: mnist-again\n", 1))  # untracked: never committed
    sandbox.run(["zoo", "index"], repo, env)
    assert status(repo, env) == ["fetch@mnist-again", "stage-onnx-zoo@mnist-again", "stage-onnx-zoo@squeezenet"]
    proc = zoo_repro(repo, env, "--workers", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = table(proc.stdout)
    assert {card: row["stages"] for card, row in rows.items()} == {"mnist-again": "fetch, stage-onnx-zoo",
                                                                   "squeezenet": "stage-onnx-zoo"}
    manifest = json.loads((repo / "registry/onnx/squeezenet.manifest.json").read_text())
    assert manifest["description"].startswith("(edited, not committed) ")
    again = json.loads((repo / "registry/onnx/mnist-again.manifest.json").read_text())
    assert again["name"] == "mnist-again" and again["validation"]["passed"] is True
    assert (repo / "registry/onnx/mnist-again/model.onnx").is_file()
    porcelain = sandbox.run(["git", "status", "--porcelain"], repo, env).stdout
    assert " M registry/onnx/squeezenet.yaml" in porcelain and "?? registry/onnx/mnist-again.yaml" in porcelain
    assert status(repo, env) == []


def test_an_unknown_target_names_the_close_match(parallel, env):
    repo, _ = parallel
    proc = zoo_repro(repo, env, "mnsit")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("zoo: error: mnsit") and re.search(r"\bmnist\b", lines[0]), lines
    assert "to stage on" not in proc.stdout


def test_bad_flags_and_addresses_are_one_line_not_a_traceback(parallel, env, tmp_path):
    repo, _ = parallel
    for args, code, words in ((["registry/_pipeline/9999/dvc.yaml:fetch@nope"], 5, "does not exist"),
                              (["--workers", "0"], 2, "--workers"),
                              (["--memory-limit", "lots", "mnist"], 3, "not a size")):
        proc = zoo_repro(repo, env, *args)
        assert proc.returncode == code, (args, proc.stdout + proc.stderr)
        assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
        assert words in proc.stderr.strip().splitlines()[-1], (args, proc.stderr)
    outside = sandbox.run(["zoo", "--root", str(tmp_path), "repro"], tmp_path, env, check=False)
    assert outside.returncode == 5 and "not inside of a DVC repository" in outside.stderr, outside.stderr


def test_a_running_dask_cluster_stages_through_the_remote(tmp_path_factory, demo_fixtures, env):
    """`--scheduler`: a cluster started apart from zoo (`dask scheduler` + `dask worker`, as the README
    says), remote isolation by default: the workers share nothing with the checkout but the S3 remote."""
    port = sandbox.free_port()
    address = f"tcp://127.0.0.1:{port}"
    scratch = tmp_path_factory.mktemp("dask-workers")
    with sandbox.S3Server(bucket="zoo-repro-cluster") as s3:
        cluster_env = dict(env, **sandbox.AWS_ENV, DASK_DISTRIBUTED__WORKER__DAEMON="False")
        scheduler = subprocess.Popen(["dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                      "--no-dashboard"], env=cluster_env, cwd=scratch,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        worker = subprocess.Popen(["dask", "worker", address, "--nworkers", "2", "--nthreads", "1",
                                   "--local-directory", str(scratch), "--no-dashboard"], env=cluster_env, cwd=scratch,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            repo = sandbox.new_registry(tmp_path_factory.mktemp("repro-cluster") / "registry",
                                        {"onnx/mnist": demo_fixtures["mnist"].card,
                                         "onnx/squeezenet": demo_fixtures["squeezenet"].card}, env, s3)
            proc = zoo_repro(repo, env, "--scheduler", address)  # the client waits up to 20 s for the scheduler
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert f"the cluster at {address} (remote isolation)" in proc.stdout
            assert {card: row["status"] for card, row in table(proc.stdout).items()} == {"mnist": "ok", "squeezenet": "ok"}
            assert "restored 4 stage(s) from the run-cache" in proc.stdout and "itself" not in proc.stdout
            assert len([k for k in s3.keys() if "/runs/" in k]) == 4
            assert status(repo, env) == []
            assert "in sync" in sandbox.run(["dvc", "status", "-c"], repo, env).stdout
        finally:
            for proc in (worker, scheduler):
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()


def test_fail_fast_stops_at_the_first_failing_card(tmp_path_factory, demo_fixtures, env):
    """`--fail-fast` on one worker: the failing card goes first (cards of equal cost go by name), the
    others never start and are reported as cancelled; nothing is merged, exit 5."""
    import hashlib

    url = "https://example.org/repro-e2e/a-unserved.onnx"  # the mirror has no such file: HTTP 404
    bad = fixtures.onnx_card("a-unserved", url, hashlib.sha256(b"never served").hexdigest())
    repo = sandbox.new_registry(tmp_path_factory.mktemp("repro-fail-fast") / "registry",
                                {"onnx/mnist": demo_fixtures["mnist"].card,
                                 "onnx/squeezenet": demo_fixtures["squeezenet"].card, "onnx/a-unserved": bad}, env)
    proc = zoo_repro(repo, env, "--workers", "1", "--fail-fast")
    assert proc.returncode == 5, proc.stdout + proc.stderr
    rows = table(proc.stdout)
    assert {card: row["status"] for card, row in rows.items()} == {"a-unserved": "failed", "mnist": "cancelled",
                                                                    "squeezenet": "cancelled"}
    assert "restored" not in proc.stdout  # nothing succeeded: no merge
    assert re.search(r"^zoo repro: 0 card\(s\) staged, 3 failed", proc.stdout, re.M)
    assert not (repo / "registry/onnx/mnist").exists()
