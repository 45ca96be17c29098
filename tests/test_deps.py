"""A converter stage's code deps are the import closure of what it runs, written by `zoo index`.

Unit tests on a tiny fake package, the project's own dvc.yaml against the closure, `zoo check`
on a hand-edited deps list, and end to end through real DVC: editing a module makes stale exactly
the stages whose closure holds it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stages import deps, index, indexfile
from stages.convert import CONVERTERS, TARGET_CONVERTERS
from stages.errors import IndexStaleError
from stages.sources import kinds
from tests.support import sandbox

PROJECT = Path(__file__).resolve().parent.parent

FAKE = {
    "__init__.py": "VERSION = 1\n",
    "a.py": "import os\nfrom stages import b, VERSION\n",                      # `from stages import <submodule>`
    "b.py": "import numpy\n\n\ndef f():\n    import stages.sub.c\n    return stages.sub.c\n",  # in a function
    "errors.py": "class E(Exception):\n    pass\n",
    "sub/__init__.py": "from .d import thing\n",                             # relative, runs sub/d.py
    "sub/c.py": "from stages.errors import E\nif E:\n    from ..sub import e\n",
    "sub/d.py": "thing = 1\n",
    "sub/e.py": "",
    "unused.py": "from stages import a\n",
    "cli.py": "from stages import a, unused\n",
}


def fake_package(tmp_path: Path, files: dict[str, str] = FAKE) -> Path:
    for rel, text in files.items():
        path = tmp_path / "stages" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path / "stages"


def test_closure_follows_every_import_form_inside_the_package_only(tmp_path):
    package = fake_package(tmp_path)
    assert deps.closure(package, ["stages.a"]) == [
        "stages/__init__.py", "stages/a.py", "stages/b.py", "stages/errors.py", "stages/sub/__init__.py",
        "stages/sub/c.py", "stages/sub/d.py", "stages/sub/e.py"]
    assert deps.closure(package, ["stages.sub.d"]) == ["stages/__init__.py", "stages/sub/__init__.py", "stages/sub/d.py"]
    assert deps.closure(package, ["stages"]) == ["stages/__init__.py"]  # VERSION is a name, not a module


def test_module_files_tells_modules_from_names(tmp_path):
    package = fake_package(tmp_path)
    assert deps.module_files(package, "stages.sub.c") == [Path("stages/__init__.py"), Path("stages/sub/__init__.py"),
                                                          Path("stages/sub/c.py")]
    assert deps.module_files(package, "stages.errors.E") is None
    assert deps.module_files(package, "stages.nothing") is None
    assert deps.module_files(package, "numpy") is None


def test_unknown_root_and_syntax_errors_are_one_line(tmp_path):
    package = fake_package(tmp_path, FAKE | {"b.py": "def f(:\n"})
    with pytest.raises(ValueError, match="'stages.nope' is not a module of"):
        deps.closure(package, ["stages.nope"])
    with pytest.raises(IndexStaleError) as info:
        deps.closure(package, ["stages.a"])
    assert "stages/b.py" in str(info.value) and "\n" not in str(info.value) and "zoo index" in str(info.value)


def shard_stages(root: Path) -> dict[str, dict]:
    """{shard dvc.yaml path: its stages} of a root's generated pipeline shards, registry/_pipeline/*/dvc.yaml."""
    return {p.relative_to(root).as_posix(): yaml.safe_load(p.read_text())["stages"]
            for p in sorted((root / "registry/_pipeline").glob("*/dvc.yaml"))}


def test_project_dvc_yaml_lists_the_computed_closure():
    """The repository's own pipeline shards are what `zoo index` writes (CI's `zoo check` says the same)."""
    shards = shard_stages(PROJECT)
    code = index.code_deps(PROJECT)
    blocks = [(stages, converter) for stages in shards.values() for converter in CONVERTERS.values()
              if converter.stage in stages]
    used = {name for name, items in indexfile.read(PROJECT)["converters"].items() if items}
    assert used and {converter.name for _, converter in blocks} == used  # every converter the cards use is there
    for stages, converter in blocks:
        listed = stages[converter.stage]["do"]["deps"]
        assert listed == ["${item.card}", "registry/_raw/${key}", *code[converter.name], *converter.pins]
        assert code[converter.name] == sorted(code[converter.name])
        module = converter.module.replace(".", "/") + ".py"
        for must in ("stages/__init__.py", "stages/pipeline.py", "stages/preprocess.py", "stages/labels.py", module):
            assert must in listed, (converter.stage, must)
        assert "stages/cli.py" not in listed and "stages/__main__.py" not in listed
        # generating the pipeline is not staging: retuning the shards or `zoo index` restages nothing
        assert "stages/shards.py" not in listed and "stages/index.py" not in listed and "stages/repro.py" not in listed
        for kind in kinds().values():  # a kind's module (its parser and builder) is a dep of its converters only
            staged_by = {*kind.converters(), *(TARGET_CONVERTERS.get((f, t)) for f in kind.formats for t in kind.extra_targets)}
            assert (kind.__module__.replace(".", "/") + ".py" in listed) == (converter.name in staged_by), \
                (converter.stage, kind.__module__)
    others = {c.module.replace(".", "/") + ".py" for c in CONVERTERS.values()} - {"stages/convert/onnx_zoo.py"}
    assert not others & set(code["onnx_zoo"])  # an ONNX-zoo stage never reruns for a torch or TF change
    assert "stages/sources/torchvision.py" not in code["tensorflow"]  # nor a TF stage for a torch builder
    for stages in shards.values():
        assert "deps" not in stages["fetch"]["do"]  # by design: pins only, through its command and its params key
        assert stages["fetch"]["do"]["params"] == [{"registry/_pipeline/pins.json": ["${key}"]}]


def make_root(tmp_path: Path, card: str) -> Path:
    root = tmp_path / "root"
    (root / "registry/onnx").mkdir(parents=True)
    (root / "dvc.yaml").write_text((PROJECT / "dvc.yaml").read_text().split("\nartifacts:")[0])
    shutil.copytree(PROJECT / "stages", root / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "registry/onnx/mnist.yaml").write_text(card)
    index.write(root)
    return root


def zoo(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stages", "--root", str(root), *args], capture_output=True, text=True)


def test_zoo_check_fails_on_hand_edited_deps_until_zoo_index(tmp_path, demo_fixtures):
    root = make_root(tmp_path, demo_fixtures["mnist"].card)
    assert zoo(root, "check").returncode == 0
    shard = root / indexfile.read(root)["cards"]["mnist"]["dvcfile"]
    assert shard.relative_to(root).as_posix() == "registry/_pipeline/0000/dvc.yaml"  # one card: one shard
    text, root_text = shard.read_text(), (root / "dvc.yaml").read_text()
    hand = text.replace("        - stages/preprocess.py\n", "", 1).replace(
        "        - stages/pins/onnx.txt\n", "        - stages/pins/onnx.txt\n        - stages/cli.py\n", 1)
    assert hand.count("stages/cli.py") == 1 and "stages/preprocess.py" not in hand
    shard.write_text(hand)
    proc = zoo(root, "check")
    assert proc.returncode == 3
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("zoo: error: registry/_pipeline/0000/dvc.yaml's `stage-onnx-zoo` deps do not match the "
                           "code it runs (missing stages/preprocess.py; not run by it stages/cli.py)")
    assert line.endswith("run `zoo index` and commit the result")
    assert zoo(root, "index").returncode == 0
    assert shard.read_text() == text and (root / "dvc.yaml").read_text() == root_text  # regenerated; root kept
    assert zoo(root, "check").returncode == 0
    assert index.write(root) is False


def test_new_module_joins_the_deps_of_the_stages_importing_it(tmp_path, demo_fixtures):
    root = make_root(tmp_path, demo_fixtures["mnist"].card)
    (root / "stages/helper_for_onnx.py").write_text("X = 1\n")
    zoo_py = root / "stages/convert/onnx_zoo.py"
    zoo_py.write_text(zoo_py.read_text() + "\n\ndef _later():\n    from stages import helper_for_onnx\n")
    assert zoo(root, "check").returncode == 3
    assert index.write(root) is True
    (stages,) = shard_stages(root).values()
    assert "stage-onnx-zoo" in stages
    for converter in CONVERTERS.values():
        if converter.stage in stages:
            listed = stages[converter.stage]["do"]["deps"]
            assert ("stages/helper_for_onnx.py" in listed) == (converter.name == "onnx_zoo")
    assert {c: "stages/helper_for_onnx.py" in deps for c, deps in index.stage_deps(root).items()} == {
        c.stage: c.name == "onnx_zoo" for c in CONVERTERS.values()}  # the blocks of the converters no card uses yet


# --- end to end: real DVC decides what is stale from the deps `zoo index` wrote ------------------------------------


@pytest.fixture(scope="module")
def reg(tmp_path_factory, mirror_server, mirror_root, demo_fixtures):
    from tests.support.mirror import tf_fixtures, torch_fixtures

    tv = torch_fixtures.build_torch_mirror(mirror_root)["tv-squeezenet"].card
    tf = tf_fixtures.build_tf_mirror(mirror_root)["tfhub-tiny-classifier"].card
    if "targets:" not in tf:
        tf = tf.replace("source:\n", "targets: [tensorflow, onnx]\nsource:\n", 1)
    cards = {"onnx/mnist": demo_fixtures["mnist"].card, "onnx/squeezenet": demo_fixtures["squeezenet"].card,
             "onnx/tv-squeezenet": tv, "tensorflow/tfhub-tiny-classifier": tf}
    env = sandbox.env(mirror_server.url)
    repo = sandbox.new_registry(tmp_path_factory.mktemp("deps-e2e") / "registry", cards, env)
    sandbox.run(["dvc", "repro"], repo, env)
    sandbox.run(["git", "add", "-A"], repo, env)
    sandbox.run(["git", "commit", "-q", "-m", "stage"], repo, env)
    return {"repo": repo, "env": env}


STAGED = ["stage-onnx-zoo@mnist", "stage-onnx-zoo@squeezenet", "stage-tensorflow@tfhub-tiny-classifier",
          "stage-tf2onnx@tfhub-tiny-classifier", "stage-torch@tv-squeezenet"]


def stale_after_touching(reg, rel: str) -> list[str]:
    path = reg["repo"] / rel
    original = path.read_bytes()
    path.write_bytes(original + b"\n# touched by a test\n")
    try:
        status = json.loads(sandbox.run(["dvc", "status", "--json"], reg["repo"], reg["env"]).stdout)
        return sorted(map(sandbox.short, status))  # `registry/_pipeline/NNNN/dvc.yaml:stage@card` -> `stage@card`
    finally:
        path.write_bytes(original)


def importing(reg, rel: str) -> list[str]:
    """The staged stages whose computed closure holds `rel`."""
    code = index.code_deps(reg["repo"])
    by_stage = {c.stage: c.name for c in CONVERTERS.values()}
    return [s for s in STAGED if rel in code[by_stage[s.split("@")[0]]]]


def test_editing_preprocess_makes_every_converter_stage_stale(reg):
    assert stale_after_touching(reg, "stages/preprocess.py") == STAGED
    assert importing(reg, "stages/preprocess.py") == STAGED
    assert "up to date" in sandbox.run(["dvc", "status"], reg["repo"], reg["env"]).stdout


def test_editing_one_converter_makes_only_its_stages_stale(reg):
    onnx_zoo = ["stage-onnx-zoo@mnist", "stage-onnx-zoo@squeezenet"]
    assert stale_after_touching(reg, "stages/convert/onnx_zoo.py") == onnx_zoo
    assert importing(reg, "stages/convert/onnx_zoo.py") == onnx_zoo


def test_shared_modules_make_their_importers_stale_and_others_nothing(reg):
    for rel in ("stages/pipeline.py", "stages/labels.py", "stages/golden.py", "stages/convert/torch.py"):
        if (reg["repo"] / rel).exists():  # modules move: what matters is DVC agreeing with the closure
            assert stale_after_touching(reg, rel) == importing(reg, rel), rel
    unused = [p for p in ("stages/cli.py", "stages/diff.py", "stages/release.py") if not importing(reg, p)]
    assert "stages/cli.py" in unused and all(stale_after_touching(reg, p) == [] for p in unused)
