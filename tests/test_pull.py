"""`zoo pull` and `stages.api.download` through real git, real DVC and a local S3 server.

One registry of 4 tiny ONNX-zoo cards, staged with `dvc repro`, pushed and released as zoo-v1.0.0;
then p0001's upstream bytes change, it is restaged, pushed and released as zoo-v1.1.0, so p0001
differs between the two releases. Each test works in its own fresh clone (or a consumer's folder)
and checks every file it gets against the manifest git holds at the revision it asked for.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from stages.files import sha256_file
from tests.conftest import leftovers
from tests.support import sandbox
from tests.support.mirror import fixtures

pytestmark = pytest.mark.e2e
CARDS = 4
BUCKET = "zoo-pull-test"
CHANGED = "p0001"  # restaged between zoo-v1.0.0 and zoo-v1.1.0 (HEAD)


def name(i: int) -> str:
    return f"p{i:04d}"


@dataclass
class Reg:
    repo: Path        # the registry (work tree, its cache holds everything)
    bare: Path        # what consumers clone
    root: Path
    env: dict
    s3: sandbox.S3Server
    first: str        # the first commit: cards and index, nothing staged


def card(mirror_root: Path, i: int, seed: int, version: str) -> str:
    url = f"https://example.org/pull-test/{version}/{name(i)}/model.onnx"
    return fixtures.onnx_card(name(i), url, fixtures.publish(mirror_root, url, fixtures.tiny_model(seed)))


@pytest.fixture(scope="module")
def reg(tmp_path_factory, mirror_server, mirror_root):
    env = sandbox.env(mirror_server.url)
    root = tmp_path_factory.mktemp("pull")
    cards = {f"onnx/{name(i)}": card(mirror_root, i, i, "v1") for i in range(CARDS)}
    with sandbox.S3Server(bucket=BUCKET) as s3:
        repo = sandbox.new_registry(root / "registry", cards, env)
        remote_at(repo, s3.endpoint)
        first = git(repo, env, "rev-parse", "HEAD")

        def release(version: str, message: str) -> None:
            sandbox.run(["dvc", "repro", "-q"], repo, env)
            sandbox.run(["git", "add", "-A"], repo, env)
            sandbox.run(["git", "commit", "-q", "-m", message], repo, env)
            sandbox.run(["dvc", "push", "-q"], repo, env)
            assert f"tagged zoo-v{version}" in sandbox.run(["zoo", "release", version], repo, env).stdout

        release("1.0.0", "stage the zoo")
        (repo / f"registry/onnx/{CHANGED}.yaml").write_text(card(mirror_root, 1, 101, "v2"))
        sandbox.run(["zoo", "index"], repo, env)
        release("1.1.0", f"new upstream bytes for {CHANGED}")
        bare = root / "registry.git"
        sandbox.run(["git", "clone", "-q", "--bare", str(repo), str(bare)], root, env)
        yield Reg(repo, bare, root, env, s3, first)


# --- helpers -----------------------------------------------------------------------------------------------------


def git(cwd: Path, env: dict, *args: str) -> str:
    return sandbox.run(["git", *args], cwd, env).stdout.strip()


def remote_at(checkout: Path, endpoint: str) -> None:
    """The `zoo` remote of a checkout: this module's bucket at `endpoint` (config.local, never committed)."""
    (checkout / ".dvc" / "config.local").write_text(
        f"['remote \"zoo\"']\n    url = s3://{BUCKET}/dvc\n    endpointurl = {endpoint}\n")


@contextmanager
def remote_down(checkout: Path, reg: Reg):
    """The checkout's remote points at a port nobody listens on: whatever succeeds read nothing from it."""
    remote_at(checkout, f"http://127.0.0.1:{sandbox.free_port()}")
    try:
        yield
    finally:
        remote_at(checkout, reg.s3.endpoint)


def clone(reg: Reg, label: str) -> Path:
    dest = reg.root / label
    sandbox.run(["git", "clone", "-q", str(reg.repo), str(dest)], reg.root, reg.env)
    remote_at(dest, reg.s3.endpoint)
    return dest


def zoo(reg: Reg, cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return sandbox.run(["zoo", *args], cwd, reg.env, check=check)


def pulled(reg: Reg, cwd: Path, *args: str) -> list[str]:
    """`zoo pull ARGS`'s stdout lines (it must succeed)."""
    return zoo(reg, cwd, "pull", *args).stdout.splitlines()


def error(proc: subprocess.CompletedProcess, code: int) -> str:
    """The one stderr line of a failed command with exit `code`."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("zoo: error: "), proc.stderr
    return lines[0]


def manifest_at(reg: Reg, rev: str, model: str) -> dict:
    return json.loads(git(reg.repo, reg.env, "show", f"{rev}:registry/onnx/{model}.manifest.json"))


def shas(manifest: dict) -> dict[str, str]:
    return {rel: rec["sha256"] for rel, rec in manifest["files"].items()}


def assert_matches(folder: Path, manifest: dict) -> None:
    """Exactly the manifest's files, each with its size and sha256."""
    present = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink())
    assert present == sorted(manifest["files"]), (folder, present)
    for rel, rec in manifest["files"].items():
        path = folder / rel
        assert not path.is_symlink() and path.stat().st_size == rec["size"], (folder, rel)
        assert sha256_file(path) == rec["sha256"], (folder, rel)


def models_in(checkout: Path) -> list[str]:
    """The model folders under registry/ (staged and raw), and any file under registry/_raw."""
    registry = checkout / "registry"
    folders = sorted(f"registry/{p.parent.name}/{p.name}" for p in registry.glob("*/*")
                     if p.is_dir() and p.parent.name != "_pipeline")
    raw_files = sorted(str(p.relative_to(checkout)) for p in (registry / "_raw").rglob("*")
                       if p.is_file() and p.name != ".gitignore")
    return folders + raw_files


def line(dest: str, files: int, how: str, rev: str | None = None, raw: bool = False) -> tuple[str, str]:
    """(start, end) of one `zoo pull` output line (the size between them is not asserted here)."""
    what = "every md5 matches its DVC listing" if raw else "every sha256 matches its manifest"
    return f"{dest}{f' ({rev})' if rev else ''}: {files} files, ", f", {what} ({how})"


def assert_line(got: str, dest: str, files: int, how: str, rev: str | None = None, raw: bool = False) -> None:
    start, end = line(dest, files, how, rev, raw)
    assert got.startswith(start) and got.endswith(end), (got, start, end)


def remote_count(manifest: dict, cached: dict | None = None) -> str:
    """What a pull says it read from the remote: the folder's `.dir` listing and each distinct file's
    object, but those of the files of `cached` (a manifest whose folder the cache already holds)."""
    have = set(shas(cached).values()) if cached else set()
    return f"{len(set(shas(manifest).values()) - have) + 1} object(s) from the remote"


def lock_out(checkout: Path, path: str) -> str:
    """The `.dir` md5 the checkout's dvc.lock files record for the tracked folder `path`."""
    import yaml

    for lock in (checkout / "registry/_pipeline").glob("*/dvc.lock"):
        for entry in yaml.safe_load(lock.read_text())["stages"].values():
            for out in entry.get("outs", []):
                if out["path"] == path:
                    return out["md5"]
    raise AssertionError(f"{path}: in no dvc.lock of {checkout}")


def cache_object(checkout: Path, oid: str) -> Path:
    return checkout / ".dvc/cache/files/md5" / oid[:2] / oid[2:]


def listing(checkout: Path, path: str) -> dict[str, str]:
    """{relpath: md5} of a tracked folder, from its lock entry and the `.dir` object in the checkout's cache."""
    return {e["relpath"]: e["md5"] for e in json.loads(cache_object(checkout, lock_out(checkout, path)).read_bytes())}


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def stage_address(checkout: Path, model: str) -> str:
    index = json.loads((checkout / "registry/index.json").read_text())
    return f"{index['cards'][model]['dvcfile']}:stage-onnx-zoo@{model}"


def changed_outs(reg: Reg, checkout: Path, model: str) -> dict:
    """What `dvc status` says about the staged folder of `model` (its converter stage's outputs)."""
    address = stage_address(checkout, model)
    report = json.loads(sandbox.run(["dvc", "status", "--json", address], checkout, reg.env).stdout or "{}")
    outs: dict = {}
    for entry in report.get(address, []):
        if isinstance(entry, dict):
            outs.update(entry.get("changed outs", {}))
    return outs


# --- the tests ---------------------------------------------------------------------------------------------------


def test_fresh_clone_pulls_that_model_only_and_a_second_pull_reads_nothing(reg):
    c = clone(reg, "fresh")
    folder = "registry/onnx/p0000"
    assert changed_outs(reg, c, "p0000") == {folder: "not in cache"}
    manifest = manifest_at(reg, "HEAD", "p0000")
    (got,) = pulled(reg, c, "p0000")
    assert_line(got, folder, len(manifest["files"]), remote_count(manifest))
    assert models_in(c) == [folder]
    assert_matches(c / folder, manifest)
    assert changed_outs(reg, c, "p0000") == {}  # what DVC checks out: the raw dep (not pulled) aside, clean
    assert git(c, reg.env, "status", "--porcelain") == ""
    with remote_down(c, reg):
        (again,) = pulled(reg, c, "p0000")
        assert_line(again, folder, len(manifest["files"]), "already there")
        shutil.rmtree(c / folder)
        (cached,) = pulled(reg, c, "p0000")
        assert_line(cached, folder, len(manifest["files"]), "from the cache")
    assert_matches(c / folder, manifest)


def test_spellings_name_the_same_folder_and_one_command_pulls_several(reg):
    c = clone(reg, "spellings")
    manifests = {m: manifest_at(reg, "HEAD", m) for m in ("p0000", "p0002", "p0003")}
    (got,) = pulled(reg, c, "onnx/p0002")
    assert_line(got, "registry/onnx/p0002", len(manifests["p0002"]["files"]), remote_count(manifests["p0002"]))
    with remote_down(c, reg):
        (same,) = pulled(reg, c, "p0002", "onnx/p0002")  # two spellings of one folder: one line
        assert_line(same, "registry/onnx/p0002", len(manifests["p0002"]["files"]), "already there")
    shutil.rmtree(c / "registry/onnx/p0002")
    lines = pulled(reg, c, "p0003", "onnx/p0002", "p0000")  # each line counts what its own folder read
    assert len(lines) == 3, lines
    for got, model in zip(lines, ("p0003", "p0002", "p0000")):
        how = "from the cache" if model == "p0002" else remote_count(manifests[model], cached=manifests["p0002"])
        assert_line(got, f"registry/onnx/{model}", len(manifests[model]["files"]), how)
    assert models_in(c) == ["registry/onnx/p0000", "registry/onnx/p0002", "registry/onnx/p0003"]
    for model, manifest in manifests.items():
        assert_matches(c / "registry/onnx" / model, manifest)


def test_rev_out_and_in_place_then_back_to_the_work_tree(reg, tmp_path):
    c = clone(reg, "rev")
    old, new = manifest_at(reg, "zoo-v1.0.0", CHANGED), manifest_at(reg, "HEAD", CHANGED)
    assert shas(old)["model.onnx"] != shas(new)["model.onnx"]
    folder = f"registry/onnx/{CHANGED}"

    (got,) = pulled(reg, c, CHANGED, "--rev", "zoo-v1.0.0", "--out", str(tmp_path / "v1"))
    assert_line(got, str(tmp_path / "v1/onnx" / CHANGED), len(old["files"]), remote_count(old), rev="zoo-v1.0.0")
    assert_matches(tmp_path / "v1/onnx" / CHANGED, old)
    assert sorted(p.name for p in (tmp_path / "v1").iterdir()) == ["onnx"]
    assert models_in(c) == [] and git(c, reg.env, "status", "--porcelain", "--ignored", "--", "registry") == ""

    proc = zoo(reg, c, "pull", CHANGED, "--rev", "zoo-v1.0.0")
    assert_line(proc.stdout.strip(), folder, len(old["files"]), "from the cache", rev="zoo-v1.0.0")
    assert f"{folder} now holds zoo-v1.0.0's files" in proc.stderr, proc.stderr
    assert_matches(c / folder, old)
    assert folder in changed_outs(reg, c, CHANGED)  # not what this checkout's dvc.lock records

    proc = zoo(reg, c, "pull", CHANGED)  # the old files are in the cache: replaced without --force
    assert proc.stderr == ""
    assert_line(proc.stdout.strip(), folder, len(new["files"]), remote_count(new, cached=old))
    assert remote_count(new, cached=old) != remote_count(new)  # some of its files did not change
    assert_matches(c / folder, new)

    proc = zoo(reg, c, "pull", "p0002", "--rev", "zoo-v1.0.0")  # the same files as the work tree's: no note
    assert proc.stderr == "" and proc.stdout.startswith("registry/onnx/p0002 (zoo-v1.0.0): ")
    assert_matches(c / "registry/onnx/p0002", manifest_at(reg, "HEAD", "p0002"))


def test_raw_pulls_the_upstream_folder_as_the_dvc_listing_records_it(reg, tmp_path):
    c = clone(reg, "raw")
    folder = "registry/_raw/p0003"
    (got,) = pulled(reg, c, "p0003", "--raw")
    expected = listing(c, folder)
    assert_line(got, folder, len(expected), f"{len(expected) + 1} object(s) from the remote", raw=True)
    assert models_in(c) == [folder] + [f"{folder}/{rel}" for rel in sorted(expected)]
    present = sorted(p.relative_to(c / folder).as_posix() for p in (c / folder).rglob("*") if p.is_file())
    assert present == sorted(expected)
    for rel, oid in expected.items():
        assert md5(c / folder / rel) == oid
        assert (c / folder / rel).read_bytes() == (reg.repo / folder / rel).read_bytes()
    with remote_down(c, reg):
        (out,) = pulled(reg, c, "p0003", "--raw", "--out", str(tmp_path))
    assert_line(out, str(tmp_path / "_raw/p0003"), len(expected), "from the cache", raw=True)
    assert {rel: md5(tmp_path / "_raw/p0003" / rel) for rel in expected} == expected


def test_unknown_names_revisions_and_unstaged_models_are_one_line_errors(reg):
    c = clone(reg, "errors")
    line1 = error(zoo(reg, c, "pull", "p00001", check=False), 2)
    assert "p00001: no model by that name" in line1 and "did you mean" in line1
    assert "p0001" in line1.split("did you mean")[1], line1
    line2 = error(zoo(reg, c, "pull", "p0001", "--rev", "nope", check=False), 7)
    assert "nope: no such revision" in line2
    line3 = error(zoo(reg, c, "pull", "p0000", "--rev", reg.first, check=False), 2)
    assert "registry/onnx/p0000: not staged" in line3, line3
    line4 = error(zoo(reg, c, "pull", "p0000", "p00001", check=False), 2)  # nothing pulled when one name is wrong
    assert "p00001" in line4
    assert models_in(c) == [] and not list((c / ".dvc/cache").rglob("*.dir"))
    with remote_down(c, reg):
        line5 = error(zoo(reg, c, "pull", "p0000", check=False), 4)
    assert "the DVC remote 'zoo'" in line5 and "unreachable" in line5, line5
    assert models_in(c) == [] and leftovers(c) == []


def test_local_edits_are_refused_unless_forced(reg):
    c = clone(reg, "edits")
    folder = c / "registry/onnx/p0002"
    manifest = manifest_at(reg, "HEAD", "p0002")
    pulled(reg, c, "p0002")
    (folder / "notes.txt").write_text("mine\n")
    before = {p.name: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    refusal = error(zoo(reg, c, "pull", "p0002", check=False), 1)
    assert "notes.txt" in refusal and "replacing the folder would lose them" in refusal and "--force" in refusal
    assert {p.name: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    model = folder / "model.onnx"
    os.chmod(model, 0o644)
    model.write_bytes(model.read_bytes()[:-1] + b"!")  # an edited file is a local edit too
    refusal = error(zoo(reg, c, "pull", "p0002", check=False), 1)
    assert "model.onnx" in refusal and "notes.txt" in refusal
    assert leftovers(c) == [] and (folder / "notes.txt").read_text() == "mine\n"
    (got,) = pulled(reg, c, "p0002", "--force")
    assert got.endswith("(from the cache)"), got
    assert_matches(folder, manifest)


def flip(path: Path) -> None:
    """One byte of a (read-only) cache object inverted in place: same size, another md5."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))
    assert path.stat().st_size == len(data)


def test_rotted_cache_objects_are_fetched_again_and_said(reg):
    c = clone(reg, "rot")
    folder = "registry/onnx/p0000"
    manifest = manifest_at(reg, "HEAD", "p0000")
    pulled(reg, c, "p0000")
    dir_oid = lock_out(c, folder)
    oid = listing(c, folder)["model.onnx"]
    for rotted in (oid, dir_oid):
        flip(cache_object(c, rotted))
        assert md5(cache_object(c, rotted)) != rotted.removesuffix(".dir")
    shutil.rmtree(c / folder)
    proc = zoo(reg, c, "pull", "p0000")
    assert_line(proc.stdout.strip(), folder, len(manifest["files"]), "2 object(s) from the remote")
    notes = proc.stderr.splitlines()
    assert len(notes) == 2, proc.stderr
    assert notes[0].startswith(f"zoo pull: {folder}: the cache's listing {dir_oid} was corrupted"), notes
    assert notes[1].startswith(f"zoo pull: {folder}/model.onnx: the cache's copy (object {oid}) was corrupted"), notes
    assert_matches(c / folder, manifest)
    for rotted in (oid, dir_oid):
        assert md5(cache_object(c, rotted)) == rotted.removesuffix(".dir")


def s3_key(oid: str) -> str:
    return f"dvc/files/md5/{oid[:2]}/{oid[2:]}"


@contextmanager
def remote_object(reg: Reg, oid: str):
    """An S3 client on the module's bucket; object `oid` is put back as it was afterwards."""
    import boto3

    client = boto3.client("s3", endpoint_url=reg.s3.endpoint, region_name="us-east-1",
                          aws_access_key_id=sandbox.AWS_ENV["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=sandbox.AWS_ENV["AWS_SECRET_ACCESS_KEY"])
    good = client.get_object(Bucket=BUCKET, Key=s3_key(oid))["Body"].read()
    try:
        yield client, good
    finally:
        client.put_object(Bucket=BUCKET, Key=s3_key(oid), Body=good)


def test_an_object_missing_or_corrupted_in_the_remote_is_an_integrity_error(reg):
    c = clone(reg, "remote-damage")
    folder = "registry/onnx/p0003"
    oid = listing(reg.repo, folder)["model.onnx"]
    with remote_object(reg, oid) as (client, good):
        client.delete_object(Bucket=BUCKET, Key=s3_key(oid))
        missing = error(zoo(reg, c, "pull", "p0003", check=False), 8)
        assert f"{folder}/model.onnx: missing in the remote" in missing and oid in missing, missing
        client.put_object(Bucket=BUCKET, Key=s3_key(oid), Body=bytes(b ^ 0xFF for b in good))
        corrupted = error(zoo(reg, c, "pull", "p0003", check=False), 8)
        assert f"{folder}/model.onnx: corrupted in the remote" in corrupted and oid in corrupted, corrupted
        assert not (c / folder).exists() and not cache_object(c, oid).exists() and leftovers(c) == []
    manifest = manifest_at(reg, "HEAD", "p0003")
    (got,) = pulled(reg, c, "p0003")  # what the failed pulls verified stayed in the cache
    assert_line(got, folder, len(manifest["files"]), "1 object(s) from the remote")
    assert_matches(c / folder, manifest)
    assert md5(cache_object(c, oid)) == oid


def test_api_download_at_a_release_from_a_local_path_a_bare_repo_and_a_file_url(reg, tmp_path, monkeypatch):
    from stages.api import ModelNotFound, download

    for key, value in sandbox.AWS_ENV.items():
        monkeypatch.setenv(key, value)
    remote = {"endpointurl": reg.s3.endpoint, "url": f"s3://{BUCKET}/dvc"}
    old, new = manifest_at(reg, "zoo-v1.0.0", CHANGED), manifest_at(reg, "HEAD", CHANGED)
    v1 = git(reg.repo, reg.env, "rev-parse", "zoo-v1.0.0^{commit}")
    head = git(reg.repo, reg.env, "rev-parse", "HEAD")

    model = download(CHANGED, tmp_path / "v1", repo=str(reg.bare), release="zoo-v1.0.0", remote_config=remote)
    assert (model.name, model.format, model.release, model.commit) == (CHANGED, "onnx", "zoo-v1.0.0", v1)
    assert model.path == (tmp_path / "v1").resolve() and model.files == shas(old) and model.manifest == old
    assert_matches(tmp_path / "v1", old)

    latest = download(f"onnx/{CHANGED}", tmp_path / "latest", repo=str(reg.bare), remote_config=remote)
    assert (latest.release, latest.commit, latest.files) == ("zoo-v1.1.0", head, shas(new))
    assert_matches(tmp_path / "latest", new)

    # the registry's own checkout: its .dvc/config.local names the endpoint and bucket
    local = download(CHANGED, tmp_path / "local", repo=str(reg.repo), release="zoo-v1.0.0", format="onnx")
    assert local.commit == v1
    assert_matches(tmp_path / "local", old)

    url = download(CHANGED, tmp_path / "url", repo=f"file://{reg.bare}", remote_config=remote)  # the latest release
    assert (url.format, url.release, url.commit, url.files) == ("onnx", "zoo-v1.1.0", head, shas(new))
    assert_matches(tmp_path / "url", new)

    with pytest.raises(ModelNotFound, match="did you mean .*p0003"):
        download("p00003", tmp_path / "missing", repo=str(reg.bare), release="zoo-v1.0.0", remote_config=remote)
    assert not (tmp_path / "missing").exists()




def test_a_pull_reads_the_index_then_one_shard_lock_and_one_manifest_whatever_the_zoo_size(reg, tmp_path):
    """What makes `zoo pull` constant in the zoo's size: at any size, locating a model reads
    registry/index.json, then exactly its shard's dvc.lock and its manifest (here at a revision whose
    index names 2,000 more cards in 128 shards, none of whose files exist)."""
    from stages import pull as pull_mod
    from stages.shards import dvcfile

    checkout = clone(reg, "big-index")
    index_path = checkout / "registry/index.json"
    index = json.loads(index_path.read_text())
    template_card, template_item = index["cards"][name(2)], index["converters"]["onnx_zoo"][name(2)]
    for i in range(2000):
        extra = f"x{i:05d}"
        index["cards"][extra] = dict(template_card, card=f"registry/onnx/{extra}.yaml", dvcfile=dvcfile(extra, 128))
        index["converters"]["onnx_zoo"][extra] = dict(template_item, card=f"registry/onnx/{extra}.yaml")
    index_path.write_text(json.dumps(index))
    reads: list[list[str]] = []
    original = pull_mod.Revision.read

    def recording(self, paths):
        reads.append(sorted(paths))
        return original(self, paths)

    pull_mod.Revision.read = recording
    try:
        found = pull_mod.locate(pull_mod.Revision.of(checkout, None), [name(2)])
    finally:
        pull_mod.Revision.read = original
    shard = index["cards"][name(2)]["dvcfile"].removesuffix("dvc.yaml")
    assert reads == [["registry/index.json"], sorted([f"{shard}dvc.lock", f"registry/onnx/{name(2)}.manifest.json"])]
    assert found[0].md5 == lock_out(checkout, f"registry/onnx/{name(2)}")
    proc = zoo(reg, checkout, "pull", "x00007", check=False)  # in the index, never staged: said, nothing read
    assert "not staged" in error(proc, 2)


def test_an_index_from_before_the_shards_names_the_root_pipeline():
    """Releases made before the pipeline was sharded have no `dvcfile` in registry/index.json: their stages and
    lock entries are the root's (dvc.yaml, dvc.lock), so `--rev` at such a release reads those."""
    from stages.pull import targets

    index = {"cards": {"old": {"card": "registry/onnx/old.yaml", "format": "onnx", "kind": "onnx-zoo"}},
             "converters": {"onnx_zoo": {"old": {"card": "registry/onnx/old.yaml", "format": "onnx"}}}}
    staged, = targets(index, ["old"])
    assert (staged.address, staged.lock, staged.stage) == ("dvc.yaml:stage-onnx-zoo@old", "dvc.lock", "stage-onnx-zoo@old")
    raw, = targets(index, ["onnx/old"], raw=True)
    assert (raw.path, raw.address, raw.lock) == ("registry/_raw/old", "dvc.yaml:fetch@old", "dvc.lock")


def test_out_naming_a_file_is_one_line(reg):
    checkout = clone(reg, "out-file")
    (checkout / "not-a-folder").write_text("x")
    proc = zoo(reg, checkout, "pull", name(0), "--out", "not-a-folder", check=False)
    assert "--out not-a-folder: a file, not a folder" in error(proc, 3)
    assert (checkout / "not-a-folder").read_text() == "x" and not (checkout / "registry/onnx" / name(0)).exists()
