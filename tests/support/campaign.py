"""The fault campaign's ledger: each fault test records what it injected and how the run ended.

`record()` appends one row per case; at the end of the session pytest prints the table grouped by
kind (tests/conftest.py, `pytest_terminal_summary`) and writes it as Markdown beside the session's
temp folders, so the README's reliability figures are copied from a real run, never typed in.
A case is *recovered* when the command run again (or its own retries) completed and every byte
checked afterwards matched git; *bytes lost* counts bytes of committed data that were no longer
retrievable afterwards, and *silent* counts corrupted files that a later step accepted.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

ROWS: list["Case"] = []
LOG = "ZOO_CAMPAIGN_LOG"  # set by tests/conftest.py: a JSON-lines file every pytest-xdist worker appends to


@dataclass(frozen=True)
class Case:
    kind: str          # "S3 500/503", "S3 connection reset", "SIGKILL", "disk full", ...
    case: str          # what was done, e.g. "503 SlowDown x3 during dvc push"
    injected: int      # faults injected (requests failed, processes killed, writes refused)
    recovered: bool    # the re-run (or the command's own retries) completed and verified
    bytes_lost: int = 0
    silent: int = 0
    test: str = ""


def record(kind: str, case: str, injected: int, recovered: bool, *, bytes_lost: int = 0, silent: int = 0,
           test: str = "") -> None:
    assert injected >= 1, f"{case}: a fault case that injected nothing proves nothing"
    row = Case(kind, case, injected, recovered, bytes_lost, silent, test)
    if os.environ.get(LOG):
        with open(os.environ[LOG], "a", encoding="utf-8") as fh:  # one short O_APPEND write per row
            fh.write(json.dumps(asdict(row)) + "\n")
    else:
        ROWS.append(row)


def rows() -> list["Case"]:
    """Every row recorded in this run, by any worker."""
    path = os.environ.get(LOG)
    if not path or not os.path.exists(path):
        return list(ROWS)
    with open(path, encoding="utf-8") as fh:
        return [Case(**json.loads(line)) for line in fh if line.strip()]


def table(cases: list[Case] | None = None) -> str:
    """Markdown: one line per kind (cases, faults injected, recovered, bytes lost, silent corruptions),
    the faults first, then the security refusals, each with its total."""
    every = rows() if cases is None else cases
    lines = ["| fault | cases | faults injected | runs recovered | bytes lost | silent corruptions |",
             "|---|---|---|---|---|---|"]
    for label, group in (("faults", [r for r in every if not r.kind.startswith("security")]),
                         ("security", [r for r in every if r.kind.startswith("security")])):
        kinds: dict[str, list[Case]] = {}
        for row in group:
            kinds.setdefault(row.kind, []).append(row)
        for kind, cases in kinds.items():
            lines.append(_line(kind, cases))
        if group:
            lines.append(_line(f"**{label}, total**", group))
    return "\n".join(lines) + "\n"


def _line(kind: str, cases: list[Case]) -> str:
    return (f"| {kind} | {len(cases)} | {sum(c.injected for c in cases)} | {sum(c.recovered for c in cases)} of "
            f"{len(cases)} | {sum(c.bytes_lost for c in cases)} | {sum(c.silent for c in cases)} |")


def as_dicts() -> list[dict]:
    return [asdict(row) for row in rows()]
