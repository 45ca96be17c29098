"""Golden test data beside every staged model, and `zoo verify`, which checks a staged model against it.

The data follows the ONNX model zoo's convention: `test_data_set_<n>/input_<i>.pb` and
`output_<i>.pb`, each a serialized onnx TensorProto whose `name` is the tensor's name. The outputs
are computed by the SOURCE framework (the PyTorch model, the TensorFlow SavedModel, Keras model or
transformers model), not by the staged file, so anyone can check their own runtime against the
original framework. ONNX-zoo cards stage the zoo's own test data sets.

`zoo verify registry/<format>/<name>` runs the staged model on each set (ONNX Runtime for
`model.onnx`, TensorFlow for `model.pb`, Keras for `model.keras` and `model.h5`) and reports the
max abs and rel error per file, with the manifest's tolerances; it needs only that folder and its
manifest (a fresh clone after `dvc pull registry/<format>/<name>`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stages.errors import StagingError, ZooError

SET = "test_data_set_0"


def write_set(out: Path, inputs: list[tuple[str, Any]], outputs: list[tuple[str, Any]]) -> None:
    """Write one test data set (names in the model's input and output order) into `out/test_data_set_0`."""
    import numpy as np
    from onnx import numpy_helper

    folder = out / SET
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, tensors in (("input", inputs), ("output", outputs)):
        for i, (name, value) in enumerate(tensors):
            proto = numpy_helper.from_array(np.ascontiguousarray(value), name)
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


class VerifyError(ZooError):
    """A staged model disagrees with its golden data, or the data is missing."""

    exit_code = 5


def _onnx_runner(folder: Path):
    from stages import onnxrt

    sess = onnxrt.session(folder / "model.onnx", {"threads": 1})
    names = [i.name for i in sess.get_inputs()]
    out_names = [o.name for o in sess.get_outputs()]

    def run(tensors: list[tuple[str, Any]]) -> dict[str, Any]:
        by_name = all(n in names for n, _ in tensors)
        feeds = {(n if by_name else names[i]): v for i, (n, v) in enumerate(tensors)}
        return onnxrt.run(sess, feeds, str(folder))

    return run, out_names


def _frozen_runner(folder: Path, manifest: dict):
    from stages.convert.tf_models import import_tf
    from stages.convert.tf_stage import frozen_runner

    import_tf()
    inputs, outputs = manifest["model"]["inputs"], manifest["model"]["outputs"]
    run_named = frozen_runner(folder / "model.pb", inputs, outputs)
    return (lambda tensors: run_named(dict(tensors))), [o["name"] for o in outputs]


def _keras_runner(path: Path, manifest: dict):
    from stages.convert.tf_models import import_tf

    import_tf()
    import warnings

    import keras

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = keras.models.load_model(path, safe_mode=True, compile=False)
    (out,) = [o["name"] for o in manifest["model"]["outputs"]]
    return (lambda tensors: {out: model(tensors[0][1], training=False).numpy()}), [out]


def verify(folder: Path) -> dict[str, Any]:
    """Run every staged model file in `folder` on its golden data; raise VerifyError with the numbers."""
    from stages.validate import Comparison

    folder = Path(folder)
    manifest_path = folder.with_name(f"{folder.name}.manifest.json")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VerifyError(f"{manifest_path}: no manifest", fix="give a staged model folder, registry/<format>/<name>") from None
    sets = sorted(folder.glob("test_data_set_*"), key=lambda p: int(p.name.rsplit("_", 1)[1]))
    if not folder.is_dir() or not any(folder.iterdir()):
        raise VerifyError(f"{folder}: the staged files are not here", fix=f"run `dvc pull {folder.as_posix()}`")
    if not sets:
        raise VerifyError(f"{folder}: no test_data_set_* (golden data) beside the model",
                          fix="restage it with this version of the registry (`dvc repro`)")
    validation = manifest.get("validation") or {}
    runners = {}
    if (folder / "model.onnx").is_file():
        runners["model.onnx"] = _onnx_runner(folder)
    if (folder / "model.pb").is_file():
        runners["model.pb"] = _frozen_runner(folder, manifest)
    for name in ("model.keras", "model.h5"):
        if (folder / name).is_file():
            runners[name] = _keras_runner(folder / name, manifest)
    if not runners:
        raise VerifyError(f"{folder}: no model file (model.onnx, model.pb, model.keras, model.h5)",
                          fix=f"run `dvc pull {folder.as_posix()}`")
    atol, rtol = float(validation.get("atol") or 1e-4), float(validation.get("rtol") or 1e-3)
    per_file, failures = {}, []
    for filename, (run, out_names) in sorted(runners.items()):
        comparison = Comparison(atol=atol, rtol=rtol)
        for data in sets:
            inputs, expected = read_tensors(data, "input"), read_tensors(data, "output")
            try:
                actual = run(inputs)
            except StagingError as exc:
                raise VerifyError(f"{folder / filename}: does not run on {data.name}: {exc}",
                                  fix="the staged file or its golden data is damaged; `dvc pull` it again") from None
            for i, (name, value) in enumerate(expected):
                key = name if name in actual else out_names[i]
                comparison.compare(f"{filename} {data.name}", key, actual[key], value)
            comparison.cases += 1
        per_file[filename] = comparison.record("golden data")
        failures += comparison.failures
    if failures:
        from stages.errors import ParityError

        parity = ParityError(folder.name, failures, fix="")
        raise VerifyError(str(parity), fix="check the runtime versions, or `dvc pull` again")
    return {"model": f"{folder.parent.name}/{folder.name}", "sets": len(sets), "files": per_file}
