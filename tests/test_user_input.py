"""Bad bytes and other user input: one line `zoo: error: <what, where>; <fix>`, never a traceback.

Each test builds what a person could plausibly get wrong (a card saved as Latin-1, a key written
twice, a URL ending in `/`, a hand-edited manifest, a malformed ZOO_MIRROR or params.yaml) and runs
the real CLI in a subprocess, or the one function that reads that input.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stages import constants, manifest
from stages.card import load_card
from stages.errors import CardError, ConfigError, ManifestError, ZooError
from stages.pipeline import load_params
from stages.yamlio import load_yaml
from tests.conftest import PROJECT, leftovers, make_root

SHA = "a" * 64
COMMIT = "b" * 40
CARD = f"""name: resnet50
format: onnx
description: ResNet-50 v1
license: apache-2.0
tags: [vision, classification]
source:
  kind: onnx-zoo
  url: https://github.com/onnx/models/raw/{COMMIT}/resnet50-v1-7.onnx
  sha256: {SHA}
preprocessing: {{type: tensor, note: raw tensors}}
labels: imagenet-1k
"""
CARD_PATH = "registry/onnx/resnet50.yaml"
INTERNAL = "zoo: internal error: "


def zoo(root: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess, run from the registry root (PYTHONPATH: the root has a stages/ folder)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ZOO_")}
    clean["PYTHONPATH"] = str(PROJECT)
    return subprocess.run([sys.executable, "-m", "stages", *args], cwd=root, capture_output=True, text=True,
                          env=clean | (env or {}))


def one_line(proc: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    """The process failed with `code` and said so in exactly one `zoo: error:` line holding each fragment."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("zoo: error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    return lines[0]


@pytest.fixture
def root(tmp_path) -> Path:
    return make_root(tmp_path, {"onnx/resnet50": CARD})


def write_card(root: Path, data: bytes | str, rel: str = CARD_PATH) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


# 1. A card that is not UTF-8


def test_card_not_utf8_names_the_line_and_byte(root):
    text = CARD.replace("ResNet-50 v1", "ResNet-50 v1 (caf\u00e9)").encode("latin-1")
    write_card(root, text)
    offset = text.index(b"\xe9")
    proc = zoo(root, "check")
    one_line(proc, 3, f"{CARD_PATH}: line 3: not UTF-8 (byte 0xe9 at offset {offset})", "save the card as UTF-8")
    with pytest.raises(CardError, match="line 3: not UTF-8"):
        load_card(Path(CARD_PATH), root)


# 2. A duplicated key


@pytest.mark.parametrize("key,text,lines", [
    ("sha256", CARD.replace(f"  sha256: {SHA}\n", f"  sha256: {SHA}\n  sha256: {'c' * 64}\n"), (9, 10)),
    ("source", CARD + "source:\n  kind: onnx-zoo\n", (6, 12)),
])
def test_duplicated_key_names_the_key_and_both_lines(root, key, text, lines):
    write_card(root, text)
    proc = zoo(root, "check")
    one_line(proc, 3, f"{CARD_PATH}: line {lines[1]}: key {key!r} is written twice (lines {lines[0]} and {lines[1]})",
             "keep one of them")


def test_duplicate_detection_keeps_yaml_merge_keys_and_the_c_loader(tmp_path):
    """`<<: *base` then an override is YAML's merge, not a duplicate; the fast C loader is still used."""
    import yaml

    from stages import yamlio

    path = tmp_path / "x.yaml"
    path.write_text("base: &b {a: 1, b: 2}\nmerged:\n  <<: *b\n  b: 3\n")
    assert load_yaml(path) == {"base": {"a": 1, "b": 2}, "merged": {"a": 1, "b": 3}}
    if hasattr(yaml, "CSafeLoader"):
        assert issubclass(yamlio.unique_key_loader(), yaml.CSafeLoader)


# 3. Other tracebacks: a URL ending in '/', `zoo pin` on bad cards, manifests, env vars, params.yaml


@pytest.mark.parametrize("field,line,text", [
    ("source.url", 8, CARD.replace("resnet50-v1-7.onnx", "")),
    ("source.test_data.url", 11, CARD.replace(f"  sha256: {SHA}\n", f"  sha256: {SHA}\n  test_data:\n"
                                          f"    url: https://github.com/onnx/models/raw/{COMMIT}/data/\n"
                                          f"    sha256: {SHA}\n")),
])
def test_url_ending_in_slash_is_a_card_error(root, field, line, text):
    write_card(root, text)
    with pytest.raises(CardError, match=f"line {line}: {field}: .* does not end in a file name"):
        load_card(Path(CARD_PATH), root)
    one_line(zoo(root, "check"), 3, f"{CARD_PATH}: line {line}: {field}: ", "does not end in a file name",
             "give the URL of the file itself")


HUB = """name: hub
format: onnx
description: a hub model
license: mit
trust_code: true
source:
  kind: torchhub
  repo: noslash
  ref: main
  entrypoint: resnet18
"""
TV = """name: tv
format: onnx
description: a torchvision model
license: bsd-3-clause
source:
  kind: torchvision
  weights: IMAGENET1K_V1
"""
PIN_BAD = [
    ("torchhub repo without owner", "registry/onnx/hub.yaml", HUB,
     ("registry/onnx/hub.yaml: line 8: source.repo: 'noslash' is malformed", "write `repo: owner/name`")),
    ("torchvision without model", "registry/onnx/tv.yaml", TV,
     ("registry/onnx/tv.yaml: line 5: source.model: missing", "add `model:` to the card")),
    ("invalid yaml", "registry/onnx/tv.yaml", "name: [unclosed\n",
     ("registry/onnx/tv.yaml: line 2: not valid YAML", "fix the YAML syntax")),
    ("not utf-8", "registry/onnx/tv.yaml", TV.replace("a torchvision", "caf\u00e9").encode("latin-1"),
     ("registry/onnx/tv.yaml: line 3: not UTF-8", "save the card as UTF-8")),
    ("not a mapping", "registry/onnx/tv.yaml", "- name: tv\n- format: onnx\n",
     ("registry/onnx/tv.yaml: expected a mapping, got list", "write it as `key: value` lines")),
    ("source not a mapping", "registry/onnx/tv.yaml", TV.split("source:")[0] + "source: torchvision\n",
     ("registry/onnx/tv.yaml: line 5: source: expected a mapping, got str", "write it as `key: value` lines")),
    ("duplicated key", "registry/onnx/tv.yaml", TV + "  weights: DEFAULT\n",
     ("registry/onnx/tv.yaml: line 8: key 'weights' is written twice (lines 7 and 8)", "keep one of them")),
    ("no such card", "registry/onnx/nothing.yaml", None,
     ("registry/onnx/nothing.yaml: no such card", "check the path")),
]


@pytest.mark.parametrize("label,rel,text,expected", PIN_BAD, ids=[p[0] for p in PIN_BAD])
def test_pin_refuses_a_bad_card_in_one_line(tmp_path, label, rel, text, expected):
    """`zoo pin` reads cards that do not validate yet (no sha256, branches), but still refuses bad ones first."""
    if text is not None:
        write_card(tmp_path, text, rel)
    before = (tmp_path / rel).read_bytes() if text is not None else None
    one_line(zoo(tmp_path, "pin", rel), 3, *expected)
    if before is not None:
        assert (tmp_path / rel).read_bytes() == before  # nothing rewritten


def staged(root: Path, text: str | bytes, name: str = "m") -> Path:
    folder = root / "registry/onnx" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(b"")
    path = folder.with_name(f"{name}.manifest.json")
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return folder


MANIFEST_BAD = [
    ("corrupt", '{"format": "onnx",', "not valid JSON (line 1, column 19"),
    ("not utf-8", b'{"format": "onnx\xff"}', "not UTF-8 (byte 0xff at offset 16)"),
    ("not an object", "[1, 2]", "expected a JSON object, got list"),
    ("no format", '{"name": "m"}', "has no `format`"),
]


@pytest.mark.parametrize("label,text,problem", MANIFEST_BAD, ids=[m[0] for m in MANIFEST_BAD])
@pytest.mark.parametrize("command", ["run", "verify"])
def test_bad_manifest_is_one_line_naming_it(tmp_path, label, text, problem, command):
    folder = staged(tmp_path, text)
    args = ["registry/onnx/m", "x.png"] if command == "run" else ["registry/onnx/m"]
    path = f"{tmp_path / 'registry/onnx/m.manifest.json'}"
    one_line(zoo(tmp_path, command, *args), 3, f"{path}: {problem}", f"git checkout -- {path}", "dvc repro")
    with pytest.raises(ManifestError, match="git checkout"):
        manifest.read(folder)


@pytest.mark.parametrize("command", ["run", "verify"])
def test_missing_manifest_is_one_line(tmp_path, command):
    """No manifest at all: the folder given is not a staged model, a usage error (ModelNotFound, exit 2)."""
    args = ["registry/onnx/nothing", "x.png"] if command == "run" else ["registry/onnx/nothing"]
    one_line(zoo(tmp_path, command, *args), 2, "registry/onnx/nothing.manifest.json: no manifest",
             "give a staged model folder, registry/<format>/<name>")


def test_manifest_read_takes_the_folder_or_the_manifest(tmp_path):
    folder = staged(tmp_path, json.dumps({"format": "onnx", "name": "m"}))
    assert manifest.read(folder) == manifest.read(folder.with_name("m.manifest.json")) == {"format": "onnx", "name": "m"}


@pytest.mark.parametrize("name,value,problem", [
    ("ZOO_MIRROR", "ftp://proxy", "ZOO_MIRROR='ftp://proxy' is not an http(s) base URL"),
    ("ZOO_CONNECT_TIMEOUT", "ten", "ZOO_CONNECT_TIMEOUT='ten' is not a number"),
    ("ZOO_READ_TIMEOUT", "0", "ZOO_READ_TIMEOUT='0' must be above 0"),
    ("ZOO_READ_TIMEOUT", "nan", "ZOO_READ_TIMEOUT='nan' is not a number"),
    ("ZOO_HTTP_RETRIES", "2.5", "ZOO_HTTP_RETRIES='2.5' is not a whole number"),
    ("ZOO_HTTP_RETRIES", "-1", "ZOO_HTTP_RETRIES='-1' must be at least 0"),
    ("ZOO_RETRY_BACKOFF", "inf", "ZOO_RETRY_BACKOFF='inf' is not a number"),
    ("ZOO_PROGRESS", "maybe", "ZOO_PROGRESS='maybe' is not 1 or 0"),
])
def test_malformed_env_var_is_a_config_error(root, monkeypatch, name, value, problem):
    monkeypatch.setenv(name, value)
    read = {"ZOO_MIRROR": constants.mirror, "ZOO_CONNECT_TIMEOUT": constants.http_timeout,
            "ZOO_READ_TIMEOUT": constants.http_timeout, "ZOO_HTTP_RETRIES": constants.http_retries,
            "ZOO_RETRY_BACKOFF": constants.retry_backoff, "ZOO_PROGRESS": constants.progress}[name]
    with pytest.raises(ConfigError) as info:
        read()
    assert problem in str(info.value) and "unset it" in str(info.value)
    assert info.value.exit_code == 3 and isinstance(info.value, ValueError)
    # through the CLI: `zoo fetch` reads them all before it opens a connection
    one_line(zoo(root, "fetch", CARD_PATH, env={name: value}), 3, problem, "unset it")
    assert not (root / "registry/_raw/resnet50").exists() and leftovers(root) == []


def test_zoo_root_that_is_not_a_folder(tmp_path):
    one_line(zoo(tmp_path, "check", env={"ZOO_ROOT": str(tmp_path / "nowhere")}), 3,
             f"{tmp_path / 'nowhere'}: the registry root is not a folder", "ZOO_ROOT")


PARAMS_BAD = [
    ("invalid yaml", lambda t: t + "onnx: [unclosed\n", "params.yaml: line ", "not valid YAML"),
    ("not utf-8", lambda t: t.replace("# Converter", "# Caf\xe9"), "params.yaml: line 1: not UTF-8", "save params.yaml as UTF-8"),
    ("not a mapping", lambda t: "- onnx\n- torch\n", "params.yaml: expected a mapping, got list", "key: value"),
    ("section not a mapping", lambda t: t.replace("onnx:\n  atol", "onnx: 5\nold:\n  atol"),
     "params.yaml: onnx: expected a mapping, got int", "restore"),
    ("missing key", lambda t: t.replace("  batch_sizes: [1, 2]   # values", "  # values"),
     "params.yaml: onnx.batch_sizes: missing", "add `batch_sizes:` to the `onnx:` section"),
    ("wrong type", lambda t: t.replace("  batch_sizes: [1, 2]   # values", "  batch_sizes: two   # values"),
     "params.yaml: onnx.batch_sizes: expected a non-empty list of positive integers, got 'two'", "write e.g."),
    ("bad number", lambda t: t.replace("onnx:\n  atol: 1.0e-4", "onnx:\n  atol: small"),
     "params.yaml: onnx.atol: expected a non-negative number, got 'small'", "write e.g."),
    ("bad exporter", lambda t: t.replace("exporter: dynamo", "exporter: onnxscript"),
     "params.yaml: torch.exporter: expected one of dynamo, torchscript, got 'onnxscript'", "write e.g."),
    ("duplicated key", lambda t: t.replace("  threads: 1            # ONNX", "  threads: 1\n  threads: 2  # ONNX"),
     "params.yaml: line ", "key 'threads' is written twice"),
    ("missing", None, "params.yaml: no such file", "git checkout -- params.yaml"),
]


@pytest.mark.parametrize("label,edit,where,fix", PARAMS_BAD, ids=[p[0] for p in PARAMS_BAD])
def test_malformed_params_yaml_is_one_line(root, label, edit, where, fix):
    params = root / "params.yaml"
    if edit is None:
        params.unlink()
    else:
        original = params.read_text()
        edited = edit(original)
        assert edited != original, "the edit must change params.yaml"
        params.write_bytes(edited.encode("latin-1") if label == "not utf-8" else edited.encode())
    with pytest.raises(ConfigError) as info:
        load_params(root)
    assert where in str(info.value) and fix in str(info.value)
    one_line(zoo(root, "stage", CARD_PATH), 3, where, fix)
    assert not (root / "registry/onnx/resnet50").exists()


def test_params_yaml_of_the_repository_is_valid():
    params = load_params(PROJECT)
    assert params["onnx"]["batch_sizes"] == [1, 2]


# 4. The safety net: a bug is one line with exit 70, its traceback only with -v; usage errors stay 2


def test_a_bug_is_one_line_exit_70_and_its_traceback_with_v(monkeypatch, capsys, tmp_path):
    from stages import cli

    def broken(args):
        raise KeyError("surprise\nsecond line")

    monkeypatch.setattr(cli, "_cmd_index", broken)
    assert cli.main(["--root", str(tmp_path), "index"]) == 70
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        f"{INTERNAL}KeyError: 'surprise\\nsecond line' (a registry bug; rerun with -v to see the traceback, "
        "and report it)"]
    with pytest.raises(KeyError, match="surprise"):
        cli.main(["-v", "--root", str(tmp_path), "index"])


def test_a_bug_through_the_real_cli_prints_no_traceback(tmp_path):
    code = ("import sys, stages.cli as cli\n"
            "def broken(args): raise RuntimeError('boom')\n"
            "cli._cmd_index = broken\n"
            "sys.exit(cli.main(sys.argv[1:]))\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ZOO_")}
    proc = subprocess.run([sys.executable, "-c", code, "index"], cwd=tmp_path, capture_output=True, text=True,
                          env=clean | {"PYTHONPATH": str(PROJECT)})
    assert proc.returncode == 70 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"{INTERNAL}RuntimeError: boom (a registry bug; rerun with -v to "
                                                "see the traceback, and report it)"]
    proc = subprocess.run([sys.executable, "-c", code, "-v", "index"], cwd=tmp_path, capture_output=True, text=True,
                          env=clean | {"PYTHONPATH": str(PROJECT)})
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "RuntimeError: boom" in proc.stderr


def test_a_zoo_error_spanning_lines_is_still_printed_on_one_line(monkeypatch, capsys, tmp_path):
    from stages import cli

    def failing(args):
        raise ZooError("upstream said:\n  404 Not Found", fix="check the URL")

    monkeypatch.setattr(cli, "_cmd_index", failing)
    assert cli.main(["--root", str(tmp_path), "index"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "zoo: error: upstream said: 404 Not Found; check the URL"]


@pytest.mark.parametrize("argv", [["nosuchcommand"], ["run"], ["run", "registry/onnx/m", "x", "--top-k", "many"]])
def test_usage_errors_keep_exit_2(tmp_path, argv):
    proc = zoo(tmp_path, *argv)
    assert proc.returncode == 2 and "usage: zoo" in proc.stderr and "Traceback" not in proc.stderr


# 5. Every bad input above through the real CLI: none prints a traceback, none is an internal error


def _not_utf8(root):
    write_card(root, CARD.replace("ResNet-50", "R\u00e9sNet").encode("latin-1"))


def _dup_sha(root):
    write_card(root, CARD.replace(f"  sha256: {SHA}\n", f"  sha256: {SHA}\n  sha256: {SHA}\n"))


def _slash_url(root):
    write_card(root, CARD.replace("resnet50-v1-7.onnx", ""))


def _hub(root):
    write_card(root, HUB, "registry/onnx/hub.yaml")


def _tv(root):
    write_card(root, TV, "registry/onnx/tv.yaml")


def _bad_manifest(root):
    staged(root, "{")


def _bad_params(root):
    (root / "params.yaml").write_text("onnx: [\n")


def _params_list(root):
    (root / "params.yaml").write_text("- 1\n")


def _nothing(root):
    pass


def _no_dvc_yaml(root):
    (root / "dvc.yaml").unlink()


BAD_INPUTS = [
    ("check: card not utf-8", _not_utf8, ["check"], {}, 3),
    ("check: duplicated sha256", _dup_sha, ["check"], {}, 3),
    ("check: url ending in /", _slash_url, ["check"], {}, 3),
    ("fetch: card not utf-8", _not_utf8, ["fetch", CARD_PATH], {}, 3),
    ("stage: duplicated sha256", _dup_sha, ["stage", CARD_PATH], {}, 3),
    ("pin: repo without owner", _hub, ["pin", "registry/onnx/hub.yaml"], {}, 3),
    ("pin: torchvision without model", _tv, ["pin", "registry/onnx/tv.yaml"], {}, 3),
    ("pin: no such card", _nothing, ["pin", "registry/onnx/nothing.yaml"], {}, 3),
    ("pin: card not utf-8", _not_utf8, ["pin", CARD_PATH], {}, 3),
    ("fetch: no such card", _nothing, ["fetch", "registry/onnx/nothing.yaml"], {}, 3),
    ("run: corrupt manifest", _bad_manifest, ["run", "registry/onnx/m", "x.png"], {}, 3),
    ("verify: corrupt manifest", _bad_manifest, ["verify", "registry/onnx/m"], {}, 3),
    ("run: no manifest", _nothing, ["run", "registry/onnx/nothing", "x.png"], {}, 2),
    ("fetch: bad ZOO_MIRROR", _nothing, ["fetch", CARD_PATH], {"ZOO_MIRROR": "proxy:8080"}, 3),
    ("fetch: bad ZOO_HTTP_RETRIES", _nothing, ["fetch", CARD_PATH], {"ZOO_HTTP_RETRIES": "lots"}, 3),
    ("fetch: bad ZOO_CONNECT_TIMEOUT", _nothing, ["fetch", CARD_PATH], {"ZOO_CONNECT_TIMEOUT": "-3"}, 3),
    ("stage: params.yaml not yaml", _bad_params, ["stage", CARD_PATH], {}, 3),
    ("stage: params.yaml a list", _params_list, ["stage", CARD_PATH], {}, 3),
    ("check: ZOO_ROOT not a folder", _nothing, ["check"], {"ZOO_ROOT": "/nonexistent/zoo"}, 3),
    ("index: no dvc.yaml", _no_dvc_yaml, ["index"], {}, 3),
    ("stage: a target the card does not have", _nothing, ["stage", CARD_PATH, "--target", "bogus"], {}, 5),
]


@pytest.mark.parametrize("label,setup,argv,env,code", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_no_bad_input_prints_a_traceback(root, label, setup, argv, env, code):
    setup(root)
    proc = zoo(root, *argv, env=env)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert INTERNAL not in proc.stderr, proc.stderr  # a user's mistake is not a registry bug
    one_line(proc, code)
