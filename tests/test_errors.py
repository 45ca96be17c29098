"""Errors in one place (stages/errors.py), one exit code per family, and `zoo` returning it.

Every ZooError subclass defined anywhere in `stages` is defined in stages.errors; the family codes
(stages.errors.ExitCode) are distinct and each class takes its family's; and the real CLI, in a
subprocess, exits with the right code for an error of each family that is cheap to produce.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import socket
import subprocess

import pytest

import stages
from stages import errors
from stages.errors import ExitCode, ZooError
from tests.conftest import make_root
from tests.test_user_input import CARD, CARD_PATH, one_line, staged, write_card, zoo

FAMILIES = {
    ExitCode.OTHER: {"ZooError"},
    ExitCode.USAGE: {"ModelNotFound", "RunError"},
    ExitCode.CARD: {"CardError", "ConfigError", "IndexStaleError", "ManifestError"},
    ExitCode.FETCH: {"FetchError", "HTTPStatusError", "HashMismatchError", "NotAModelError", "TruncatedError",
                     "UnsafeArchiveError"},
    ExitCode.STAGING: {"StagingError", "VersionMismatchError"},
    ExitCode.VALIDATION: {"ParityError", "VerifyError"},
    ExitCode.RELEASE: {"ReleaseRefused", "GitError"},
    ExitCode.INTEGRITY: {"IntegrityError", "CorruptObject"},
    ExitCode.NO_SPACE: {"DiskFullError"},
}


def _stages_modules() -> list[str]:
    """Every module of the `stages` package, imported (subpackages too), but `__main__`."""
    names, todo = [], [stages.__path__]
    prefixes = ["stages."]
    while todo:
        path, prefix = todo.pop(), prefixes.pop()
        for info in pkgutil.iter_modules(path, prefix):
            if info.name.rsplit(".", 1)[-1] == "__main__":
                continue
            module = importlib.import_module(info.name)
            names.append(info.name)
            if info.ispkg:
                todo.append(module.__path__)
                prefixes.append(info.name + ".")
    return names


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def test_every_zoo_error_lives_in_stages_errors():
    modules = _stages_modules()
    assert {"stages.cli", "stages.gitio", "stages.release", "stages.preprocess", "stages.api"} <= set(modules)
    outside = sorted(f"{cls.__module__}.{cls.__qualname__}" for cls in _subclasses(ZooError)
                     if cls.__module__.split(".")[0] == "stages" and cls.__module__ != "stages.errors")
    assert outside == [], "define these in stages/errors.py"
    # the module-level names too (a class re-exported under another name would not be a new subclass)
    for name in modules:
        for attr, value in vars(importlib.import_module(name)).items():
            if isinstance(value, type) and issubclass(value, ZooError):
                assert value.__module__ == "stages.errors", (name, attr)


def test_the_moved_classes_are_still_importable_from_their_old_modules():
    from stages.api import ModelNotFound
    from stages.gitio import GitError
    from stages.preprocess import RunError
    from stages.release import ReleaseRefused

    assert (ModelNotFound, GitError, RunError, ReleaseRefused) == (
        errors.ModelNotFound, errors.GitError, errors.RunError, errors.ReleaseRefused)
    assert issubclass(errors.ModelNotFound, LookupError)


def test_family_codes_are_distinct_and_each_class_takes_its_familys():
    codes = [member.value for member in ExitCode]
    assert len(codes) == len(set(codes)) == len(ExitCode.__members__)  # no alias: every family its own code
    assert ExitCode.USAGE == 2  # what argparse exits with for a bad command line
    assert ExitCode.INTERNAL == 70 and ExitCode.INTERNAL not in FAMILIES
    declared = {cls.__name__: cls for cls in (ZooError, *_subclasses(ZooError)) if cls.__module__ == "stages.errors"}
    assert sorted(declared) == sorted(name for names in FAMILIES.values() for name in names)
    for code, names in FAMILIES.items():
        for name in names:
            assert declared[name].exit_code == code and isinstance(declared[name].exit_code, ExitCode), name


# The real CLI: one error of each family that is cheap to produce.


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _git_init(root):
    subprocess.run(["git", "init", "-q", str(root)], check=True, capture_output=True)


def _manifest_only(root):
    """A manifest with no staged files beside it (not pulled): `zoo verify` has nothing to run."""
    path = root / "registry/onnx/m.manifest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"format": "onnx", "name": "m"}))


CASES = [
    # usage (2)
    ("usage: unknown option", None, ["check", "--no-such-option"], {}, ExitCode.USAGE, "unrecognized arguments"),
    ("usage: unknown model for run", None, ["run", "registry/onnx/nothing", "x.png"], {}, ExitCode.USAGE,
     "no manifest"),
    ("usage: unknown model for verify", None, ["verify", "registry/onnx/nothing"], {}, ExitCode.USAGE, "no manifest"),
    ("usage: unknown model for remove", None, ["remove", "nothing"], {}, ExitCode.USAGE, "no model named 'nothing'"),
    ("usage: unknown model for upstream", None, ["upstream", "nothing"], {}, ExitCode.USAGE,
     "no card named 'nothing'"),
    ("usage: run on a model that is not onnx", lambda r: staged(r, json.dumps({"format": "keras"})),
     ["run", "registry/onnx/m", "x.png"], {}, ExitCode.USAGE, "zoo run takes ONNX models"),
    # card (3)
    ("card: malformed card", lambda r: write_card(r, CARD.replace("name: resnet50", "name: Not A Name")), ["check"],
     {}, ExitCode.CARD, CARD_PATH),
    ("card: corrupt manifest", lambda r: staged(r, "{"), ["verify", "registry/onnx/m"], {}, ExitCode.CARD,
     "not valid JSON"),
    ("card: malformed ZOO_* variable", None, ["fetch", CARD_PATH], {"ZOO_HTTP_RETRIES": "lots"}, ExitCode.CARD,
     "ZOO_HTTP_RETRIES"),
    ("card: stale index", lambda r: (r / "registry/index.json").write_text("{}\n"), ["check"], {}, ExitCode.CARD,
     "registry/index.json does not match the cards"),
    # fetch (4)
    ("fetch: upstream unreachable", None, ["fetch", CARD_PATH],
     {"ZOO_MIRROR": f"http://127.0.0.1:{_closed_port()}", "ZOO_HTTP_RETRIES": "0", "ZOO_PROGRESS": "0"},
     ExitCode.FETCH, "connection failed"),
    # staging (5)
    ("staging: raw files missing", None, ["stage", CARD_PATH], {}, ExitCode.STAGING, "raw files of resnet50"),
    # validation (6)
    ("validation: staged files not here", _manifest_only, ["verify", "registry/onnx/m"], {}, ExitCode.VALIDATION,
     "the staged files are not here"),
    # release (7)
    ("release: gc unconfirmed", None, ["gc"], {}, ExitCode.RELEASE, "rerun with --yes"),
    ("release: not a semantic version", None, ["release", "1.0"], {}, ExitCode.RELEASE, "not a semantic version"),
    ("release: unknown revision", _git_init, ["diff", "no-such-rev"], {}, ExitCode.RELEASE, "check the revision"),
]


@pytest.mark.parametrize("label,setup,argv,env,code,fragment", CASES, ids=[c[0] for c in CASES])
def test_zoo_exits_with_the_family_code(tmp_path, label, setup, argv, env, code, fragment):
    root = make_root(tmp_path, {"onnx/resnet50": CARD})
    if setup is not None:
        setup(root)
    proc = zoo(root, *argv, env=env)
    if code == ExitCode.USAGE and label == "usage: unknown option":  # argparse: usage line, then the error
        assert proc.returncode == code and "usage: zoo" in proc.stderr and fragment in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
        return
    one_line(proc, int(code), fragment)
