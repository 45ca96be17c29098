"""The demo zoo (`make demo`'s cards) is usable without upstream docs: every staged model carries
preprocessing, labels (classifiers), golden data and a licence; each passes `zoo verify` in a fresh
clone after pulling only it; and `zoo run` picks the same top-1 class as the SOURCE framework, run
here with the source's own preprocessing code (torchvision transforms, timm's transform, Keras's
load_img + preprocess_input, onnx's reference evaluator with the ONNX zoo README's transforms).
"""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest

from stages.files import sha256_file
from tests.support import sandbox
from tests.support.demo import ONNX_DEMO, TF_DEMO, TORCH_DEMO, demo_cards, digit_image, picture

pytestmark = pytest.mark.e2e
TARGETS = ("tfhub-tiny-classifier", "keras-mobilenet-v2")  # their cards also stage ONNX (`<name>-onnx`)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, mirror_server, mirror_root, demo_fixtures):
    cards = demo_cards(mirror_root, list(demo_fixtures.values()))
    env = sandbox.env(mirror_server.url)
    with sandbox.S3Server(bucket="zoo-demo-test") as s3:
        repo = sandbox.new_registry(tmp_path_factory.mktemp("demo") / "registry", cards, env, s3)
        sandbox.run(["dvc", "repro"], repo, env)
        sandbox.run(["git", "add", "-A"], repo, env)
        sandbox.run(["git", "commit", "-q", "-m", "stage the demo zoo"], repo, env)
        sandbox.run(["dvc", "push"], repo, env)
        clone = tmp_path_factory.mktemp("demo-clone") / "clone"
        sandbox.run(["git", "clone", "-q", str(repo), str(clone)], repo.parent, env)
        sandbox.configure_remote(clone, s3, env)
        yield {"repo": repo, "clone": clone, "env": env, "cards": cards,
               "images": tmp_path_factory.mktemp("demo-images")}


def folders(zoo) -> list[str]:
    """Every staged folder of the demo zoo: registry/<format>/<name>, ONNX targets included."""
    out = [f"registry/{key}" for key in zoo["cards"]]
    return sorted(out + [f"registry/onnx/{name}" for name in TARGETS])


def manifest(root: Path, folder: str) -> dict:
    return json.loads((root / f"{folder}.manifest.json").read_text())


def test_demo_models_carry_preprocessing_labels_golden_data_and_licences(zoo):
    assert len(folders(zoo)) == len(ONNX_DEMO) + len(TORCH_DEMO) + len(TF_DEMO) + len(TARGETS)
    allowed = {"apache-2.0", "mit", "bsd-3-clause"}
    classifiers = 0
    for folder in folders(zoo):
        data = manifest(zoo["repo"], folder)
        assert data["license"] in allowed, folder
        pre = data["preprocessing"]
        assert pre["type"] in ("image", "text") and pre["source"], folder
        assert {"test_data_set_0/input_0.pb", "test_data_set_0/output_0.pb"} <= set(data["files"]), folder
        assert data["model"]["golden_data"], folder
        if "classification" in " ".join(data["tags"]):
            classifiers += 1
            lines = (zoo["repo"] / folder / "labels.txt").read_text().splitlines()
            assert data["model"]["labels"] == len(lines) > 1 and "labels.txt" in data["files"], folder
    assert classifiers == 8  # mnist, squeezenet, tv-squeezenet, timm, tfhub (x2 formats), keras (x2 formats)


def test_each_model_verifies_in_a_fresh_clone_after_pulling_only_it(zoo):
    clone, env = zoo["clone"], zoo["env"]
    pulled: list[str] = []
    for folder in folders(zoo):
        assert not (clone / folder).exists()
        sandbox.run(["dvc", "pull", folder], clone, env)
        pulled.append(folder)
        present = sorted(f"registry/{p.parent.name}/{p.name}" for p in (clone / "registry").glob("*/*")
                         if p.is_dir() and p.parent.name not in ("_raw", "_pipeline") and any(p.iterdir()))
        assert present == sorted(pulled)  # that model only, no raw downloads
        assert not any(p.is_file() and p.name != ".gitignore" for p in (clone / "registry/_raw").rglob("*"))
        out = sandbox.run(["zoo", "verify", folder], clone, env).stdout
        data = manifest(clone, folder)
        model_files = [f for f in data["files"] if f.startswith("model.") and not f.endswith(".data")]
        assert out.count(" ok\n") == len(model_files) >= 1, (folder, out)


# ----------------------------------------------------------------------------- the source frameworks

def _raw(zoo, name: str, pattern: str) -> Path:
    (path,) = sorted((zoo["repo"] / "registry/_raw" / name).glob(pattern))
    return path


def _onnx_reference(path: Path, x: np.ndarray) -> np.ndarray:
    import onnx
    from onnx.reference import ReferenceEvaluator

    from stages.onnxrt import io_specs

    model = onnx.load(str(path))
    (spec,), _ = io_specs(model)
    return np.asarray(ReferenceEvaluator(model).run(None, {spec.name: x})[0]).ravel()


def source_scores(zoo, name: str, image: Path) -> np.ndarray:
    """The source model's first output for `image`, with the source's own preprocessing code."""
    from PIL import Image

    if name == "mnist":  # the ONNX zoo's README: 28x28 grayscale, scaled to [0, 1]
        with Image.open(image) as img:
            x = np.asarray(img.convert("L").resize((28, 28), Image.Resampling.BILINEAR), np.float32) / 255
        return _onnx_reference(_raw(zoo, name, "*.onnx"), x[None, None])
    if name == "squeezenet":  # the ONNX zoo's README: torchvision's Resize(256), CenterCrop(224), Normalize
        from torchvision import transforms

        t = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                                transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
        with Image.open(image) as img:
            x = t(img.convert("RGB")).unsqueeze(0).numpy()
        return _onnx_reference(_raw(zoo, name, "*.onnx"), x)
    if name == "tv-squeezenet":
        import torch
        import torchvision

        weights = torchvision.models.SqueezeNet1_1_Weights.IMAGENET1K_V1
        model = torchvision.models.squeezenet1_1(weights=None).eval()
        model.load_state_dict(torch.load(_raw(zoo, name, "*.pth"), weights_only=True))
        with Image.open(image) as img, torch.no_grad():
            return model(weights.transforms()(img.convert("RGB")).unsqueeze(0)).numpy().ravel()
    if name == "timm-test-effnet":
        import timm
        import torch
        from safetensors.torch import load_file
        from timm.data import create_transform, resolve_data_config

        config = json.loads(_raw(zoo, name, "config.json").read_text())
        model = timm.create_model(config["architecture"], pretrained=False, num_classes=config["num_classes"]).eval()
        model.load_state_dict(load_file(str(_raw(zoo, name, "model.safetensors"))))
        transform = create_transform(**resolve_data_config({}, pretrained_cfg=config["pretrained_cfg"]))
        with Image.open(image) as img, torch.no_grad():
            return model(transform(img.convert("RGB")).unsqueeze(0)).numpy().ravel()
    if name == "tfhub-tiny-classifier":  # TF Hub's convention: RGB in [0, 1] at the module's size
        import tensorflow as tf

        folder = zoo["images"] / "savedmodel"
        if not folder.exists():
            with tarfile.open(_raw(zoo, name, "*.tar.gz")) as tar:
                tar.extractall(folder, filter="data")
        serve = tf.saved_model.load(str(folder)).signatures["serving_default"]
        with Image.open(image) as img:
            x = np.asarray(img.convert("RGB").resize((32, 32), Image.Resampling.BILINEAR), np.float32)[None] / 255
        return serve(images=tf.constant(x))["probabilities"].numpy().ravel()
    if name == "keras-mobilenet-v2":
        import keras

        model = keras.applications.MobileNetV2(weights=str(_raw(zoo, name, "*.h5")), alpha=0.35,
                                               input_shape=(96, 96, 3))
        x = keras.utils.img_to_array(keras.utils.load_img(image, target_size=(96, 96)))[None]
        x = keras.applications.mobilenet_v2.preprocess_input(x)
        return np.asarray(model(x, training=False)).ravel()
    raise AssertionError(name)


def softmax(v: np.ndarray) -> np.ndarray:
    if v.min() >= 0 and abs(v.sum() - 1) < 1e-3:
        return v
    e = np.exp(v - v.max())
    return e / e.sum()


CLASSIFIERS = ("mnist", "squeezenet", "tv-squeezenet", "timm-test-effnet", "tfhub-tiny-classifier",
               "keras-mobilenet-v2")


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_zoo_run_picks_the_source_frameworks_top1(zoo, name):
    clone, env = zoo["clone"], zoo["env"]
    folder = f"registry/onnx/{name}"
    sandbox.run(["dvc", "pull", folder], clone, env)
    images = [digit_image(zoo["images"] / "seven.png")] if name == "mnist" else []
    images += [picture(zoo["images"] / f"{name}-{i}.png", size, seed=i)
               for i, size in enumerate([(320, 240), (200, 300), (64, 64)])]
    out = json.loads(sandbox.run(["zoo", "run", folder, *map(str, images), "--json", "--top-k", "3"], clone, env).stdout)
    labels = (clone / folder / "labels.txt").read_text().splitlines()
    seen = []
    for image, row in zip(images, out["results"], strict=True):
        expected = softmax(source_scores(zoo, name, image))
        top = row["top"]
        assert top[0]["index"] == int(expected.argmax()) and top[0]["label"] == labels[top[0]["index"]], (name, image)
        # not just the argmax: the scores are the source's, to float32 precision through ONNX Runtime
        assert max(abs(t["score"] - expected[t["index"]]) for t in top) < 1e-4, (name, top, expected[:5])
        seen.append(tuple(t["score"] for t in top))
    assert len(set(seen)) == len(seen)  # the model responds to its input: the comparison has power


def test_zoo_run_on_the_text_encoder_matches_transformers(zoo):
    import torch
    from transformers import AutoModel, AutoTokenizer

    clone, env = zoo["clone"], zoo["env"]
    sandbox.run(["dvc", "pull", "registry/onnx/tiny-bert"], clone, env)
    texts = ["a tiny model reads this", "another sentence, longer than the first one"]
    out = json.loads(sandbox.run(["zoo", "run", "registry/onnx/tiny-bert", *texts, "--json"], clone, env).stdout)
    raw = zoo["repo"] / "registry/_raw/tiny-bert"
    tokenizer, model = AutoTokenizer.from_pretrained(str(raw)), AutoModel.from_pretrained(str(raw)).eval()
    for text, row in zip(texts, out["results"], strict=True):
        with torch.no_grad():
            hidden = model(**tokenizer(text, return_tensors="pt")).last_hidden_state.numpy()
        assert row["output"] == "last_hidden_state" and row["shape"] == list(hidden.shape)
        assert abs(row["norm"] - float(np.linalg.norm(hidden))) < 1e-4 * float(np.linalg.norm(hidden))


def test_zoo_run_refuses_what_it_cannot_prepare(zoo, tmp_path):
    clone, env = zoo["clone"], zoo["env"]
    sandbox.run(["dvc", "pull", "registry/onnx/mnist"], clone, env)
    missing = sandbox.run(["zoo", "run", "registry/onnx/mnist", str(tmp_path / "nope.png")], clone, env, check=False)
    assert missing.returncode == 2 and missing.stderr.strip().splitlines() == [
        f"zoo: error: {tmp_path / 'nope.png'}: no such image file; give the path of a PNG or JPEG file"]
    (tmp_path / "text.png").write_text("not an image")
    bad = sandbox.run(["zoo", "run", "registry/onnx/mnist", str(tmp_path / "text.png")], clone, env, check=False)
    assert bad.returncode == 2 and "not an image Pillow can read" in bad.stderr
    keras = sandbox.run(["zoo", "run", "registry/keras/keras-mobilenet-v2", "x.png"], clone, env, check=False)
    assert keras.returncode == 2 and "zoo run takes ONNX models" in keras.stderr


def test_the_catalogue_has_a_page_per_manifest_listing_its_files(zoo, tmp_path):
    """`zoo catalog` on the staged demo zoo, from git alone (HEAD): one index row per manifest, and each
    model's page lists every file of its manifest with its sha256 and size, with nothing flagged missing."""
    import re

    from stages.catalog import build

    index = build(zoo["repo"], "HEAD", tmp_path / "catalog")
    artifacts = {folder: folder.split("/")[2] if folder.removeprefix("registry/") in zoo["cards"]
                 else folder.split("/")[2] + "-onnx" for folder in folders(zoo)}  # a card's ONNX target: <name>-onnx
    assert re.findall(r'<tr data-name="([^"]+)">', index.read_text()) == sorted(artifacts.values())
    for folder, artifact in artifacts.items():
        page = (index.parent / "models" / f"{artifact}.html").read_text()
        listed = {path: (int(size), sha) for path, size, sha in re.findall(
            r'<tr data-path="([^"]+)">.*?data-value="(\d+)".*?<code class="sha256">([0-9a-f]{64})</code>', page)}
        files = manifest(zoo["repo"], folder)["files"]
        assert listed == {p: (f["size"], f["sha256"]) for p, f in files.items()}, artifact
        assert "This manifest is incomplete" not in page and "not recorded" not in page, artifact


def test_zoo_pull_by_name_in_each_format_and_a_target(zoo, tmp_path):
    """`zoo pull` in a fresh clone: an ONNX, a TensorFlow and a Keras card by their names, a card's ONNX
    target as `<name>-onnx`, and one spelled `<format>/<name>`; exactly those folders, every file's
    sha256 the manifest's, and DVC finds them as its lock records them."""
    env = zoo["env"]
    clone = tmp_path / "by-name"
    sandbox.run(["git", "clone", "-q", str(zoo["repo"]), str(clone)], tmp_path, env)
    (clone / ".dvc/config.local").write_bytes((zoo["clone"] / ".dvc/config.local").read_bytes())  # the local S3
    names = {"mnist": "registry/onnx/mnist", "tfhub-tiny-classifier": "registry/tensorflow/tfhub-tiny-classifier",
             "keras-mobilenet-v2": "registry/keras/keras-mobilenet-v2",
             "keras-mobilenet-v2-onnx": "registry/onnx/keras-mobilenet-v2", "onnx/tiny-bert": "registry/onnx/tiny-bert"}
    out = sandbox.run(["zoo", "pull", *names], clone, env).stdout
    assert out.count("every sha256 matches its manifest") == len(names), out
    for folder in names.values():
        assert f"{folder}: " in out
        data = manifest(zoo["repo"], folder)
        got = sorted(p.relative_to(clone / folder).as_posix() for p in (clone / folder).rglob("*") if p.is_file())
        assert got == sorted(data["files"]), folder
        for rel, rec in data["files"].items():
            assert sha256_file(clone / folder / rel) == rec["sha256"], (folder, rel)
    present = sorted(f"registry/{p.parent.name}/{p.name}" for p in (clone / "registry").glob("*/*")
                     if p.is_dir() and p.parent.name not in ("_raw", "_pipeline") and any(p.iterdir()))
    assert present == sorted(names.values())
    assert not any(p.is_file() and p.name != ".gitignore" for p in (clone / "registry/_raw").rglob("*"))
    status = sandbox.run(["dvc", "status", *names.values()], clone, env).stdout  # their stages
    assert re.search(r"deleted:\s+registry/_raw/mnist\s*$", status, re.M), status  # not pulled: reported
    for folder in names.values():  # pulled: exactly as the lock records them
        assert not re.search(rf":\s+{re.escape(folder)}\s*$", status, re.M), (folder, status)
    again = sandbox.run(["zoo", "pull", "mnist"], clone, env).stdout
    assert "(already there)" in again, again
