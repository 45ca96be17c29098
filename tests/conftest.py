"""Shared fixtures: the offline hub mirror and the local S3 server, both real servers on 127.0.0.1."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from stages.frameworks import preload_torch
from tests.support import sandbox
from tests.support.mirror.fixtures import build_mirror
from tests.support.mirror.server import MirrorServer

PROJECT = Path(__file__).resolve().parent.parent

# This process runs PyTorch and TensorFlow code: torch (and triton) must load first, whichever
# test module imports a framework first (see stages.frameworks.preload_torch).
preload_torch()


@pytest.fixture(scope="session")
def mirror_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mirror")


@pytest.fixture(scope="session")
def demo_fixtures(mirror_root):
    """The demo zoo's upstream files, laid out in the mirror root; returns their cards."""
    return {f.name: f for f in build_mirror(mirror_root)}


@pytest.fixture(scope="session")
def mirror_server(mirror_root, demo_fixtures):
    with MirrorServer(mirror_root) as server:
        yield server


@pytest.fixture
def mirror(mirror_server, monkeypatch):
    """The running mirror, with ZOO_MIRROR pointing at it and fast retries; faults reset after each test."""
    monkeypatch.setenv("ZOO_MIRROR", mirror_server.url)
    monkeypatch.setenv("ZOO_RETRY_BACKOFF", "0.01")
    monkeypatch.setenv("ZOO_PROGRESS", "0")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    yield mirror_server
    mirror_server.clear_faults()


@pytest.fixture(scope="session")
def s3():
    with sandbox.S3Server() as server:
        yield server


def make_root(tmp_path: Path, cards: dict[str, str]) -> Path:
    """A registry root for calling stages.pipeline directly: params, pins, cards and the index (no git/DVC)."""
    from stages import index

    root = tmp_path / "registry-root"
    (root / "stages").mkdir(parents=True)
    shutil.copy2(PROJECT / "params.yaml", root / "params.yaml")
    (root / "dvc.yaml").write_text((PROJECT / "dvc.yaml").read_text().split("\nartifacts:")[0])
    shutil.copytree(PROJECT / "stages" / "pins", root / "stages" / "pins")
    for key, text in cards.items():
        path = root / "registry" / f"{key}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    index.write(root)
    return root


def leftovers(root: Path) -> list[str]:
    """Anything half-written: temp files or folders from an interrupted or failed step."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".incomplete" in p.name or ".hf-" in p.name)


def pytest_configure(config):
    """The campaign ledger's file, made by the controlling process (pytest-xdist's workers inherit it)."""
    import os
    import tempfile

    from tests.support import campaign

    if not hasattr(config, "workerinput"):
        os.environ[campaign.LOG] = os.path.join(tempfile.mkdtemp(prefix="zoo-campaign-"), "rows.jsonl")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The fault campaign's figures (tests/support/campaign.py), when this run executed fault cases."""
    import json

    from tests.support import campaign

    if not campaign.rows():
        return
    terminalreporter.section("fault campaign")
    terminalreporter.write(campaign.table())
    base = Path(str(config._tmp_path_factory.getbasetemp())) if hasattr(config, "_tmp_path_factory") else None
    if base is not None:
        (base / "fault-campaign.md").write_text(campaign.table())
        (base / "fault-campaign.json").write_text(json.dumps(campaign.as_dicts(), indent=2) + "\n")
        terminalreporter.write_line(f"written to {base / 'fault-campaign.md'}")
