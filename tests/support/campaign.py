"""The fault campaign's ledger: each fault test records what it injected and how the run ended.

`record()` appends one row per case; at the end of the session pytest prints the table grouped by
kind (tests/conftest.py, `pytest_terminal_summary`) and writes it as Markdown beside the session's
temp folders, so the README's reliability figures are copied from a real run, never typed in.
A case is *recovered* when the command run again (or its own retries) completed and every byte
checked afterwards matched git; *bytes lost* counts bytes of committed data that were no longer
retrievable afterwards, and *silent* counts corrupted files that a later step accepted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

ROWS: list["Case"] = []


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
    ROWS.append(Case(kind, case, injected, recovered, bytes_lost, silent, test))


def table(rows: list[Case] | None = None) -> str:
    """Markdown: one line per kind (cases, faults injected, recovered, bytes lost, silent corruptions)."""
    rows = ROWS if rows is None else rows
    kinds: dict[str, list[Case]] = {}
    for row in rows:
        kinds.setdefault(row.kind, []).append(row)
    lines = ["| fault | cases | faults injected | runs recovered | bytes lost | silent corruptions |",
             "|---|---|---|---|---|---|"]
    for kind, cases in kinds.items():
        lines.append(f"| {kind} | {len(cases)} | {sum(c.injected for c in cases)} | "
                     f"{sum(c.recovered for c in cases)} of {len(cases)} | {sum(c.bytes_lost for c in cases)} | "
                     f"{sum(c.silent for c in cases)} |")
    if rows:
        lines.append(f"| **total** | {len(rows)} | {sum(c.injected for c in rows)} | "
                     f"{sum(c.recovered for c in rows)} of {len(rows)} | {sum(c.bytes_lost for c in rows)} | "
                     f"{sum(c.silent for c in rows)} |")
    return "\n".join(lines) + "\n"


def as_dicts() -> list[dict]:
    return [asdict(row) for row in ROWS]
