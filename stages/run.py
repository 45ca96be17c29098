"""`zoo run registry/onnx/<name> INPUT...`: a staged ONNX model on an image file or a text.

It applies the preprocessing recorded in the manifest (stages.preprocess), runs the model with
ONNX Runtime and reports, per input, the top-k class names with scores when the model has
labels.txt (softmax of the first output, unless it already holds probabilities), else the first
output's shape and L2 norm (an encoder's embedding). Needs only the pulled folder and its manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stages import labels as labels_mod
from stages import preprocess
from stages.errors import RunError


def _manifest(folder: Path) -> dict[str, Any]:
    """The folder's manifest, read by stages.manifest.read: missing or corrupt is one ManifestError line."""
    from stages import manifest

    return manifest.read(folder)


def _scores(values) -> tuple[Any, str]:
    import numpy as np

    v = np.asarray(values, dtype=np.float64).ravel()
    if v.min() >= 0 and abs(v.sum() - 1.0) < 1e-3:
        return v, "probability"
    e = np.exp(v - v.max())
    return e / e.sum(), "softmax"


def run(folder: Path, inputs: list[str], top_k: int = 5) -> dict[str, Any]:
    import numpy as np

    from stages import onnxrt
    from stages.inputs import shapes

    folder = Path(folder)
    manifest = _manifest(folder)
    if manifest.get("format") != "onnx" or not (folder / "model.onnx").is_file():
        hint = f"run `dvc pull {folder.as_posix()}`" if manifest.get("format") == "onnx" else \
            "zoo run takes ONNX models: use registry/onnx/<name> (a card's `targets: [..., onnx]`)"
        raise RunError(f"{folder}: no model.onnx here", fix=hint)
    pre = manifest.get("preprocessing")
    if not pre or pre.get("type") not in ("image", "text"):
        raise RunError(f"{folder}: the manifest records no image or text preprocessing "
                       f"({(pre or {}).get('note', 'none')})", fix="feed this model raw tensors with your own code")
    sess = onnxrt.session(folder / "model.onnx", {"threads": 1})
    specs = [(i["name"], i["dtype"], i["shape"]) for i in manifest["model"]["inputs"]]
    names = labels_mod.read(folder)
    out_name = sess.get_outputs()[0].name
    results = []
    for value in inputs:
        if pre["type"] == "image":
            feeds = {specs[0][0]: preprocess.load_image(pre, Path(value)).astype(specs[0][1])}
        else:
            feeds = preprocess.encode_text(pre, folder, value, specs)
        output = onnxrt.run(sess, feeds, f"{folder}: {value}")[out_name]
        row: dict[str, Any] = {"input": value, "output": out_name, "shapes": shapes(feeds)}
        if names and np.asarray(output).ndim > 2:
            raise RunError(f"{folder}: output {out_name} has shape {list(np.shape(output))}: scores per position "
                           "(token classification, segmentation), which zoo run does not render",
                           fix="run the model with your own code; labels.txt names its last axis")
        if names:
            scores, how = _scores(output[0])
            if scores.size != len(names):
                raise RunError(f"{folder}: {scores.size} scores for {len(names)} class names in labels.txt",
                               fix="labels.txt does not belong to this model; `dvc pull` the folder again")
            order = np.argsort(-scores, kind="stable")[:top_k]
            row["scores"] = how
            row["top"] = [{"index": int(i), "label": names[i], "score": float(f"{scores[i]:.6g}")} for i in order]
        else:
            emb = np.asarray(output, dtype=np.float64)
            row["shape"] = list(emb.shape)
            row["norm"] = round(float(np.linalg.norm(emb)), 6)
        results.append(row)
    return {"model": f"{folder.parent.name}/{folder.name}", "preprocessing": pre["type"], "results": results}


def render(result: dict[str, Any]) -> str:
    lines = []
    for row in result["results"]:
        lines.append(f"{result['model']}: {row['input']}")
        if "top" in row:
            lines += [f"  {t['score']:.4f}  {t['label']}  (#{t['index']})" for t in row["top"]]
        else:
            lines.append(f"  {row['output']}: shape {row['shape']}, L2 norm {row['norm']:.4f}")
    return "\n".join(lines) + "\n"
