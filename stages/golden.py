"""Golden test data beside every staged model: writing and reading it (`zoo verify` is stages.verify).

The data follows the ONNX model zoo's convention: `test_data_set_<n>/input_<i>.pb` and
`output_<i>.pb`, each a serialized onnx TensorProto whose `name` is the tensor's name. The outputs
are computed by the SOURCE framework (the PyTorch model, the TensorFlow SavedModel, Keras model or
transformers model), not by the staged file, so anyone can check their own runtime against the
original framework. ONNX-zoo cards stage the zoo's own test data sets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SET = "test_data_set_0"


def write_source(out: Path, card, source, gen) -> None:
    """test_data_set_0 of a converter with a source model: the generator's batch-1 case, outputs
    computed by the SOURCE model, in its input and output order."""
    from stages.validate import run_source

    feeds = gen.feeds(gen.first())
    expected = run_source(card, source, feeds, "golden data")
    write_set(out, [(n, feeds[n]) for n in source.input_names], [(n, expected[n]) for n in source.outputs])


def write_set(out: Path, inputs: list[tuple[str, Any]], outputs: list[tuple[str, Any]]) -> None:
    """Write one test data set (names in the model's input and output order) into `out/test_data_set_0`."""
    import numpy as np
    from onnx import numpy_helper

    folder = out / SET
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, tensors in (("input", inputs), ("output", outputs)):
        for i, (name, value) in enumerate(tensors):
            proto = numpy_helper.from_array(np.asarray(value, order="C"), name)  # 0-d stays 0-d
            (folder / f"{prefix}_{i}.pb").write_bytes(proto.SerializeToString(deterministic=True))


def read_tensors(folder: Path, prefix: str) -> list[tuple[str, Any]]:
    import onnx
    from onnx import numpy_helper

    files = sorted(folder.glob(f"{prefix}_*.pb"), key=lambda p: int(p.stem.split("_")[1]))
    out = []
    for path in files:
        tensor = onnx.load_tensor(str(path))
        out.append((tensor.name, numpy_helper.to_array(tensor)))
    return out


def sets(folder: Path) -> list[Path]:
    """The test_data_set_<n> folders beside a model, in numeric order."""
    return sorted(folder.glob("test_data_set_*"), key=lambda p: int(p.name.rsplit("_", 1)[1]))


def by_name(tensors: list[tuple[str, Any]], names: list[str], where: str, what: str = "inputs") -> dict[str, Any]:
    """Golden tensors keyed by the model's tensor names.

    The data sets the registry writes name every tensor after the model's, and are matched by name.
    The ONNX zoo's own archives often do not (empty names, or names from the exporting framework):
    their convention is the file's index, `input_<i>.pb` being the model's i-th input, which is
    what onnx's backend test runner feeds; so unmatched names fall back to that index, and only
    when the counts agree.
    """
    from stages.errors import StagingError

    given = [name for name, _ in tensors]
    if given and sorted(given) == sorted(names):
        return dict(tensors)
    if len(tensors) == len(names):
        return {name: value for name, (_, value) in zip(names, tensors)}
    raise StagingError(f"{where}: {len(tensors)} golden {what} ({', '.join(n or '?' for n in given)}), the model has "
                       f"{len(names)} ({', '.join(names)})",
                       fix="the test data belongs to another model or version; restage it or fix the card's test data")
