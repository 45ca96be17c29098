"""DVC outputs stay out of git whatever `dvc repro` did: through real git, DVC and the local S3 server.

DVC writes its per-output .gitignore lines only when a repro succeeds as a whole; after `dvc repro
-k` with one failing stage it writes none, and the README's next step, `git add -A`, would commit
every raw and staged file of the stages that did succeed. The root .gitignore's static rules
cover every raw folder and every staged folder instead, and `zoo check` names any such path that
got into git anyway (`git add -f`, or a commit made before the rules).
"""

from __future__ import annotations

import json

import pytest

from tests.support import sandbox

pytestmark = pytest.mark.e2e
GOOD = ("mnist", "squeezenet")


def is_output(path: str) -> bool:
    """A DVC output's file: under registry/_raw/, or inside a staged folder registry/<format>/<name>/
    (not a pipeline shard's dvc.yaml or dvc.lock, registry/_pipeline/<NNNN>/: those are git's)."""
    parts = path.split("/")
    return parts[0] == "registry" and len(parts) >= 4 and parts[1] != "_pipeline"


@pytest.fixture(scope="module")
def reg(tmp_path_factory, mirror_server, demo_fixtures):
    env = sandbox.env(mirror_server.url)
    unlicensed = (demo_fixtures["mnist"].card.replace("name: mnist", "name: unlicensed", 1)
                  .replace("license: apache-2.0", "license: cc-by-nc-4.0", 1))
    assert "license: cc-by-nc-4.0" in unlicensed
    cards = {f"onnx/{n}": demo_fixtures[n].card for n in GOOD} | {"onnx/unlicensed": unlicensed}
    with sandbox.S3Server(bucket="zoo-gitignore-e2e") as s3:
        repo = sandbox.new_registry(tmp_path_factory.mktemp("gitignore") / "registry", cards, env, s3)
        yield {"repo": repo, "env": env, "s3": s3, "tmp": tmp_path_factory.mktemp("gitignore-clones")}


def run(reg, *args, cwd=None, check=True):
    return sandbox.run(list(args), cwd or reg["repo"], reg["env"], check=check)


def test_failed_repro_then_git_add_stages_no_model_bytes(reg):
    proc = run(reg, "dvc", "repro", "-k", check=False)
    assert proc.returncode != 0
    assert "licence 'cc-by-nc-4.0' is not in params.yaml licenses.allow" in proc.stderr
    repo = reg["repo"]
    for name in (*GOOD, "unlicensed"):  # every fetch ran, and the two good cards staged
        assert (repo / f"registry/_raw/{name}/_fetch.json").is_file(), name
    for name in GOOD:
        assert (repo / f"registry/onnx/{name}/model.onnx").is_file(), name
    assert not (repo / "registry/onnx/unlicensed").exists()
    run(reg, "git", "add", "-A")
    added = run(reg, "git", "diff", "--cached", "--name-only").stdout.split()
    assert [p for p in added if is_output(p)] == []
    assert {f"registry/onnx/{n}.manifest.json" for n in GOOD} <= set(added)  # manifests: git's, as before
    index = json.loads((repo / "registry/index.json").read_text())
    locks = {index["cards"][n]["dvcfile"].replace("dvc.yaml", "dvc.lock") for n in (*GOOD, "unlicensed")}
    assert locks and locks <= set(added)  # the shards' locks, with the stages that succeeded
    run(reg, "git", "commit", "-q", "-m", "stage what stages")
    assert [p for p in run(reg, "git", "ls-files").stdout.split() if is_output(p)] == []


def test_ignore_rules_cover_outputs_and_only_outputs(reg):
    ignored = ["registry/_raw/mnist", "registry/_raw/mnist/_fetch.json", "registry/_raw/new-model/x.bin",
               "registry/onnx/mnist", "registry/onnx/mnist/model.onnx", "registry/onnx/mnist/test_data_set_0/input_0.pb",
               "registry/keras/some-model/model.keras", "registry/tensorflow/some-model/model.pb"]
    tracked = ["registry/onnx/mnist.yaml", "registry/onnx/mnist.manifest.json", "registry/index.json",
               "registry/keras/some-model.yaml", "registry/tensorflow/some-model.manifest.json", "dvc.yaml", "dvc.lock",
               "registry/_pipeline/0000/dvc.yaml", "registry/_pipeline/0000/dvc.lock",
               "registry/_pipeline/0013/dvc.lock", "registry/onnx/.gitignore", "params.yaml"]
    proc = run(reg, "git", "check-ignore", "--no-index", "-v", *ignored, *tracked, check=False)
    matched = {line.split("\t", 1)[1]: line.split("\t", 1)[0] for line in proc.stdout.splitlines()}
    assert sorted(matched) == sorted(ignored)
    assert all(rule.startswith(".gitignore:") for rule in matched.values())  # the root file's static rules


def test_zoo_check_fails_on_a_tracked_output(reg):
    assert "cards ok" in run(reg, "zoo", "check").stdout
    for path, output in (("registry/_raw/mnist/_fetch.json", "registry/_raw/mnist"),
                         ("registry/onnx/squeezenet/model.onnx", "registry/onnx/squeezenet")):
        run(reg, "git", "add", "-f", path)
        proc = run(reg, "zoo", "check", check=False)
        assert proc.returncode == 3
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith(f"zoo: error: {output} is a DVC output but git tracks it")
        assert f"`git rm -r --cached {output}`" in line
        run(reg, "git", "rm", "-r", "-q", "--cached", output)
    assert "cards ok" in run(reg, "zoo", "check").stdout
    assert run(reg, "git", "status", "--porcelain").stdout == ""


def test_dvc_works_with_outputs_ignored_by_the_root_rules(reg):
    status = json.loads(run(reg, "dvc", "status", "--json").stdout)
    assert sorted(map(sandbox.short, status)) == ["stage-onnx-zoo@unlicensed"]
    run(reg, "zoo", "remove", "unlicensed")
    assert "up to date" in run(reg, "dvc", "status").stdout
    assert sandbox.ran(run(reg, "dvc", "repro").stdout) == []
    run(reg, "git", "add", "-A")
    run(reg, "git", "commit", "-q", "-m", "remove unlicensed")
    assert run(reg, "git", "status", "--porcelain", "--untracked-files=all").stdout == ""
    run(reg, "dvc", "push")
    clone = reg["tmp"] / "clone"
    run(reg, "git", "clone", "-q", str(reg["repo"]), str(clone), cwd=reg["tmp"])
    sandbox.configure_remote(clone, reg["s3"], reg["env"])
    run(reg, "dvc", "pull", "registry/onnx/mnist", cwd=clone)
    assert (clone / "registry/onnx/mnist/model.onnx").is_file()
    assert not (clone / "registry/onnx/squeezenet").exists() and not (clone / "registry/_raw").exists()
    assert run(reg, "git", "status", "--porcelain", "--untracked-files=all", cwd=clone).stdout == ""
    assert "cards ok" in run(reg, "zoo", "check", cwd=clone).stdout
