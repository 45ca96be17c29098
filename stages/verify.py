"""`zoo verify registry/<format>/<name>`: a staged model's bytes checked, then run on its golden data.

First every file of the folder is checked against the manifest's `files` (size, then a streamed
sha256; stages.manifest.check_files): a flipped bit in a weight still loads and runs within tolerance, so the
golden data alone would not catch it, and a missing or extra file means the folder is not what git
recorded. Then each staged file is run on every `test_data_set_*` beside it (ONNX Runtime for
`model.onnx`, TensorFlow for `model.pb`, Keras with `safe_mode=True` for `model.keras` and
`model.h5`), fed by tensor name, and its outputs compared with the golden outputs (computed by the
source framework) within the manifest's tolerances. It needs only that folder and its manifest: a
fresh clone after `dvc pull registry/<format>/<name>`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from stages import golden
from stages.errors import ParityError, StagingError, VerifyError

Runner = Callable[[dict[str, Any]], dict[str, Any]]


def _onnx_runner(folder: Path, manifest: dict) -> Runner:
    from stages import onnxrt

    sess = onnxrt.session(folder / "model.onnx", {"threads": 1})
    return lambda feeds: onnxrt.run(sess, feeds, str(folder))


def _frozen_runner(folder: Path, manifest: dict) -> Runner:
    from stages.convert.tensorflow import frozen_runner
    from stages.frameworks import import_tf

    import_tf()
    return frozen_runner(folder / "model.pb", manifest["model"]["inputs"], manifest["model"]["outputs"])


def _keras_runner(path: Path, manifest: dict) -> Runner:
    import warnings

    from stages.frameworks import import_tf

    import_tf()
    import keras

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = keras.models.load_model(path, safe_mode=True, compile=False)
    (inp,) = [i["name"] for i in manifest["model"]["inputs"]]
    (out,) = [o["name"] for o in manifest["model"]["outputs"]]
    return lambda feeds: {out: model(feeds[inp], training=False).numpy()}


RUNNERS = {"model.onnx": _onnx_runner, "model.pb": _frozen_runner}
KERAS_FILES = ("model.keras", "model.h5")


def verify(folder: Path) -> dict[str, Any]:
    """Check `folder`'s bytes against its manifest (IntegrityError), then run every staged model file on its
    golden data (VerifyError with the numbers)."""
    from stages import manifest as manifests
    from stages.validate import Comparison, tolerances

    folder = Path(folder)
    manifest = manifests.read(folder)
    data_sets = golden.sets(folder)
    if not folder.is_dir() or not any(folder.iterdir()):
        raise VerifyError(f"{folder}: the staged files are not here", fix=f"run `dvc pull {folder.as_posix()}`")
    checked, _ = manifests.check_files(folder, manifest)
    if not data_sets:
        raise VerifyError(f"{folder}: no test_data_set_* (golden data) beside the model",
                          fix="restage it with this version of the registry (`dvc repro`)")
    runners = {name: make(folder, manifest) for name, make in RUNNERS.items() if (folder / name).is_file()}
    runners |= {name: _keras_runner(folder / name, manifest) for name in KERAS_FILES if (folder / name).is_file()}
    if not runners:
        raise VerifyError(f"{folder}: no model file (model.onnx, model.pb, model.keras, model.h5)",
                          fix=f"run `dvc pull {folder.as_posix()}`")
    atol, rtol = tolerances(None, {}, recorded=manifest.get("validation") or {})
    inputs = [i["name"] for i in manifest["model"]["inputs"]]
    outputs = [o["name"] for o in manifest["model"]["outputs"]]
    per_file, failures = {}, []
    for filename, run in sorted(runners.items()):
        comparison = Comparison(atol=atol, rtol=rtol)
        for data in data_sets:
            where = f"{folder / filename} on {data.name}"
            try:
                feeds = golden.by_name(golden.read_tensors(data, "input"), inputs, where)
                expected = golden.by_name(golden.read_tensors(data, "output"), outputs, where, "outputs")
                actual = run(feeds)
            except StagingError as exc:
                raise VerifyError(f"{where}: does not run: {exc}",
                                  fix="the staged file or its golden data is damaged; `dvc pull` it again") from None
            for name, value in expected.items():
                comparison.compare(f"{filename} {data.name}", name, actual[name], value)
            comparison.cases += 1
        per_file[filename] = comparison.record("golden data")
        failures += comparison.failures
    if failures:
        parity = ParityError(folder.name, failures, fix="")
        raise VerifyError(str(parity), fix="check the runtime versions, or `dvc pull` again")
    return {"model": f"{folder.parent.name}/{folder.name}", "sets": len(data_sets), "files": per_file,
            "bytes": {"files": checked, "ok": True}}
