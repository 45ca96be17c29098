"""Comparing a staged model's outputs with a reference, optimum-style: one validation for every converter.

Every output of every case is compared; failures are collected and raised once, with the numbers
(which output, which case, max abs and rel error, tolerance, how many values are off). Passing
`onnx.checker` is never enough: exporters have shipped models that pass it and are wrong.

A converter that builds a source model (a stages.sources.SourceModel) calls `against_source` with
one runner per staged file; the inputs come from `generator` (stages.inputs, the one input
generator) and the tolerances from `tolerances` (the card's `validation:`, else params.yaml).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from stages.errors import ParityError, StagingError, ZooError


def _sig(x: float) -> float:
    """Errors recorded with 3 significant digits: last-bit noise across CPUs must not change a manifest."""
    return float(f"{x:.3g}")


RECORDED_DEFAULTS = {"atol": 1e-4, "rtol": 1e-3}  # a manifest whose record lacks them (written before they were)


def tolerances(card, settings: dict, *, recorded: dict | None = None) -> tuple[float, float]:
    """(atol, rtol), resolved here only: at staging, the card's `validation:` where it gives them, else
    the converter's params section; at `zoo verify`, what the manifest's validation record says."""
    if recorded is not None:
        return tuple(float(recorded.get(k) or RECORDED_DEFAULTS[k]) for k in ("atol", "rtol"))
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


# ----------------------------------------------------------------------------- against a source model

def generator(card, source, settings: dict):
    """The one input generator (stages.inputs) for a source model: the card's `inputs:` win over
    what the source implies (a tfhub card's `input_shape`)."""
    from stages.inputs import Inputs

    return Inputs(source.inputs, card.inputs or source.declared, settings, card, text=source.text, vocab=source.vocab)


def run_source(card, source, feeds: dict[str, Any], label: str) -> dict[str, Any]:
    """The source model's outputs by name; a failure is one line naming what was fed."""
    from stages.inputs import describe

    try:
        return source.reference(feeds)
    except ZooError:
        raise
    except Exception as exc:  # noqa: BLE001 - the model's own code raises anything
        raise StagingError(f"{card.path}: the source model fails on {label} ({describe(feeds)}): {type(exc).__name__}: "
                           f"{(str(exc).strip().splitlines() or [''])[0][:300]}",
                           fix="declare the inputs it accepts in the card (`inputs:`, see README)") from None


Runner = Callable[[dict[str, Any]], dict[str, Any]]


def against_source(card, source, gen, settings: dict, runners: dict[str, Runner], reference: str, *,
                   record_files: bool = True) -> dict[str, Any]:
    """Compare each staged file's runner with the source model on every case; fail once with every number.

    The manifest's `validation` record; `record_files` adds the names of the files compared.
    """
    comparison = Comparison(*tolerances(card, settings), defaulted_dims=gen.defaulted_dims)
    for case in gen.cases():
        label, feeds = case.label, gen.feeds(case)
        comparison.fed(label, feeds)
        expected = run_source(card, source, feeds, label)
        for filename, run in runners.items():
            actual = run(feeds)
            where = f"{filename} {label}"
            if set(expected) != set(actual):
                comparison.failures.append({"output": "*", "case": where,
                                            "problem": f"outputs differ: staged {sorted(actual)}, source {sorted(expected)}"})
                continue
            for name in sorted(expected):
                comparison.compare(where, name, actual[name], expected[name])
            comparison.cases += 1
    comparison.raise_if_failed(card.name)
    record = comparison.record(reference)
    return record | {"files": sorted(runners)} if record_files else record
