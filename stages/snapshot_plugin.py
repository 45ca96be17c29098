"""The Dask worker plugin that hands `zoo repro`'s snapshot of the working tree to every worker.

A plugin reaches every worker of the cluster, those that join later and those a nanny restarts
after a crash, so a card retried on a restarted worker finds the snapshot there too. Its own module
because it subclasses Dask's WorkerPlugin: importing it imports `distributed`, which `zoo repro`
with nothing stale never needs.
"""

from __future__ import annotations

import os
from pathlib import Path

from distributed.diagnostics.plugin import WorkerPlugin


def path_in(folder: str, digest: str) -> Path:
    """Where a worker keeps the snapshot `digest` (its folder: Dask removes it with the worker)."""
    return Path(folder) / f"zoo-snapshot-{digest}.tar.gz"


class Snapshot(WorkerPlugin):
    """Writes the snapshot (gzipped tar bytes) into the worker's folder, once per worker."""

    def __init__(self, data: bytes, digest: str):
        self.data, self.digest = data, digest

    def setup(self, worker) -> None:
        path = path_in(worker.local_directory, self.digest)
        tmp = path.with_name(path.name + ".incomplete")
        tmp.write_bytes(self.data)
        os.replace(tmp, path)
