"""Nothing lost, nothing silently corrupted: the remote failing, processes killed, bytes flipped, 16 consumers.

One registry of 16 tiny ONNX-zoo cards, staged once, whose DVC remote is the local S3 server behind
a fault-injecting proxy (tests/support/s3faults.py). The tests run in order on it: the first push is
killed and retried under S3 faults; the first release meets a stray tag, a kill, a concurrent
release and a remote that fails its check; 16 consumers pull at once through a flaky remote; then
bytes are flipped in the remote, in a consumer's cache and upstream, and each is caught by the first
command that reads it and repaired. Each case ends with a run that completes and an audit of the
bytes, and is recorded in the campaign ledger (tests/support/campaign.py) for the README's figures.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from stages.files import sha256_file
from tests.support import campaign, sandbox
from tests.support.mirror import fixtures
from tests.support.s3faults import S3FaultProxy

pytestmark = pytest.mark.e2e
CARDS = 16
BUCKET = "zoo-integrity"


def name(i: int) -> str:
    return f"m{i:04d}"


@pytest.fixture(scope="module")
def reg(tmp_path_factory, mirror_server, mirror_root):
    env = sandbox.env(mirror_server.url)
    root = tmp_path_factory.mktemp("integrity")
    cards = {}
    for i in range(CARDS):
        url = f"https://example.org/integrity/{name(i)}/model.onnx"
        cards[f"onnx/{name(i)}"] = fixtures.onnx_card(name(i), url, fixtures.publish(mirror_root, url,
                                                                                     fixtures.tiny_model(100 + i)))
    with sandbox.S3Server(bucket=BUCKET) as s3, S3FaultProxy(s3.endpoint) as proxy:
        repo = sandbox.new_registry(root / "registry", cards, env)
        state = {"repo": repo, "env": env, "s3": s3, "proxy": proxy, "root": root}
        point_at(state, repo)
        sandbox.run([sys.executable, "-m", "stages", "repro", "--workers", "2"], repo, env)
        commit(state, "stage the zoo")
        yield state


def point_at(reg, clone: Path) -> None:
    """The `zoo` remote of a checkout, through the proxy (config.local: never committed)."""
    (clone / ".dvc" / "config.local").write_text(
        f"['remote \"zoo\"']\n    url = s3://{BUCKET}/dvc\n    endpointurl = {reg['proxy'].url}\n")


def run(reg, *args, cwd=None, check=True, **extra):
    return sandbox.run(list(args), cwd or reg["repo"], dict(reg["env"], **extra), check=check)


def zoo(reg, *args, cwd=None, check=True):
    return run(reg, sys.executable, "-m", "stages", *args, cwd=cwd, check=check)


def commit(reg, message):
    run(reg, "git", "add", "-A")
    run(reg, "git", "commit", "-q", "-m", message)


def start(reg, *args, cwd=None) -> subprocess.Popen:
    """A command in its own process group (so a kill takes DVC's children too), output to files."""
    log = Path(reg["root"]) / f"proc-{time.monotonic_ns()}"
    with open(f"{log}.out", "w") as out, open(f"{log}.err", "w") as err:
        proc = subprocess.Popen(list(args), cwd=cwd or reg["repo"], env=reg["env"], start_new_session=True,
                                stdout=out, stderr=err, text=True)
    proc.log = log
    return proc


def stderr_of(proc: subprocess.Popen) -> str:
    return Path(f"{proc.log}.err").read_text()


def kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def clone(reg, label: str) -> Path:
    dest = Path(reg["root"]) / label
    run(reg, "git", "clone", "-q", str(reg["repo"]), str(dest))
    point_at(reg, dest)
    return dest


def audit_remote_ok(reg, rev: str = "HEAD") -> dict:
    report = json.loads(zoo(reg, "audit", rev, "--remote", "--json").stdout)
    assert report["ok"] and not report["problems"] and report["outputs"] == 2 * CARDS, report
    return report


def tags(reg) -> list[str]:
    return run(reg, "git", "tag", "--list").stdout.split()


def s3_object(reg, oid: str, data: bytes | None = None) -> bytes | None:
    """Read, overwrite or (with b"") delete one DVC object straight in the S3 server, behind the registry's back."""
    import boto3

    client = boto3.client("s3", endpoint_url=reg["s3"].endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    key = f"dvc/files/md5/{oid[:2]}/{oid[2:]}"
    if data == b"":
        client.delete_object(Bucket=BUCKET, Key=key)
        return None
    if data is not None:
        client.put_object(Bucket=BUCKET, Key=key, Body=data)
        return None
    return client.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def object_of(reg, folder: str, file: str) -> str:
    """The md5 (DVC's object id) of one file of a tracked folder, from its lock entry and `.dir` listing."""
    index = json.loads((reg["repo"] / "registry/index.json").read_text())
    card = Path(folder).name
    lock = (reg["repo"] / index["cards"][card]["dvcfile"]).with_name("dvc.lock")
    import yaml

    for entry in yaml.safe_load(lock.read_text())["stages"].values():
        for out in entry.get("outs", []):
            if out["path"] == folder:
                listing = json.loads(Path(reg["repo"], ".dvc/cache/files/md5", out["md5"][:2], out["md5"][2:]).read_bytes())
                return next(e["md5"] for e in listing if e["relpath"] == file)
    raise AssertionError(f"{folder}/{file} not in {lock}")


# --- pushing: killed, then retried under S3 faults -------------------------------------------------------------


def test_push_killed_midway_then_pushed_again_under_s3_faults(reg):
    proxy = reg["proxy"]
    hold = proxy.add("hold", method="PUT", every=5)
    push = start(reg, "dvc", "push")
    proxy.wait_held(1, timeout=60)
    kill(push)  # SIGKILL: some objects are in the remote, the held one never arrives
    proxy.remove(hold)
    partial = len([k for k in reg["s3"].keys() if "/files/md5/" in k])
    status = json.loads(run(reg, "dvc", "status", "--cloud", "--json").stdout or "{}")
    assert status, "a killed push must leave something to push"
    rules = [proxy.add("503", method="PUT", every=4, times=3), proxy.add("500", method="PUT", every=5, times=2),
             proxy.add("reset", method="PUT", times=2)]
    before = sum(proxy.injected.values())
    run(reg, "dvc", "push")  # botocore and s3fs retry every one of these
    injected = sum(proxy.injected.values()) - before
    for rule in rules:
        proxy.remove(rule)
    assert injected == 7, proxy.injected
    assert run(reg, "dvc", "status", "--cloud").stdout.strip().endswith("Cache and remote 'zoo' are in sync.")
    report = audit_remote_ok(reg)
    assert partial < report["files"] + 2 * CARDS
    campaign.record("SIGKILL", "`dvc push` killed with uploads in flight, then pushed again", 1, True,
                    test="test_push_killed_midway_then_pushed_again_under_s3_faults")
    campaign.record("S3 500/503", "SlowDown x3 and InternalError x2 during `dvc push` (retried by s3fs)", 5, True,
                    test="test_push_killed_midway_then_pushed_again_under_s3_faults")
    campaign.record("S3 connection reset", "connection reset x2 during `dvc push`", 2, True,
                    test="test_push_killed_midway_then_pushed_again_under_s3_faults")


# --- releasing: a stray tag, a kill, two at once, a failing remote ------------------------------------------------


def test_release_tags_are_all_or_nothing(reg):
    run(reg, "git", "tag", f"{name(5)}@v1.0.0")  # a stray tag where the release wants one of its own
    proc = zoo(reg, "release", "1.0.0", check=False)
    assert proc.returncode == 7 and "none was" in proc.stderr, proc.stderr
    assert tags(reg) == [f"{name(5)}@v1.0.0"]  # not zoo-v1.0.0, not the 15 other model tags
    run(reg, "git", "tag", "-d", f"{name(5)}@v1.0.0")
    campaign.record("release", "a tag of the release already exists: no tag written", 1, True,
                    test="test_release_tags_are_all_or_nothing")


def test_release_killed_during_its_remote_check_leaves_no_tag(reg):
    proxy = reg["proxy"]
    hold = proxy.add("hold", method="GET")
    proc = start(reg, sys.executable, "-m", "stages", "release", "1.0.0")
    proxy.wait_held(1, timeout=60)
    kill(proc)
    proxy.remove(hold)
    assert tags(reg) == []
    campaign.record("SIGKILL", "`zoo release` killed during its remote check: no tag", 1, True,
                    test="test_release_killed_during_its_remote_check_leaves_no_tag")


def test_release_refused_while_the_remote_fails_its_check(reg):
    proxy = reg["proxy"]
    rule = proxy.add("503")
    before = proxy.injected["503"]
    proc = zoo(reg, "release", "1.0.0", check=False)
    proxy.remove(rule)
    assert proc.returncode == 7, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "remote" in proc.stderr, proc.stderr
    assert tags(reg) == []
    campaign.record("S3 500/503", "SlowDown on every request during `zoo release`'s remote check: refused, no tag",
                    proxy.injected["503"] - before, True, test="test_release_refused_while_the_remote_fails_its_check")


def test_two_releases_at_once_make_one(reg):
    proxy = reg["proxy"]
    hold = proxy.add("hold", method="GET")
    first = start(reg, sys.executable, "-m", "stages", "release", "1.0.0")
    proxy.wait_held(1, timeout=60)
    second = start(reg, sys.executable, "-m", "stages", "release", "1.0.0")
    deadline = time.monotonic() + 60
    while "waiting" not in stderr_of(second) and time.monotonic() < deadline:
        time.sleep(0.1)
    proxy.remove(hold)
    assert first.wait(timeout=120) == 0, stderr_of(first)
    assert second.wait(timeout=120) == 7
    assert "another release is running" in stderr_of(second)
    assert "zoo-v1.0.0 already exists" in stderr_of(second), stderr_of(second)
    assert sorted(tags(reg)) == sorted(["zoo-v1.0.0", *(f"{name(i)}@v1.0.0" for i in range(CARDS))])
    campaign.record("concurrent runs", "two `zoo release 1.0.0` at once: one waits, then is refused; one tag set", 1,
                    True, test="test_two_releases_at_once_make_one")


# --- consumers: 16 at once through a flaky remote, then truncated and corrupted replies ---------------------------


def test_16_consumers_pull_different_models_at_once(reg):
    proxy = reg["proxy"]
    clones = [clone(reg, f"consumer-{i}") for i in range(CARDS)]
    rule = proxy.add("503", method="GET", every=7)
    before = proxy.injected["503"]
    with ThreadPoolExecutor(CARDS) as pool:
        procs = list(pool.map(lambda i: zoo(reg, "pull", name(i), cwd=clones[i], check=False), range(CARDS)))
    proxy.remove(rule)
    assert [p.returncode for p in procs] == [0] * CARDS, [p.stderr for p in procs if p.returncode]
    checked = 0
    for i, consumer in enumerate(clones):
        manifest = json.loads((consumer / f"registry/onnx/{name(i)}.manifest.json").read_text())
        folder = consumer / "registry/onnx" / name(i)
        assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == sorted(manifest["files"])
        for rel, rec in manifest["files"].items():
            assert sha256_file(folder / rel) == rec["sha256"]
            checked += 1
        assert not (consumer / "registry/onnx" / name((i + 1) % CARDS)).exists()  # that model, nothing else
    assert checked >= 2 * CARDS
    campaign.record("load", f"16 consumers pulling 16 models at once, SlowDown on every 7th GET ({checked} files "
                    "verified)", proxy.injected["503"] - before, True,
                    test="test_16_consumers_pull_different_models_at_once")


def test_truncated_and_corrupted_replies_are_refused_then_pulled(reg):
    proxy = reg["proxy"]
    consumer = clone(reg, "consumer-faults")
    before = sum(proxy.injected.values())
    rules = [proxy.add("truncate", key="/files/md5/", times=3), proxy.add("corrupt", key="/files/md5/", times=3)]
    first = zoo(reg, "pull", name(3), name(4), cwd=consumer, check=False)
    injected = sum(proxy.injected.values()) - before
    for rule in rules:
        proxy.remove(rule)
    if first.returncode != 0:  # a refused pull is one line; whatever is in the work tree is whole
        assert len(first.stderr.strip().splitlines()) == 1 and "Traceback" not in first.stderr, first.stderr
    second = zoo(reg, "pull", name(3), name(4), cwd=consumer)
    assert second.stdout.count("every sha256 matches its manifest") == 2
    assert injected >= 3
    campaign.record("S3 short or corrupted body", "bodies cut short x3 and flipped bytes x3 during `zoo pull`",
                    injected, True, test="test_truncated_and_corrupted_replies_are_refused_then_pulled")


def test_plain_dvc_pull_through_server_errors(reg):
    """Consumers who use DVC itself get the same retries and the same verified bytes."""
    proxy = reg["proxy"]
    consumer = clone(reg, "consumer-dvc")
    rules = [proxy.add("500", method="GET", every=2, times=3), proxy.add("503", method="HEAD", times=2)]
    before = sum(proxy.injected.values())
    run(reg, "dvc", "pull", f"registry/onnx/{name(10)}", cwd=consumer)
    injected = sum(proxy.injected.values()) - before
    for rule in rules:
        proxy.remove(rule)
    manifest = json.loads((consumer / f"registry/onnx/{name(10)}.manifest.json").read_text())
    for rel, rec in manifest["files"].items():
        assert sha256_file(consumer / "registry/onnx" / name(10) / rel) == rec["sha256"]
    assert injected >= 3, proxy.injected
    campaign.record("S3 500/503", "InternalError and SlowDown during a plain `dvc pull` (retried, bytes verified)",
                    injected, True, test="test_plain_dvc_pull_through_server_errors")


def test_remote_down_is_one_line(reg):
    proxy = reg["proxy"]
    consumer = clone(reg, "consumer-down")
    proxy.down()
    try:
        proc = zoo(reg, "pull", name(6), cwd=consumer, check=False)
    finally:
        proxy.up()
    assert proc.returncode == 4, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "reachable" in proc.stderr, proc.stderr
    assert not (consumer / "registry/onnx" / name(6)).exists()
    zoo(reg, "pull", name(6), cwd=consumer)
    campaign.record("S3 unreachable", "the remote down during `zoo pull`: one line, nothing checked out", 1, True,
                    test="test_remote_down_is_one_line")


def test_audit_while_the_remote_resets_reports_unreadable_not_corrupted(reg):
    proxy = reg["proxy"]
    rule = proxy.add("reset", key="/files/md5/")
    before = proxy.injected["reset"]
    # botocore's retries off, so the fault outlasts them in seconds rather than minutes (s3fs still retries)
    proc = run(reg, sys.executable, "-m", "stages", "audit", "--remote", "--json", check=False, AWS_MAX_ATTEMPTS="1")
    proxy.remove(rule)
    report = json.loads(proc.stdout)
    assert proc.returncode == 8 and report["problems"]
    assert {p["status"] for p in report["problems"]} == {"unreadable"}, report["problems"][:3]
    audit_remote_ok(reg, "zoo-v1.0.0")
    campaign.record("S3 connection reset", "every object read reset during `zoo audit --remote`: unreadable, "
                    "never called corrupted", proxy.injected["reset"] - before, True,
                    test="test_audit_while_the_remote_resets_reports_unreadable_not_corrupted")


# --- flipped bytes: in the remote, in a cache, upstream ---------------------------------------------------------


def flip(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1:]


def test_a_flipped_byte_in_the_remote_is_refused_named_and_repaired(reg):
    oid = object_of(reg, f"registry/onnx/{name(7)}", "model.onnx")
    good = s3_object(reg, oid)
    s3_object(reg, oid, flip(good))
    lost = object_of(reg, f"registry/onnx/{name(11)}", "model.onnx")
    lost_bytes = s3_object(reg, lost)
    s3_object(reg, lost, b"")
    consumer = clone(reg, "consumer-remote-flip")
    plain = run(reg, "dvc", "pull", f"registry/onnx/{name(7)}", cwd=consumer, check=False)
    assert plain.returncode != 0  # verify = true: DVC refuses the object...
    assert not (consumer / "registry/onnx" / name(7) / "model.onnx").exists()  # ...and checks nothing out
    proc = zoo(reg, "pull", name(7), cwd=consumer, check=False)
    assert proc.returncode == 8, proc.stderr
    line = proc.stderr.strip()
    assert len(line.splitlines()) == 1
    assert f"registry/onnx/{name(7)}/model.onnx: corrupted" in line and oid in line and "dvc repro -f -s" in line, line
    audit = zoo(reg, "audit", "--remote", check=False)
    assert audit.returncode == 8 and f"corrupted              registry/onnx/{name(7)}/model.onnx" in audit.stdout
    assert f"missing                registry/onnx/{name(11)}/model.onnx" in audit.stdout, audit.stdout
    repaired = zoo(reg, "audit", "--remote", "--repair")  # from the registry's good cache
    # the raw download and the staged file are the same object here: each folder names it
    assert repaired.stdout.count("(repaired)") == 4, repaired.stdout
    assert s3_object(reg, oid) == good and s3_object(reg, lost) == lost_bytes
    zoo(reg, "pull", name(7), name(11), cwd=consumer)
    audit_remote_ok(reg, "zoo-v1.0.0")
    campaign.record("corruption", "one byte flipped in a remote object: `dvc pull` refuses, `zoo pull` names it, "
                    "`zoo audit --remote --repair` restores it", 1, True,
                    test="test_a_flipped_byte_in_the_remote_is_refused_named_and_repaired")
    campaign.record("lost object", "one object deleted from the remote: `zoo audit --remote` lists it missing, "
                    "`--repair` uploads it again from a verified cache copy", 1, True,
                    test="test_a_flipped_byte_in_the_remote_is_refused_named_and_repaired")


def test_bit_rot_in_the_local_cache_is_caught_and_healed_by_the_next_pull(reg):
    consumer = clone(reg, "consumer-cache-rot")
    zoo(reg, "pull", name(8), cwd=consumer)
    oid = object_of(reg, f"registry/onnx/{name(8)}", "model.onnx")
    cached = consumer / ".dvc/cache/files/md5" / oid[:2] / oid[2:]
    good = cached.read_bytes()
    stat = cached.stat()
    cached.chmod(0o644)
    cached.write_bytes(flip(good))
    os.utime(cached, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # bit rot: same size, same mtime
    cached.chmod(stat.st_mode)
    audit = zoo(reg, "audit", "HEAD", cwd=consumer, check=False)
    assert audit.returncode == 8 and f"registry/onnx/{name(8)}/model.onnx" in audit.stdout, audit.stdout
    (consumer / "registry/onnx" / name(8) / "model.onnx").unlink()
    proc = zoo(reg, "pull", name(8), cwd=consumer)  # the rotted copy is named, then fetched again from the remote
    assert f"registry/onnx/{name(8)}/model.onnx: the cache's copy (object {oid}) was corrupted" in proc.stderr, proc.stderr
    assert "every sha256 matches its manifest (1 object(s) from the remote)" in proc.stdout, proc.stdout
    assert cached.read_bytes() == good
    assert sha256_file(consumer / "registry/onnx" / name(8) / "model.onnx") == hashlib.sha256(good).hexdigest()
    campaign.record("corruption", "bit rot in a consumer's DVC cache (size and mtime kept): `zoo audit` lists it, "
                    "the next `zoo pull` names it and fetches a verified copy from the remote", 1, True,
                    test="test_bit_rot_in_the_local_cache_is_caught_and_healed_by_the_next_pull")


def test_a_flipped_byte_upstream_is_refused_by_the_fetch(reg, mirror_root):
    url = f"https://example.org/integrity/{name(9)}/model.onnx"
    good = fixtures.tiny_model(109)
    raw = reg["repo"] / "registry/_raw" / name(9)
    before = {p.name: p.read_bytes() for p in raw.iterdir()}
    fixtures.publish(mirror_root, url, flip(good))
    try:
        proc = zoo(reg, "fetch", f"registry/onnx/{name(9)}.yaml", check=False)
    finally:
        fixtures.publish(mirror_root, url, good)
    assert proc.returncode == 4 and "sha256" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert {p.name: p.read_bytes() for p in raw.iterdir()} == before  # the good raw copy is untouched
    assert "Data and pipelines are up to date" in run(reg, "dvc", "status").stdout
    campaign.record("corruption", "one byte flipped in an upstream file: `zoo fetch` refuses it (sha256 pin), "
                    "the raw copy stays", 1, True, test="test_a_flipped_byte_upstream_is_refused_by_the_fetch")
