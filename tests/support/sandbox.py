"""Throwaway registries and local servers for the demo, the tests and the benchmarks.

A sandbox registry is a fresh git + DVC repository holding this project's pipeline and code
(what a clone of the registry holds) with the cards we give it; the DVC remote is a real
S3-compatible server (moto in server mode) on 127.0.0.1, reached through the real dvc-s3 plugin.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]  # the project root (this file is tests/support/sandbox.py)
SCAFFOLD = ("dvc.yaml", "params.yaml", "pyproject.toml", ".gitignore", ".dvcignore")
BUCKET = "zoo-registry"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class S3Server:
    """moto's S3 in server mode on 127.0.0.1, with the registry's bucket created."""

    def __init__(self, bucket: str = BUCKET):
        self.bucket, self.port, self._server = bucket, free_port(), None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "S3Server":
        import requests
        from moto.server import ThreadedMotoServer

        import logging

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        requests.put(f"{self.endpoint}/{self.bucket}", timeout=10).raise_for_status()
        return self

    def __exit__(self, *exc) -> None:
        self._server.stop()

    def keys(self) -> list[str]:
        """Every object key in the bucket (to check what a push stored)."""
        import re

        import requests

        keys, token = [], None
        while True:
            params = {"list-type": "2"} | ({"continuation-token": token} if token else {})
            body = requests.get(f"{self.endpoint}/{self.bucket}", params=params, timeout=10).text
            keys += re.findall(r"<Key>([^<]+)</Key>", body)
            match = re.search(r"<NextContinuationToken>([^<]+)</NextContinuationToken>", body)
            if not match:
                return keys
            token = match.group(1)


def env(mirror: str | None = None, **extra: str) -> dict[str, str]:
    """Environment for `zoo`/`dvc`/`git` subprocesses: this venv first on PATH, no network but 127.0.0.1."""
    out = dict(os.environ)
    out.update(AWS_ENV)
    out.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{out.get('PATH', '')}",
               DVC_NO_ANALYTICS="1", HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_XET="1",
               ZOO_PROGRESS="0", ZOO_RETRY_BACKOFF=out.get("ZOO_RETRY_BACKOFF", "0.05"),
               TF_CPP_MIN_LOG_LEVEL=out.get("TF_CPP_MIN_LOG_LEVEL", "3"),
               GIT_AUTHOR_NAME="zoo", GIT_AUTHOR_EMAIL="zoo@localhost",
               GIT_COMMITTER_NAME="zoo", GIT_COMMITTER_EMAIL="zoo@localhost", NO_PROXY="127.0.0.1,localhost")
    for key in ("ZOO_ROOT", "ZOO_MIRROR"):
        out.pop(key, None)
    if mirror:
        out["ZOO_MIRROR"] = mirror
    out.update(extra)
    return out


def run(args: list[str], cwd: Path, environ: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=environ, text=True, capture_output=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(args)}` failed in {cwd} with exit {proc.returncode}:\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def new_registry(dest: Path, cards: dict[str, str], environ: dict[str, str], s3: S3Server | None = None) -> Path:
    """A fresh registry repo at `dest` with this project's pipeline and code and the given cards.

    `cards` maps `<format>/<name>` to the card's YAML text. The result is committed.
    """
    from stages import index

    dest.mkdir(parents=True)
    for name in SCAFFOLD:
        shutil.copy2(PROJECT / name, dest / name)
    shutil.copytree(PROJECT / "stages", dest / "stages", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    run(["git", "init", "-q", "-b", "main"], dest, environ)
    run(["dvc", "init", "-q"], dest, environ)
    shutil.copy2(PROJECT / ".dvc" / "config", dest / ".dvc" / "config")
    for key, text in cards.items():
        path = dest / "registry" / f"{key}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    index.write(dest)
    if s3 is not None:
        configure_remote(dest, s3, environ)
    run(["git", "add", "-A"], dest, environ)
    run(["git", "commit", "-q", "-m", "registry with cards: " + ", ".join(sorted(cards))], dest, environ)
    return dest


def configure_remote(repo: Path, s3: S3Server, environ: dict[str, str]) -> None:
    """Point the `zoo` remote at the local server, in config.local (never in the committed config)."""
    run(["dvc", "remote", "modify", "--local", "zoo", "endpointurl", s3.endpoint], repo, environ)
    if s3.bucket != BUCKET:  # moto's servers in one process share their buckets: tests keep theirs apart
        run(["dvc", "remote", "modify", "--local", "zoo", "url", f"s3://{s3.bucket}/dvc"], repo, environ)


def ran(output: str) -> list[str]:
    """The stages a `dvc repro` ran, by name (`stage-torch@x`), sorted: DVC prints a shard's stage
    with its file (`registry/_pipeline/0001/dvc.yaml:stage-torch@x`)."""
    import re

    return sorted(re.findall(r"Running stage '(?:[^':]+:)?([^']+)'", output))


def short(address: str) -> str:
    """`registry/_pipeline/0001/dvc.yaml:stage-torch@x` -> `stage-torch@x`."""
    return address.rpartition(":")[2]


def stage(repo: Path, name: str) -> str:
    """The DVC address of a card's stage given as `<stage>@<card>`, from the repo's registry/index.json."""
    import json

    stage_name, _, card = name.partition("@")
    dvcfile = json.loads((repo / "registry" / "index.json").read_text())["cards"][card]["dvcfile"]
    return f"{dvcfile}:{stage_name}@{card}"

