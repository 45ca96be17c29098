"""A large staged registry, built cheaply, for measuring one-model pulls (`make bench`, section `pull`).

`n` tiny ONNX-zoo cards (a distinct seeded Gemm model each, published on the mirror) in a fresh
registry whose DVC remote is the local S3 server. Staging 2,000 cards through `dvc repro` would take
about 40 minutes (DVC's per-stage overhead; see the `registry` section), and pulls do not depend on
how the outputs were made, so the cards are staged here in one process by the very functions the
stages' commands run (`pipeline.fetch_card`, `pipeline.stage_card`), then `dvc commit -f` records
every stage's lock entry as `dvc repro` would (the build checks that `dvc status` then finds
nothing to do), `dvc push` sends every output to the remote, and the commit is tagged `zoo-v1.0.0`
with `git tag -a` (what `zoo release` writes, without its checks: they hash every object back from
the remote, minutes at 2,000 cards, and pulls do not depend on them).

The result is a bare git repository, what consumers clone.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.support import sandbox
from tests.support.mirror import fixtures

STAGE_ALL = """
import sys
from pathlib import Path

from stages import pipeline

root = Path.cwd()
cards = sorted(p.relative_to(root) for p in (root / "registry" / "onnx").glob("*.yaml"))
for card in cards:
    pipeline.fetch_card(root, card)
for card in cards:
    pipeline.stage_card(root, card)
"""


def card_name(i: int) -> str:
    return f"m{i:04d}"


def build(work: Path, n: int, mirror_root: Path, env: dict[str, str], s3: sandbox.S3Server,
          log=print) -> tuple[Path, dict[str, float]]:
    """(the bare repository, seconds per build step) of a staged, pushed and tagged n-card registry."""
    steps: dict[str, float] = {}

    def step(label: str, args: list[str], cwd: Path) -> str:
        started = time.perf_counter()
        out = sandbox.run(args, cwd, env).stdout
        steps[label] = time.perf_counter() - started
        log(f"  {label}: {steps[label]:.1f} s")
        return out

    started = time.perf_counter()
    cards = {}
    for i in range(n):
        url = f"https://example.org/pullbench/{card_name(i)}/model.onnx"
        sha = fixtures.publish(mirror_root, url, fixtures.tiny_model(i))
        cards[f"onnx/{card_name(i)}"] = fixtures.onnx_card(card_name(i), url, sha)
    repo = sandbox.new_registry(work / "registry", cards, env, s3)
    steps["cards"] = time.perf_counter() - started
    log(f"  cards and zoo index: {steps['cards']:.1f} s")
    step("stage in one process", [sys.executable, "-c", STAGE_ALL], repo)
    step("dvc commit -f", ["dvc", "commit", "-f", "-q"], repo)
    status = step("dvc status", ["dvc", "status"], repo)
    if "up to date" not in status:
        raise RuntimeError(f"dvc status after dvc commit is not clean: {status[:500]}")
    step("dvc push", ["dvc", "push", "-q", "-j", "16"], repo)
    sandbox.run(["git", "add", "-A"], repo, env)
    sandbox.run(["git", "commit", "-q", "-m", f"stage {n} cards"], repo, env)
    sandbox.run(["git", "tag", "-a", "zoo-v1.0.0", "-m", f"{n} cards"], repo, env)
    bare = work / "registry.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(bare)], check=True, env=env)
    return bare, steps
