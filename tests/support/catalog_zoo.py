"""Small git registries for the catalogue (stages.catalog): cards, registry/index.json and manifests
written by hand, in the shape real staging writes them (taken from the demo zoo's manifests), so a
test builds a zoo with releases in a fraction of a second: no DVC, no staging, no download.

`two_releases(root)` is the tests' and the browser test's registry; `bench_catalog(n)` times a
catalogue build of an n-card registry with two releases, from git alone (for tests/bench.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

GIT_ENV = {"GIT_AUTHOR_NAME": "zoo", "GIT_AUTHOR_EMAIL": "zoo@localhost", "GIT_COMMITTER_NAME": "zoo",
           "GIT_COMMITTER_EMAIL": "zoo@localhost", "GIT_AUTHOR_DATE": "2025-01-02T03:04:05Z",
           "GIT_COMMITTER_DATE": "2025-01-02T03:04:05Z", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
CONVERTER_VERSIONS = {
    "onnx_zoo": {"onnx": "1.23.2", "onnxruntime": "1.32.0", "python": "3.11"},
    "torch": {"onnx": "1.23.2", "onnxruntime": "1.32.0", "python": "3.11", "torch": "2.14.1", "torchvision": "0.29.1",
              "transformers": "4.57.6"},
    "tensorflow": {"python": "3.11", "tensorflow": "2.21.0", "keras": "3.13.2"},
    "tf2onnx": {"onnx": "1.23.2", "onnxruntime": "1.32.0", "python": "3.11", "tensorflow": "2.21.0", "tf2onnx": "1.17.0"},
}
IMAGENET_PRE = {"color": "RGB", "interpolation": "bilinear", "layout": "NCHW", "mean": [0.485, 0.456, 0.406],
                "resize": 256, "scale": 0.00392156862745098, "size": [224, 224],
                "source": "torchvision ImageClassification of the weights' transforms()", "std": [0.229, 0.224, 0.225],
                "type": "image"}


def hexdigest(*parts: object) -> str:
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()


def _files(name: str, model_file: str, size: int, extra: dict[str, int], salt: str) -> dict:
    files = {model_file: size, "test_data_set_0/input_0.pb": size // 8 + 17, "test_data_set_0/output_0.pb": 4018} | extra
    return {path: {"sha256": hexdigest(name, path, salt), "size": n} for path, n in sorted(files.items())}


def manifest(name: str, kind: str = "onnx-zoo", *, salt: str = "", max_abs: float = 3.58e-07,
             fmt: str | None = None) -> dict:
    """A manifest as stage_card writes it, for one of four shapes of source: `onnx-zoo` (an MNIST-like
    classifier), `torchvision` (ImageNet), `huggingface` (a text encoder), `tfhub` (a frozen graph, or its
    tf2onnx ONNX target with fmt="onnx"). `salt` changes the staged files' hashes (a restaged model)."""
    size = 20_000 + int(hexdigest(name)[:6], 16) % 5_000_000
    validation = {"atol": 0.0001, "cases": 2, "defaulted_dims": [], "max_abs_error": max_abs, "max_rel_error": 0.00161,
                  "passed": max_abs <= 0.0001, "reference": "pytorch model, deterministic inputs", "rtol": 0.001,
                  "runs": [{"case": f"batch{b}", "shapes": {"input": [b, 3, 224, 224]}} for b in (1, 2)]}
    if kind == "onnx-zoo":
        url = f"https://github.com/onnx/models/raw/{hexdigest(name)[:40]}/vision/classification/{name}/model/{name}-8.onnx"
        return _manifest(name, "onnx", kind, "onnx_zoo", f"{name}: an ONNX zoo classifier", "mit", ["vision", "classification"],
                         files=_files(name, "model.onnx", size, {"labels.txt": 20}, salt),
                         source=[{"filename": f"{name}-8.onnx", "role": "model", "sha256": hexdigest(name, "raw"),
                                  "size": size, "url": url}],
                         model={"golden_data": "the ONNX zoo's test_data_set_*", "ir_version": 3, "labels": 10,
                                "opset": {"ai.onnx": 8}, "producer": "CNTK 2.5.1", "staged_as_downloaded": True,
                                "inputs": [{"dtype": "float32", "name": "Input3", "shape": [1, 1, 28, 28]}],
                                "outputs": [{"dtype": "float32", "name": "Plus214_Output_0", "shape": [1, 10]}]},
                         preprocessing={"color": "L", "interpolation": "bilinear", "layout": "NCHW", "mean": [0.0],
                                        "resize": None, "scale": 0.00392156862745098, "size": [28, 28],
                                        "source": "ONNX model zoo README (mnist)", "std": [1.0], "type": "image"},
                         validation=validation | {"cases": 1, "generated_runs": 1, "reference": "zoo test_data_set",
                                                  "runs": [{"case": "zoo0", "shapes": {"Input3": [1, 1, 28, 28]}}]})
    if kind == "torchvision":
        return _manifest(name, "onnx", kind, "torch", f"{name} from torchvision", "bsd-3-clause", ["vision", "classification"],
                         files=_files(name, "model.onnx", size, {"labels.txt": 10488}, salt),
                         source=[{"filename": f"{name}-4698b2fe.pth", "role": "weights", "sha256": hexdigest(name, "raw"),
                                  "size": size, "url": f"https://download.pytorch.org/models/{name}-4698b2fe.pth"}],
                         model={"architecture": f"torchvision.models.{name}", "exporter": "dynamo", "ir_version": 10,
                                "golden_data": "test_data_set_0: outputs computed by PyTorch 2.14.1", "labels": 1000,
                                "opset": {"ai.onnx": 18}, "parameters": size // 4, "producer": "pytorch 2.14.1",
                                "inputs": [{"dtype": "float32", "name": "input", "shape": ["batch", 3, 224, 224]}],
                                "outputs": [{"dtype": "float32", "name": "logits", "shape": ["batch", 1000]}]},
                         preprocessing=IMAGENET_PRE, validation=validation)
    if kind == "huggingface":
        repo, revision = f"zoo-fixtures/{name}", hexdigest(name, "revision")[:40]
        tokenizer = ["special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"]
        return _manifest(name, "onnx", kind, "torch", f"{name}: a BERT text encoder", "apache-2.0", ["text", "embedding"],
                         files=_files(name, "model.onnx", size, {f: 300 + i for i, f in enumerate(tokenizer)}, salt),
                         source=[{"filename": f, "hf_path": f, "hf_repo": repo, "hf_revision": revision, "role": "repo",
                                  "sha256": hexdigest(name, f), "size": 500 + i}
                                 for i, f in enumerate(["config.json", "model.safetensors", *tokenizer])],
                         model={"architecture": "BertModel", "exporter": "dynamo", "ir_version": 10, "opset": {"ai.onnx": 18},
                                "task": "feature-extraction", "producer": "pytorch 2.14.1",
                                "inputs": [{"dtype": "int64", "name": n, "shape": ["batch", "sequence"]}
                                           for n in ("input_ids", "attention_mask", "token_type_ids")],
                                "outputs": [{"dtype": "float32", "name": "last_hidden_state", "shape": ["batch", "sequence", 32]}]},
                         preprocessing={"files": tokenizer, "max_length": 64, "source": "the repo's tokenizer files",
                                        "tokenizer": "tokenizer.json", "type": "text"},
                         validation=validation | {"runs": [{"case": "batch1-seq8", "shapes": {"input_ids": [1, 8]}}]})
    if kind == "tfhub":
        fmt = fmt or "tensorflow"
        onnx = fmt == "onnx"
        model = {"handle": f"https://tfhub.dev/zoo-fixtures/{name}/1", "labels": 10, "signature": "serving_default",
                 "inputs": [{"dtype": "float32", "name": "images", "shape": ["batch", 32, 32, 3]}],
                 "outputs": [{"dtype": "float32", "name": "probabilities", "shape": ["batch", 10]}]}
        model |= ({"opset": {"ai.onnx": 17, "ai.onnx.ml": 2}, "exporter": "tf2onnx 1.17.0", "layout": "NHWC"} if onnx else
                  {"tensorflow": "2.21.0", "frozen_graph": "model.pb", "nodes": 37,
                   "runtime": "run with grappler remapping off"})
        return _manifest(name, fmt, kind, "tf2onnx" if onnx else "tensorflow", f"{name}: a TF Hub classifier",
                         "apache-2.0", ["vision", "image-classification"],
                         files=_files(name + fmt, "model.onnx" if onnx else "model.pb", size, {"labels.txt": 80}, salt),
                         source=[{"filename": "saved_model.tar.gz", "role": "archive", "sha256": hexdigest(name, "raw"),
                                  "size": 12074, "url": f"https://tfhub.dev/zoo-fixtures/{name}/1?tf-hub-format=compressed"}],
                         model=model, preprocessing={"color": "RGB", "interpolation": "bilinear", "layout": "NHWC",
                                                     "mean": [0.0, 0.0, 0.0], "resize": None, "scale": 0.00392156862745098,
                                                     "size": [32, 32], "source": "TF Hub image module convention",
                                                     "std": [1.0, 1.0, 1.0], "type": "image"},
                         validation=validation | {"files": ["model.onnx" if onnx else "model.pb"], "max_abs_error": 0.0})
    raise ValueError(kind)


def _manifest(name, fmt, kind, converter, description, licence, tags, *, files, source, model, preprocessing,
              validation) -> dict:
    return {"converter": {"name": converter, "params_section": converter.replace("onnx_zoo", "onnx"),
                          "params_sha256": hexdigest(converter, "params"), "versions": CONVERTER_VERSIONS[converter]},
            "description": description, "files": files, "format": fmt, "license": licence, "model": model, "name": name,
            "preprocessing": preprocessing, "schema": 1, "source": {"files": source, "kind": kind}, "tags": tags,
            "validation": validation}


CARD_FORMAT = {"onnx-zoo": "onnx", "torchvision": "onnx", "huggingface": "onnx", "tfhub": "tensorflow"}
CONVERTER = {"onnx-zoo": "onnx_zoo", "torchvision": "torch", "huggingface": "torch", "tfhub": "tensorflow"}


def write_zoo(root: Path, cards: dict[str, str], manifests: dict[str, dict]) -> None:
    """Write registry/: `cards` maps a card name to its source kind (a `tfhub` card also targets ONNX);
    `manifests` maps an artifact name (`<name>` or `<name>-onnx`) to its manifest. Replaces what was there."""
    registry = root / "registry"
    for old in [*registry.glob("*/*.yaml"), *registry.glob("*/*.manifest.json")]:
        old.unlink()
    index: dict = {"cards": {}, "converters": {c: {} for c in sorted(set(CONVERTER.values()) | {"tf2onnx"})}, "shards": 1}
    for name, kind in sorted(cards.items()):
        fmt = CARD_FORMAT[kind]
        card = f"registry/{fmt}/{name}.yaml"
        index["cards"][name] = {"card": card, "dvcfile": "registry/_pipeline/0000/dvc.yaml", "format": fmt, "kind": kind,
                                "pins": hexdigest(name, "pins")[:16],
                                "source": {"kind": kind, "sha256": hexdigest(name, "raw"),
                                           "url": f"https://example.org/{name}/model.bin"}}
        index["converters"][CONVERTER[kind]][name] = {"card": card, "format": fmt}
        targets = ""
        if kind == "tfhub":
            index["converters"]["tf2onnx"][name] = {"card": card, "format": "onnx"}
            targets = "targets: [tensorflow, onnx]\n"
        (root / card).parent.mkdir(parents=True, exist_ok=True)
        (root / card).write_text(f"name: {name}\nformat: {fmt}\ndescription: {name} ({kind})\nlicense: mit\n"
                                 f"tags: [vision]\n{targets}source:\n  kind: {kind}\n")
    (registry / "index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    for data in manifests.values():
        path = registry / data["format"] / f"{data['name']}.manifest.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], env=os.environ | GIT_ENV, check=True,
                          capture_output=True, text=True).stdout


def commit_and_tag(root: Path, message: str, tag: str | None = None) -> None:
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)
    if tag:
        git(root, "tag", "-a", "-m", f"zoo {tag[5:]}", tag)


def first_release() -> tuple[dict[str, str], dict[str, dict]]:
    cards = {"mnist": "onnx-zoo", "squeezenet": "onnx-zoo", "tv-squeezenet": "torchvision", "tiny-bert": "huggingface",
             "tfhub-tiny": "tfhub"}
    manifests = {n: manifest(n, k) for n, k in cards.items()}
    manifests["tfhub-tiny-onnx"] = manifest("tfhub-tiny", "tfhub", fmt="onnx")
    return cards, manifests


def two_releases(root: Path) -> Path:
    """A registry repo at `root`: zoo-v1.0.0 with six artifacts (four kinds, a TF Hub card's ONNX target);
    zoo-v1.1.0 restages mnist (new file hashes, a larger error) and removes squeezenet. Returns `root`."""
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main")
    cards, manifests = first_release()
    write_zoo(root, cards, manifests)
    commit_and_tag(root, "stage the zoo", "zoo-v1.0.0")
    del cards["squeezenet"], manifests["squeezenet"]
    manifests["mnist"] = manifest("mnist", "onnx-zoo", salt="restaged", max_abs=2.5e-06)
    write_zoo(root, cards, manifests)
    commit_and_tag(root, "restage mnist, remove squeezenet", "zoo-v1.1.0")
    return root


KINDS = ("onnx-zoo", "torchvision", "huggingface", "tfhub")


def n_cards(root: Path, n: int) -> Path:
    """A registry repo of n cards (the four kinds in turn; TF Hub ones with an ONNX target) and two releases:
    zoo-v1.1.0 restages every tenth model and removes the last card."""
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main")
    cards = {f"m{i:04d}": KINDS[i % len(KINDS)] for i in range(n)}
    manifests = {}
    for name, kind in cards.items():
        manifests[name] = manifest(name, kind)
        if kind == "tfhub":
            manifests[f"{name}-onnx"] = manifest(name, kind, fmt="onnx")
    write_zoo(root, cards, manifests)
    commit_and_tag(root, f"{n} cards", "zoo-v1.0.0")
    for i, (name, kind) in enumerate(sorted(cards.items())):
        if i % 10 == 0 and kind != "tfhub":
            manifests[name] = manifest(name, kind, salt="restaged", max_abs=1e-05 * (1 + i))
    last = sorted(cards)[-1]
    del cards[last]
    manifests = {a: m for a, m in manifests.items() if m["name"] != last}
    write_zoo(root, cards, manifests)
    commit_and_tag(root, "restage, remove one", "zoo-v1.1.0")
    return root


def bench_catalog(n: int) -> float:
    """Seconds to build the catalogue of an n-card registry with two releases, at its latest release, from
    git alone (the repository is made first, untimed)."""
    from stages.catalog import build

    with tempfile.TemporaryDirectory(prefix="zoo-catalog-bench-") as tmp:
        root = n_cards(Path(tmp) / "registry", n)
        started = time.perf_counter()
        build(root, "zoo-v1.1.0", Path(tmp) / "site")
        return time.perf_counter() - started
