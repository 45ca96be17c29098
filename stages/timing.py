"""Named phase timings of one command (build, export, validate ...), reported by `make bench`.

Costs two perf_counter calls per phase; recorded only when ZOO_TIMINGS is set (see stages.cli).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

PHASES: dict[str, float] = {}


@contextmanager
def phase(name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        PHASES[name] = PHASES.get(name, 0.0) + time.perf_counter() - started
