"""`zoo pull NAME...`: one staged model out of the zoo, by name, every byte checked.

A name (`resnet50`, `onnx/resnet50`, `<name>-onnx` for a card's ONNX target) is resolved from
`registry/index.json` alone to the one stage that outputs it (its shard's `dvc.yaml` and the
converter's stage), and DVC pulls that stage address: DVC reads one shard instead of collecting
every stage of the zoo. The committed remote config has `verify = true`, so DVC rehashes what it
downloads and refuses a corrupted object; when it refuses, the pull is audited against the remote
(stages.audit) to name the file, the hashes and the repair in one line. Once checked out, every file
is compared with the manifest's sha256 and size (a cache object rotted since it was stored would
otherwise pass: DVC trusts its cache).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from stages.errors import FetchError


@dataclass(frozen=True)
class Target:
    label: str    # what the user asked for, normalized: onnx/resnet50
    path: str     # registry/onnx/resnet50
    address: str  # registry/_pipeline/0003/dvc.yaml:stage-onnx-zoo@resnet50


def resolve(root: Path, names: list[str]) -> list[Target]:
    """Each name's staged folder and stage address, from registry/index.json alone (stages.shards.resolve)."""
    from stages.convert import CONVERTERS
    from stages.indexfile import read
    from stages.shards import address, resolve as resolve_name

    index = read(root)
    out = []
    for spelling in names:
        name, fmt, converter = resolve_name(index, spelling)
        out.append(Target(f"{fmt}/{name}", f"registry/{fmt}/{name}",
                          address(index["cards"][name]["dvcfile"], CONVERTERS[converter].stage, name)))
    return out


def pull(root: Path, names: list[str]) -> list[tuple[Target, int, int]]:
    """Pull each model's stage output, then check its files against its manifest: [(target, files, bytes)]."""
    from stages import manifest as manifests
    from stages.audit import audit, first_problem

    targets = resolve(root, names)
    error = _dvc_pull(root, [t.address for t in targets])
    if error is not None:
        report = audit(root, None, remote=True, paths=[t.path for t in targets], progress=False)
        if any(p.status != "unreadable" for p in report.problems):
            raise first_problem(report)
        raise FetchError(", ".join(t.path for t in targets), f"`dvc pull` failed: {error}",
                         fix="check that the remote is reachable and the credentials are set "
                             "(`dvc remote list`, .dvc/config.local or AWS_* variables), then pull again")
    done = []
    for target in targets:
        folder = root / target.path
        files, size = manifests.check_files(folder, manifests.read(folder), target.path)
        done.append((target, files, size))
    return done


def _dvc_pull(root: Path, addresses: list[str]) -> str | None:
    """DVC's pull of these stage addresses, in this process (its log silenced: the outcome is ours to
    say in one line); None, or DVC's error in one line. An unreachable remote is said at once: DVC
    would retry for about 35 s before giving up."""
    import logging

    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    from stages.audit import check_reachable

    dvc_log = logging.getLogger("dvc")
    level = dvc_log.level
    if not logging.getLogger().isEnabledFor(logging.INFO):
        dvc_log.setLevel(logging.CRITICAL + 1)
    try:
        with Repo(os.fspath(root)) as repo:
            check_reachable(repo)
            repo.pull(targets=addresses)
    except DvcException as exc:
        return " ".join(str(exc).split())[:300]
    finally:
        dvc_log.setLevel(level)
    return None
