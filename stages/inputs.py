"""What a model is fed when it is validated: one input generator for every converter.

Every stage compares the staged model with its source on generated inputs, and writes the first
case as golden data. What those inputs are is decided here and nowhere else, from three things
only (in the manner of optimum's dummy input generators):

- the model's declared inputs (`TensorSpec`: name, dtype, shape with fixed, symbolic or unknown dims);
- the card's `inputs:` section (`Declared`), which gives symbolic dims values, fixes an input's
  value (`sr: {value: 16000}`), fills a shape with one value, or bounds integers (`range:`);
- the converter's params.yaml section: `seed`, `batch_sizes`, `sequence_lengths` (text models),
  `dim_values` (named symbolic dims), `dim_default` (any other), `int_range`, `float_range`.

A symbolic dim that is neither the batch, nor a text model's sequence, nor given a value by the
card or `dim_values`, takes `dim_default` and is reported (`defaulted_dims`): a detector
"validated" on a 1x1 image proves nothing, and the manifest and `zoo check` say so.

Card syntax (the README documents it):

    inputs:
      x: {shape: [batch, 3, 48, 320]}               # `batch` is swept over batch_sizes
      sr: {value: 16000}                            # a fixed value: scalar or nested list
      state: {shape: [2, batch, 128], value: 0.0}   # a shape filled with one value
      ids: {shape: [batch, 16], range: [0, 30522]}  # integers drawn from [low, high)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from stages.errors import CardError

SYMBOLS = ("batch", "sequence")  # the dims a card may leave to the sweep (batch_sizes, sequence_lengths)
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model: its name, numpy dtype and shape.

    Dims are ints when fixed, a name when symbolic (`batch`, `height`), `?` or None when unknown.
    """

    name: str
    dtype: str
    shape: tuple

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype,
                "shape": [d if d is not None else ("batch" if i == 0 else "?") for i, d in enumerate(self.shape)]}


def fixed(dim) -> bool:
    return isinstance(dim, int) and not isinstance(dim, bool) and dim > 0


@dataclass(frozen=True)
class Declared:
    """One entry of a card's `inputs:`."""

    name: str
    shape: tuple | None = None  # ints and SYMBOLS
    value: Any = field(default=None, hash=False, compare=False)  # a number, a bool, or a nested list
    range: tuple | None = None  # [low, high)

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.shape is not None:
            out["shape"] = list(self.shape)
        if self.value is not None:
            out["value"] = self.value
        if self.range is not None:
            out["range"] = list(self.range)
        return out


# ----------------------------------------------------------------------------- the card's `inputs:`

def _number(value) -> bool:
    return isinstance(value, (int, float, bool))


def _nested_shape(value) -> tuple[int, ...] | None:
    """The shape of a rectangular nested list of numbers; None when ragged or not numbers."""
    if _number(value):
        return ()
    if not isinstance(value, list) or not value:
        return None
    inner = [_nested_shape(v) for v in value]
    if inner[0] is None or any(s != inner[0] for s in inner):
        return None
    return (len(value), *inner[0])


def parse_card(fields) -> tuple[Declared, ...] | None:
    """A card's `inputs:` mapping, each entry checked on its own (the model checks the rest at stage time)."""
    sub = fields.sub("inputs", required=False)
    if sub is None:
        return None
    out = []
    for name in sorted(map(str, sub.data)):
        entry = sub.sub(name)
        shape = entry.raw("shape", required=False)
        value = entry.raw("value", required=False)
        bounds = entry.raw("range", required=False)
        entry.done()
        where = entry.prefix.rstrip(".")
        if shape is None and value is None and bounds is None:
            raise CardError(sub.path, where, "declares nothing",
                            "give `shape:`, `value:` or `range:` (see README, Validation inputs)")
        if shape is not None and not (isinstance(shape, list) and all(
                fixed(d) or d in SYMBOLS for d in shape)):
            raise CardError(sub.path, f"{where}.shape", f"expected a list of positive ints or {' / '.join(SYMBOLS)}, "
                            f"got {shape!r}", "write e.g. `shape: [batch, 3, 48, 320]`")
        if value is not None and _nested_shape(value) is None:
            raise CardError(sub.path, f"{where}.value", f"expected a number or a rectangular nested list of numbers, "
                            f"got {value!r}", "write e.g. `value: 16000` or `value: [[1, 2], [3, 4]]`")
        if value is not None and shape is not None and _nested_shape(value) != ():
            raise CardError(sub.path, f"{where}.value", "a list value has its own shape",
                            "drop `shape:`, or give one number to fill the shape with")
        if bounds is not None:
            if value is not None:
                raise CardError(sub.path, f"{where}.range", "an input has a `value:` or a `range:`, not both",
                                "keep one of them")
            if not (isinstance(bounds, list) and len(bounds) == 2 and all(
                    _number(b) and not isinstance(b, bool) for b in bounds) and bounds[0] < bounds[1]):
                raise CardError(sub.path, f"{where}.range", f"expected [low, high) with low < high, got {bounds!r}",
                                "write e.g. `range: [0, 30522]`")
        out.append(Declared(name=name, shape=None if shape is None else tuple(shape), value=value,
                            range=None if bounds is None else tuple(bounds)))
    sub.done()
    return tuple(out)


# ----------------------------------------------------------------------------- the generator

@dataclass(frozen=True)
class Case:
    label: str
    batch: int
    seq: int | None
    index: int


class Inputs:
    """The generator for one model: checked against the model's inputs when built, then asked for feeds.

    `text` marks a transformer text model: its `input_ids` are token ids below `vocab`, its
    `attention_mask` has a half-padded last row when the batch has more than one (a mask must
    survive an export or a freeze), its `token_type_ids` are zeros, and its symbolic second dim is
    the sequence length.
    """

    def __init__(self, specs: list[TensorSpec], declared: tuple[Declared, ...] | None, settings: dict, card,
                 *, text: bool = False, vocab: int | None = None):
        self.specs, self.settings, self.card = list(specs), settings, card
        self.declared = {d.name: d for d in declared or ()}
        self.text, self.vocab = text, vocab
        self._check()

    # --- what the card declares, against what the model declares

    def _fail(self, name: str, problem: str, fix: str):
        raise CardError(getattr(self.card, "path", self.card), f"inputs.{name}", problem, fix)

    def _check(self) -> None:
        import numpy as np

        by_name = {s.name: s for s in self.specs}
        for name, decl in self.declared.items():
            spec = by_name.get(name)
            if spec is None:
                self._fail(name, f"the model has no input {name!r} (its inputs: {', '.join(by_name) or 'none'})",
                           "fix the name under `inputs:`")
            kind = np.dtype(spec.dtype).kind
            if decl.shape is not None and len(decl.shape) != len(spec.shape):
                self._fail(name, f"rank {len(decl.shape)} ({list(decl.shape)}), the model's {name} has rank "
                           f"{len(spec.shape)} ({list(spec.record()['shape'])})", "give one entry per dim")
            for axis, (want, has) in enumerate(zip(decl.shape or (), spec.shape)):
                if fixed(has) and want != has:
                    self._fail(name, f"dim {axis} is {want!r}, the model fixes it at {has}",
                               f"write {has} there (the model's shape is {list(spec.record()['shape'])})")
            if decl.value is not None:
                values = np.asarray(decl.value)
                if kind in "iu" and not np.all(np.equal(np.mod(values, 1), 0)):
                    self._fail(name, f"value {decl.value!r} is not an integer, the model's {name} is {spec.dtype}",
                               "give an integer value")
                if kind == "b" and values.dtype != bool:
                    self._fail(name, f"value {decl.value!r} is not true/false, the model's {name} is bool",
                               "give true or false")
                if kind in "iu" and values.size and not (np.iinfo(spec.dtype).min <= values.min()
                                                         and values.max() <= np.iinfo(spec.dtype).max):
                    self._fail(name, f"value {decl.value!r} does not fit the model's {spec.dtype} {name}",
                               f"give a value between {np.iinfo(spec.dtype).min} and {np.iinfo(spec.dtype).max}")
                if kind not in "iufb":
                    self._fail(name, f"the model's {name} is {spec.dtype}, which takes no generated value",
                               "give the card reference test data for this model")
                if decl.shape is None and values.ndim:
                    if values.ndim != len(spec.shape) or any(
                            fixed(h) and h != v for h, v in zip(spec.shape, values.shape)):
                        self._fail(name, f"value has shape {list(values.shape)}, the model's {name} has "
                                   f"{list(spec.record()['shape'])}", "give a value of the model's shape")
            if decl.range is not None and kind not in "iuf":
                self._fail(name, f"a range for the model's {spec.dtype} input {name}", "give a `value:` instead")
            if decl.range is not None and kind in "iu" and not all(float(b).is_integer() for b in decl.range):
                self._fail(name, f"range {list(decl.range)} is not integers, the model's {name} is {spec.dtype}",
                           "write integer bounds, e.g. `range: [0, 100]`")
            if decl.range is not None and kind in "iu" and not (
                    np.iinfo(spec.dtype).min <= decl.range[0] and decl.range[1] - 1 <= np.iinfo(spec.dtype).max):
                self._fail(name, f"range {list(decl.range)} does not fit the model's {spec.dtype} {name}",
                           f"keep it between {np.iinfo(spec.dtype).min} and {np.iinfo(spec.dtype).max}")

    # --- the cases

    @property
    def batched(self) -> bool:
        """Whether the batch sizes are swept: the card says `batch`, or every generated input has a
        symbolic leading dim (a fixed batch of 1, or a scalar input, means one run)."""
        if any("batch" in (d.shape or ()) for d in self.declared.values()):
            return True
        generated = [s for s in self.specs if s.name not in self.declared or self.declared[s.name].shape is None
                     and self.declared[s.name].value is None]
        return bool(generated) and all(s.shape and not fixed(s.shape[0]) for s in generated)

    @property
    def sequenced(self) -> bool:
        return self.text or any("sequence" in (d.shape or ()) for d in self.declared.values())

    def cases(self) -> list[Case]:
        batches = [int(b) for b in self.settings.get("batch_sizes", [1])] if self.batched else [1]
        seqs = [int(s) for s in self.settings.get("sequence_lengths", [8])] if self.sequenced else [None]
        out = []
        for index, (batch, seq) in enumerate(itertools.product(batches, seqs)):
            label = (f"batch{batch}" if self.batched else "fixed") + (f"-seq{seq}" if seq else "")
            out.append(Case(label, batch, seq, index))
        return out

    def first(self) -> Case:
        """The golden-data case: batch 1, the shortest sequence."""
        seqs = sorted(int(s) for s in self.settings.get("sequence_lengths", [8])) if self.sequenced else [None]
        return Case("golden", 1, seqs[0], 0)

    # --- shapes and values

    def shape(self, spec: TensorSpec, batch: int, seq: int | None) -> tuple[int, ...]:
        return tuple(size for size, _ in self._dims(spec, batch, seq))

    def _dims(self, spec: TensorSpec, batch: int, seq: int | None) -> list[tuple[int, str | None]]:
        """(size, why it was defaulted or None) per dim."""
        decl = self.declared.get(spec.name)
        if decl is not None and decl.shape is not None:
            return [(batch if d == "batch" else self._seq(seq) if d == "sequence" else d, None) for d in decl.shape]
        named = self.settings.get("dim_values") or {}
        default = int(self.settings.get("dim_default", 1))
        dims = []
        for axis, dim in enumerate(spec.shape):
            if fixed(dim):
                dims.append((dim, None))
            elif axis == 0 and self.batched:
                dims.append((batch, None))
            elif isinstance(dim, str) and dim in named:
                dims.append((int(named[dim]), None))
            elif axis == 1 and self.text:
                dims.append((self._seq(seq), None))
            else:
                dims.append((default, f"{spec.name}: dim {axis} ({dim if isinstance(dim, str) and dim != '?' else 'unknown'})"
                                      f" = {default} (params dim_default)"))
        return dims

    def _seq(self, seq: int | None) -> int:
        return int(seq if seq is not None else sorted(self.settings.get("sequence_lengths", [8]))[0])

    @property
    def defaulted_dims(self) -> list[str]:
        """Symbolic non-batch dims that took `dim_default`: named in the manifest and by `zoo check`."""
        found = []
        for spec in self.specs:
            decl = self.declared.get(spec.name)
            if decl is not None and (decl.shape is not None or decl.value is not None and _nested_shape(decl.value)):
                continue
            found += [why for _, why in self._dims(spec, 1, None) if why]
        return sorted(found)

    def feeds(self, case: Case) -> dict[str, Any]:
        """Seeded feeds for one case, by input name: the same settings give the same bytes on any machine."""
        import numpy as np

        rng = np.random.default_rng([int(self.settings.get("seed", 0)), case.index])
        out = {}
        for spec in self.specs:
            out[spec.name] = self._one(spec, case, rng)
        return out

    def _one(self, spec: TensorSpec, case: Case, rng):
        import numpy as np

        from stages.errors import StagingError

        dtype = np.dtype(spec.dtype)
        decl = self.declared.get(spec.name)
        if decl is not None and decl.value is not None:
            value = np.asarray(decl.value, dtype=dtype)
            if value.ndim == 0 and (decl.shape is not None or len(spec.shape)):
                return np.full(self.shape(spec, case.batch, case.seq), value, dtype=dtype)
            return value
        shape = self.shape(spec, case.batch, case.seq)
        if decl is not None and decl.range is not None:
            low, high = decl.range
            if dtype.kind in "iu":
                return rng.integers(int(low), int(high), size=shape).astype(dtype)
            return rng.uniform(float(low), float(high), size=shape).astype(dtype)
        if self.text and spec.name in TEXT_INPUTS and len(shape) == 2:
            return self._text(spec.name, shape, dtype, rng)
        if dtype.kind == "f":
            bounds = self.settings.get("float_range")
            if bounds:
                return rng.uniform(float(bounds[0]), float(bounds[1]), size=shape).astype(dtype)
            return rng.standard_normal(shape).astype(dtype)
        if dtype.kind in "iu":
            low, high = self.settings.get("int_range") or [0, 100]
            return rng.integers(int(low), int(high), size=shape).astype(dtype)
        if dtype.kind == "b":
            return rng.integers(0, 2, size=shape).astype(bool)
        raise StagingError(f"{getattr(self.card, 'path', self.card)}: input {spec.name!r} has dtype {spec.dtype}, "
                           "which has no generator", fix="declare it under `inputs:` with a value, or give the "
                                                          "card reference test data")

    def _text(self, name: str, shape: tuple[int, ...], dtype, rng):
        import numpy as np

        batch, seq = shape
        if name == "input_ids":
            return rng.integers(0, int(self.vocab or 100), size=shape).astype(dtype)
        if name == "token_type_ids":
            return np.zeros(shape, dtype=dtype)
        mask = np.ones(shape, dtype=dtype)
        if batch > 1:
            mask[-1, seq // 2:] = 0
        return mask


def shapes(feeds: dict[str, Any]) -> dict[str, list[int]]:
    """What was fed, as the manifest records it: {input: shape}."""
    import numpy as np

    return {name: list(np.shape(value)) for name, value in sorted(feeds.items())}


def describe(feeds: dict[str, Any]) -> str:
    """`x float32[1, 3, 48, 320], sr int64[]`: the inputs of a failing run, for its error message."""
    import numpy as np

    return ", ".join(f"{name} {np.asarray(v).dtype}{list(np.shape(v))}" for name, v in feeds.items())
