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

from stages.errors import FetchError, ModelNotFound


@dataclass(frozen=True)
class Target:
    label: str    # what the user asked for, normalized: onnx/resnet50
    path: str     # registry/onnx/resnet50
    address: str  # registry/_pipeline/0003/dvc.yaml:stage-onnx-zoo@resnet50


def resolve(root: Path, names: list[str]) -> list[Target]:
    """Each name's staged folder and stage address, from registry/index.json; an unknown name is one
    ModelNotFound line with the closest names."""
    from difflib import get_close_matches

    from stages.convert import CONVERTERS
    from stages.indexfile import read

    index = read(root)
    cards = index["cards"]
    known: dict[str, tuple[str, str, str]] = {}  # spelling -> (name, format, converter)
    for converter, entries in index.get("converters", {}).items():
        for name, entry in entries.items():
            fmt = entry["format"]
            known[f"{fmt}/{name}"] = (name, fmt, converter)
            if name in cards and cards[name]["format"] == fmt:
                known[name] = (name, fmt, converter)
            else:
                known[f"{name}-{fmt}"] = (name, fmt, converter)
    out = []
    for spelling in names:
        if spelling not in known:
            close = get_close_matches(spelling, list(known), n=3, cutoff=0.6)
            raise ModelNotFound(f"{spelling}: no model by that name in registry/index.json",
                                fix=f"did you mean {', '.join(close)}?" if close else "list them with `ls registry/*/`")
        name, fmt, converter = known[spelling]
        out.append(Target(f"{fmt}/{name}", f"registry/{fmt}/{name}",
                          f"{cards[name]['dvcfile']}:{CONVERTERS[converter].stage}@{name}"))
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

    dvc_log = logging.getLogger("dvc")
    level = dvc_log.level
    if not logging.getLogger().isEnabledFor(logging.INFO):
        dvc_log.setLevel(logging.CRITICAL + 1)
    try:
        with Repo(os.fspath(root)) as repo:
            _check_reachable(repo)
            repo.pull(targets=addresses)
    except DvcException as exc:
        return " ".join(str(exc).split())[:300]
    finally:
        dvc_log.setLevel(level)
    return None


def _check_reachable(repo) -> None:
    """One TCP connection to the remote's endpoint (S3 or HTTP remotes), 5 s at most."""
    import socket
    from urllib.parse import urlsplit
    from urllib.request import getproxies, proxy_bypass

    name = repo.config["core"].get("remote")
    conf = repo.config["remote"].get(name or "", {})
    url = conf.get("endpointurl") or ("https://s3.amazonaws.com" if str(conf.get("url", "")).startswith("s3://")
                                      else conf.get("url", ""))
    parts = urlsplit(str(url))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    if parts.scheme in getproxies() and not proxy_bypass(parts.hostname):
        return  # through a proxy: reaching the proxy proves nothing, DVC will say what it meets
    try:
        socket.create_connection((parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)), 5).close()
    except OSError as exc:
        raise FetchError(f"the DVC remote {name!r} ({url})", f"unreachable ({exc.strerror or exc})",
                         fix="check that the remote is reachable and the credentials are set (`dvc remote list`, "
                             ".dvc/config.local or AWS_* variables), then pull again") from None
