"""Comparing a staged model's outputs with a reference, optimum-style.

Every output of every case is compared; failures are collected and raised once, with the numbers
(which output, which case, max abs and rel error, tolerance, how many values are off). Passing
`onnx.checker` is never enough: exporters have shipped models that pass it and are wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stages.errors import ParityError


def _sig(x: float) -> float:
    """Errors recorded with 3 significant digits: last-bit noise across CPUs must not change a manifest."""
    return float(f"{x:.3g}")


def tolerances(card, settings: dict) -> tuple[float, float]:
    """(atol, rtol): the card's `validation:` where it gives them, else the converter's params section."""
    atol = card.validation.atol if card.validation.atol is not None else float(settings["atol"])
    rtol = card.validation.rtol if card.validation.rtol is not None else float(settings["rtol"])
    return atol, rtol


@dataclass
class Comparison:
    atol: float
    rtol: float
    cases: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0
    failures: list[dict] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)  # what every case fed: {"case", "shapes": {input: shape}}
    defaulted_dims: list[str] = field(default_factory=list)  # symbolic dims no card or param gave a value

    def fed(self, case: str, feeds: dict[str, Any]) -> None:
        from stages.inputs import shapes

        self.runs.append({"case": case, "shapes": shapes(feeds)})

    def compare(self, case: str, name: str, actual: Any, expected: Any) -> None:
        import numpy as np

        actual, expected = np.asarray(actual), np.asarray(expected)
        entry = {"output": name, "case": case, "atol": self.atol, "rtol": self.rtol}
        if actual.shape != expected.shape:
            self.failures.append(entry | {"problem": f"shape {list(actual.shape)} != reference {list(expected.shape)}"})
            return
        if actual.dtype.kind in "fc" or expected.dtype.kind in "fc":
            a, e = actual.astype(np.float64), expected.astype(np.float64)
            if not np.isfinite(a).all() and not np.array_equal(np.isnan(a), np.isnan(e)):
                self.failures.append(entry | {"problem": "non-finite values where the reference has none"})
                return
            diff = np.abs(a - e)
            diff = np.where(np.isnan(diff) & np.isnan(a) & np.isnan(e), 0.0, diff)
            rel = diff / np.maximum(np.abs(e), np.finfo(np.float64).tiny)
            off = int((diff > self.atol + self.rtol * np.abs(e)).sum())
            max_abs = float(diff.max()) if diff.size else 0.0
            max_rel = float(rel.max()) if rel.size else 0.0
        else:
            off = int((actual != expected).sum())
            max_abs = max_rel = float(off > 0)
        self.max_abs, self.max_rel = max(self.max_abs, max_abs), max(self.max_rel, max_rel)
        if off:
            self.failures.append(entry | {"max_abs": max_abs, "max_rel": max_rel, "mismatched": off,
                                          "size": int(actual.size)})

    def raise_if_failed(self, model: str) -> None:
        if self.failures:
            raise ParityError(model, self.failures,
                              fix="the staged model is numerically wrong; do not ship it (raise the card's "
                                  "validation tolerances only if the reference itself is known to be this loose)")

    def record(self, reference: str) -> dict[str, Any]:
        compared = self.cases > 0
        return {"reference": reference, "cases": self.cases, "atol": self.atol, "rtol": self.rtol,
                "max_abs_error": _sig(self.max_abs) if compared else None,
                "max_rel_error": _sig(self.max_rel) if compared else None,
                "passed": not self.failures, "runs": self.runs, "defaulted_dims": sorted(self.defaulted_dims)}


def check_finite(outputs: dict[str, Any], case: str) -> list[dict]:
    """Outputs of a run with no reference must at least be finite numbers."""
    import numpy as np

    bad = []
    for name, value in outputs.items():
        value = np.asarray(value)
        if value.dtype.kind in "fc" and not np.isfinite(value).all():
            bad.append({"output": name, "case": case, "problem": f"{int((~np.isfinite(value)).sum())} non-finite values"})
    return bad
