"""Security cases, each recorded in the campaign ledger (tests/support/campaign.py).

Credentials: DVC writes a remote's secrets into .dvc/config, which git tracks, unless told `--local`;
`zoo check` (CI, `make test`) refuses that, and a tracked or unignored .dvc/config.local.
Injection: DVC runs a stage's `cmd:` through a shell after pasting in `${key}` and `${item.*}`, which
`zoo index` takes from the cards (name, file name, format, targets); dvc.yaml's `artifacts:` (the
description and tags) is interpolated too. Every hostile value is refused in one line naming the file
and field, no shard is written and nothing runs; a valid registry's commands split into exactly the
expected words. Untrusted bytes: the archive, pickle and third-party-code refusals, once each.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import tarfile
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from stages import cli, index, shards
from stages.check import SECRET_OPTIONS, check_credentials
from stages.convert import CONVERTERS
from stages.errors import CardError, ConfigError, StagingError, UnsafeArchiveError
from tests.conftest import make_root
from tests.support import campaign, sandbox
from tests.test_archives import link, make_tar, make_zip
from tests.test_shards import card

PROJECT = Path(__file__).resolve().parent.parent
HOSTILE = ("x; touch pwned", "$(touch pwned)", "`touch pwned`", "a b", "../../etc/passwd", "x\ntouch pwned",
           "x|y", "-rf")
SECRETS = {"access_key_id": "AKIA" + "Q" * 16, "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"}


def zoo(repo: Path, *args: str) -> tuple[int, list[str], str]:
    """The real CLI in a subprocess: exit code, stderr lines, stdout."""
    proc = sandbox.run([sys.executable, "-m", "stages", *args], repo, sandbox.env(), check=False)
    return proc.returncode, proc.stderr.strip().splitlines(), proc.stdout


def dvc(repo: Path, *args: str) -> None:
    sandbox.run([sys.executable, "-m", "dvc", *args], repo, sandbox.env())


def _refusal(root: Path) -> str:
    """check_credentials' error message ('' when it passes)."""
    try:
        check_credentials(root)
    except ConfigError as exc:
        return str(exc)
    return ""


def pwned(root: Path) -> list[Path]:
    """What a hostile command would have created: `touch pwned` runs in the stage's wdir, the root."""
    return [p for p in (PROJECT / "pwned", *root.rglob("pwned")) if p.exists()]


# ----------------------------------------------------------------------------- credentials


def test_dvc_schema_secret_options_are_all_refused():
    """DVC's config schema is the list of options; a new credential option in a DVC upgrade fails here."""
    from dvc.config_schema import REMOTE_SCHEMAS, SCHEMA

    not_secret = {"sse_kms_key_id", "keyfile", "key_path", "bearer_token_command", "ask_password", "ask_passphrase",
                  "exclude_shared_token_cache_credential"}
    options = {k for schema in (*REMOTE_SCHEMAS.values(), SCHEMA["studio"], SCHEMA["db"][str])
               for k in schema if isinstance(k, str)}
    assert {k for k in options if re.search("password|passphrase|secret|token|key|connection_string", k)} \
        - not_secret == SECRET_OPTIONS


@pytest.mark.parametrize("section,key", [*(('remote "zoo"', k) for k in sorted(SECRET_OPTIONS)),
                                         ("studio", "token"), ('db "warehouse"', "password"),
                                         ('remote "web"', "url"), ('remote "zoo"', "endpointurl")])
def test_secret_in_dvc_config_is_one_line_never_showing_it(tmp_path, section, key):
    value = "https://ci:hunter2-pw@example.com/dvc" if "url" in key else "hunter2-" + "z" * 24
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text(f"[core]\n    remote = zoo\n['{section}']\n    url = s3://b/dvc\n"
                                              f"    {key} = {value}\n")
    with pytest.raises(ConfigError) as info:
        check_credentials(tmp_path)
    message = str(info.value)
    refused = (f".dvc/config: line 5: [{section}] {key}: " in message and "hunter2" not in message
               and "\n" not in message and ".dvc/config.local" in message and "rotate" in message)
    campaign.record("security: credential in git-tracked .dvc/config", f"[{section}] {key} written in .dvc/config",
                    1, refused, test="test_secret_in_dvc_config_is_one_line_never_showing_it")
    assert refused, message


def test_credentials_set_without_local_fail_zoo_check_and_with_local_pass(tmp_path):
    """The real DVC and zoo CLIs: `dvc remote modify` writes the committed config (refused); with
    `--local` (the fix the message gives) `zoo check` passes and git has nothing new to track."""
    repo = sandbox.new_registry(tmp_path / "registry", {}, sandbox.env())
    for key, value in SECRETS.items():
        dvc(repo, "remote", "modify", "zoo", key, value)
    code, errors, out = zoo(repo, "check")
    refused = (code == 3 and len(errors) == 1 and errors[0].startswith("zoo: error: .dvc/config: line ")
               and '[remote "zoo"] access_key_id: a credential in a file git tracks' in errors[0]
               and "dvc remote modify --local zoo access_key_id ..." in errors[0] and "AWS_ACCESS_KEY_ID" in errors[0]
               and not any(v in "".join(errors) + out for v in SECRETS.values()))
    campaign.record("security: credential in git-tracked .dvc/config", "dvc remote modify zoo <S3 keys> (no --local)",
                    len(SECRETS), refused, test="test_credentials_set_without_local_fail_zoo_check_and_with_local_pass")
    assert refused, (code, errors)
    sandbox.run(["git", "checkout", "--", ".dvc/config"], repo, sandbox.env())
    for key, value in SECRETS.items():
        dvc(repo, "remote", "modify", "--local", "zoo", key, value)
    code, errors, out = zoo(repo, "check")
    assert code == 0 and "cards ok" in out, errors
    assert sandbox.run(["git", "status", "--porcelain"], repo, sandbox.env()).stdout == ""
    assert SECRETS["access_key_id"] in (repo / ".dvc" / "config.local").read_text()


def test_sandbox_configure_remote_writes_config_local_only(tmp_path):
    """The registry's own tests point DVC at their S3 server through this; the committed config never changes."""
    repo = sandbox.new_registry(tmp_path / "registry", {}, sandbox.env())
    committed = (repo / ".dvc" / "config").read_bytes()
    sandbox.configure_remote(repo, SimpleNamespace(endpoint="http://127.0.0.1:9", bucket=sandbox.BUCKET), sandbox.env())
    assert (repo / ".dvc" / "config").read_bytes() == committed
    assert "endpointurl = http://127.0.0.1:9" in (repo / ".dvc" / "config.local").read_text()
    assert sandbox.run(["git", "status", "--porcelain"], repo, sandbox.env()).stdout == "" and _refusal(repo) == ""

    sandbox.run(["git", "add", "-f", ".dvc/config.local"], repo, sandbox.env())
    tracked = _refusal(repo)
    sandbox.run(["git", "rm", "-q", "--cached", ".dvc/config.local"], repo, sandbox.env())
    (repo / ".dvc" / ".gitignore").write_text("/tmp\n/cache\n")
    unignored = _refusal(repo)
    refused = (tracked.startswith(".dvc/config.local is tracked by git: ") and "`git rm --cached .dvc/config.local`"
               in tracked and unignored.startswith(".dvc/config.local is not ignored by git: "))
    campaign.record("security: credential in git-tracked .dvc/config", ".dvc/config.local tracked, then not ignored",
                    2, refused, test="test_sandbox_configure_remote_writes_config_local_only")
    assert refused, (tracked, unignored)


# ----------------------------------------------------------------------------- injection through card values

def _cases() -> list[tuple[str, str]]:
    out = []
    for value in HOSTILE:
        out += [("name", value), ("format", value), ("targets", value)]
        if "/" not in value:  # a file or folder name cannot hold one
            out += [("file name", value), ("format folder", value)]
    return out + [("description", "uses ${nope}"), ("description", "tolerance ${onnx.atol}"),
                  ("tags", "${item.card}")]


def _hostile_card(place: str, value: str) -> tuple[str, str, str]:
    """(path under the root, card text, the field the error must name) for `value` at `place`."""
    quoted, text = json.dumps(value), card("evil")
    if place == "file name":
        return f"registry/onnx/{value}.yaml", text.replace("name: evil", f"name: {quoted}"), "name"
    if place == "format folder":
        return f"registry/{value}/evil.yaml", text, "format"
    if place == "name":
        return "registry/onnx/evil.yaml", text.replace("name: evil", f"name: {quoted}"), "name"
    if place == "format":
        return "registry/onnx/evil.yaml", text.replace("format: onnx", f"format: {quoted}"), "format"
    if place == "targets":
        return "registry/onnx/evil.yaml", text + f"targets: [onnx, {quoted}]\n", "targets"
    if place == "description":
        return "registry/onnx/evil.yaml", text.replace("description: test model evil", f"description: {quoted}"), place
    return "registry/onnx/evil.yaml", text.replace("tags: [vision, classification]", f"tags: [vision, {quoted}]"), \
        "tags[1]"


def _generated(root: Path) -> dict[str, bytes]:
    """Every file `zoo index` writes, by path."""
    files = [root / "dvc.yaml", root / index.INDEX, root / index.CARD_SCHEMA, *(root / "registry/_pipeline").rglob("*")]
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in files if p.is_file()}


@pytest.fixture(scope="module")
def bare_root(tmp_path_factory) -> Path:
    return make_root(tmp_path_factory.mktemp("injection"), {"onnx/mnist": card("mnist")})


@pytest.mark.parametrize("place,value", _cases(), ids=lambda v: repr(v)[1:-1][:24])
def test_hostile_card_value_is_refused_and_no_shard_written(bare_root, capsys, place, value):
    rel, text, field = _hostile_card(place, value)
    before = _generated(bare_root)
    path = bare_root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    try:
        checked = cli.main(["--root", str(bare_root), "check"])
        errors = capsys.readouterr().err.strip().splitlines()
        indexed = cli.main(["--root", str(bare_root), "index"])
        capsys.readouterr()
        after = _generated(bare_root)
    finally:
        path.unlink()
        if place == "format folder":
            path.parent.rmdir()
    shown = index.shown_path(Path(rel))
    named = len(errors) == 1 and re.match(rf"zoo: error: {re.escape(shown)}: (line \d+: )?{re.escape(field)}: ",
                                          errors[0]) is not None
    untouched = after == before and (indexed == 3 or place == "format folder")  # a stray folder is not read
    refused = checked == 3 and named and untouched and not pwned(bare_root)
    campaign.record("security: shell injection through card values", f"{place} = {value!r}", 1, refused,
                    test="test_hostile_card_value_is_refused_and_no_shard_written")
    assert refused, (checked, indexed, errors, after == before)


def test_hostile_cards_in_a_real_registry_run_nothing(tmp_path):
    """Through the real CLIs in a git+DVC registry: `zoo index` and `zoo check` refuse, no shard is
    written, `dvc repro` runs nothing, no `pwned` appears, git sees only the new cards."""
    repo = sandbox.new_registry(tmp_path / "registry", {}, sandbox.env())
    hostile = [c for c in _cases() if c[0] in ("file name", "targets")]
    for number, (place, value) in enumerate(hostile):
        rel, text, _ = _hostile_card(place, value)
        if place == "targets":  # one card each: t0.yaml, t1.yaml...
            rel, text = f"registry/onnx/t{number}.yaml", text.replace("name: evil", f"name: t{number}")
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    indexed, index_errors, _ = zoo(repo, "index")
    checked, check_errors, _ = zoo(repo, "check")
    repro = sandbox.run([sys.executable, "-m", "dvc", "repro"], repo, sandbox.env(), check=False)
    status = sandbox.run(["git", "status", "--porcelain", "-uall"], repo, sandbox.env()).stdout.splitlines()
    refused = (indexed == checked == 3 and len(index_errors) == len(check_errors) == 1
               and repro.returncode == 0 and "Running stage" not in repro.stdout
               and not list((repo / "registry/_pipeline").glob("*/dvc.yaml"))
               and all(line.startswith("?? ") for line in status) and not pwned(tmp_path))
    campaign.record("security: shell injection through card values", "hostile cards, zoo index + check + dvc repro",
                    len(hostile), refused, test="test_hostile_cards_in_a_real_registry_run_nothing")
    assert refused, (index_errors, check_errors, repro.stdout, repro.stderr, status)


def test_shard_rendering_refuses_what_is_not_a_plain_word():
    """The last guard: were a card check to let a value through, rendering a shard refuses it."""
    built = index.build([])
    built["cards"]["x; touch pwned"] = {"card": "registry/onnx/x; touch pwned.yaml", "dvcfile": shards.dvcfile("x", 1),
                                        "pins": "0" * 16}
    with pytest.raises(CardError, match=r"^registry/onnx/x; touch pwned\.yaml: name: 'x; touch pwned' would reach "):
        shards.render(built, index.stage_deps(PROJECT))


def test_every_rendered_command_splits_into_the_expected_words(tmp_path):
    """The registry's own cards, rendered and resolved by DVC itself: each stage's command, split as
    a shell would, is exactly the words the template and the card give (no metacharacter from a card)."""
    from dvc.repo import Repo

    cards = {f"{p.parent.name}/{p.stem}": p.read_text() for p in sorted(PROJECT.glob("registry/*/*.yaml"))}
    root = make_root(tmp_path, cards)
    Repo.init(os.fspath(root), no_scm=True)
    entries = json.loads((root / index.INDEX).read_text())
    with Repo(os.fspath(root)) as repo:
        commands = {stage.name: stage.cmd for stage in repo.index.stages}
    expected = {}
    for name, entry in entries["cards"].items():
        expected[f"{shards.FETCH}@{name}"] = ["python", "-m", "stages", "fetch", entry["card"], "--pins", entry["pins"]]
    for converter, items in entries["converters"].items():
        target = CONVERTERS[converter].target
        for name, item in items.items():
            expected[f"{CONVERTERS[converter].stage}@{name}"] = ["python", "-m", "stages", "stage", item["card"],
                                                               *(["--target", target] if target else [])]
    assert {c.stage for c in CONVERTERS.values()} <= {k.partition("@")[0] for k in expected}  # every template
    assert {name: shlex.split(cmd) for name, cmd in commands.items()} == expected
    assert all(shlex.quote(word) == word for cmd in commands.values() for word in shlex.split(cmd))


# ----------------------------------------------------------------------------- untrusted bytes

class _RunsCode:
    """A pickle that runs a shell command when loaded without weights_only."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def _zip(tmp: Path, entries: list[tuple[str, bytes]], symlink: str | None = None) -> None:
    from stages.archives import extract_zip

    extract_zip(make_zip(tmp / "evil.zip", [("ok.txt", b"ok"), *entries], symlink), tmp / "out")


def _tar(tmp: Path, member: tarfile.TarInfo) -> None:
    from stages.archives import extract_matching

    archive = make_tar(tmp / "evil.tar.gz", [("top/model.onnx", b"m")], [member])
    extract_matching(archive, re.compile("."), tmp / "out", re.compile(".*"))


def _pickle(tmp: Path) -> None:
    import torch

    from stages.sources._torch import load_state_dict

    torch.save({"weight": _RunsCode(tmp / "pwned")}, tmp / "weights.pth")
    load_state_dict(tmp / "weights.pth", SimpleNamespace(path=Path("registry/onnx/evil.yaml")))


def _eager_mar(tmp: Path) -> None:
    """An eager TorchServe archive's model file is code: without `trust_code` it is never imported."""
    from stages.sources.torchserve import TorchServe

    with zipfile.ZipFile(tmp / "evil.mar", "w") as zf:
        zf.writestr("MAR-INF/MANIFEST.json", json.dumps({"model": {"modelName": "evil", "serializedFile": "w.pth",
                                                                   "modelFile": "model.py"}}))
        zf.writestr("w.pth", b"weights")
        zf.writestr("model.py", f"open({str(tmp / 'pwned')!r}, 'w').close()\n")
    card_ = SimpleNamespace(path=Path("registry/onnx/evil.yaml"), name="evil", trust_code=False,
                            source=SimpleNamespace(input_shape=(1, 3, 8, 8)))
    TorchServe.build(card_, SimpleNamespace(file=lambda role: tmp / "evil.mar"), {}, tmp / "work")


def _untrusted_hub_card(tmp: Path) -> None:
    from stages.card import load_card

    text = card("evil").replace("  kind: onnx-zoo\n", "").split("  url: ")[0] + (
        f"  kind: torchhub\n  repo: owner/repo\n  ref: {'b' * 40}\n  sha256: {'c' * 64}\n  entrypoint: net\n"
        "  input_shape: [1, 3, 8, 8]\n")
    (tmp / "registry/onnx").mkdir(parents=True)
    (tmp / "registry/onnx/evil.yaml").write_text(text)
    load_card("registry/onnx/evil.yaml", tmp)


def _hub_listing_traversal(tmp: Path) -> None:
    """A hub's file listing names the files fetched into registry/_raw/<name>/: a name with '..' is refused."""
    from stages.pipeline import _inside

    _inside(SimpleNamespace(path=Path("registry/onnx/evil.yaml"), raw_dir=Path("registry/_raw/evil")),
            "onnx/../../../../tmp/evil.pb")


REFUSALS = [
    ("upstream listing traversal", "hub file 'onnx/../../../../tmp/evil.pb'", _hub_listing_traversal,
     UnsafeArchiveError, "would be written outside registry/_raw/evil"),
    ("archive traversal", "zip entry '../x'", lambda t: _zip(t, [("../x", b"evil")]), UnsafeArchiveError,
     "entry '../x' would extract outside the target folder"),
    ("archive traversal", "tar entry 'top/../../evil.pb'", lambda t: _tar(t, link("top/../../evil.pb", "", tarfile.REGTYPE)),
     UnsafeArchiveError, "would extract outside the target folder"),
    ("archive absolute path", "zip entry '/etc/x'", lambda t: _zip(t, [("/etc/x", b"evil")]), UnsafeArchiveError,
     "entry '/etc/x' has an absolute path"),
    ("archive absolute path", "tar entry '/tmp/evil.pb'", lambda t: _tar(t, link("/tmp/evil.pb", "", tarfile.REGTYPE)),
     UnsafeArchiveError, "has an absolute path"),
    ("archive link escaping", "zip symlink entry", lambda t: _zip(t, [], symlink="repo/link"), UnsafeArchiveError,
     "entry 'repo/link' is a symbolic link"),
    ("archive link escaping", "tar symlink -> /etc/passwd", lambda t: _tar(t, link("top/a.pb", "/etc/passwd")),
     UnsafeArchiveError, "points outside the archive"),
    ("archive link escaping", "tar hard link -> ../../secret",
     lambda t: _tar(t, link("top/a.pb", "../../secret", tarfile.LNKTYPE)), UnsafeArchiveError, "points outside"),
    ("archive special file", "tar fifo", lambda t: _tar(t, link("top/fifo", "", tarfile.FIFOTYPE)), UnsafeArchiveError,
     "is a device or fifo"),
    ("pickle", "torch checkpoint whose pickle calls os.system", _pickle, StagingError,
     "is a pickle that needs weights_only=False"),
    ("third-party code", "eager .mar model.py, no trust_code", _eager_mar, StagingError,
     r"staging runs third-party code \(evil\.mar's model\.py\)"),
    ("third-party code", "torchhub card (hubconf.py), no trust_code", _untrusted_hub_card, CardError,
     "trust_code: kind 'torchhub' runs third-party code"),
]


@pytest.mark.parametrize("what,case,attempt,error,problem", REFUSALS, ids=[r[1] for r in REFUSALS])
def test_untrusted_input_is_refused_and_nothing_written_or_run(tmp_path, what, case, attempt, error, problem):
    with pytest.raises(error, match=problem) as info:
        attempt(tmp_path)
    written = [p.name for p in tmp_path.rglob("*") if p.name in ("x", "evil.pb", "a.pb", "fifo", "pwned")]
    refused = "\n" not in str(info.value) and not (tmp_path / "out").exists() and not written
    campaign.record(f"security: {what}", case, 1, refused, test="test_untrusted_input_is_refused_and_nothing_written_or_run")
    assert refused, (str(info.value), written)
