"""The PyTorch-kind mirror fixtures (tests.support.mirror.torch_fixtures): served by a real MirrorServer on
127.0.0.1, read with the real clients (huggingface_hub, transformers, torch.hub, torch.jit), and
byte-stable from one build to the next, in this process and in another with another hash seed."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import requests
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("timm")
pytest.importorskip("transformers")

from tests.support.mirror import torch_fixtures as tf  # noqa: E402
from tests.support.mirror.server import MirrorServer  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
GOOD = ("tv-squeezenet", "timm-test-effnet", "tiny-bert", "tiny-bert-cls", "mar-scripted", "mar-eager", "hub-tiny")
BAD = ("bad_mar_traversal", "bad_mar_absolute", "unsafe_pickle_repo", "hub_without_trust", "branchy_hub")
TOP_KEYS = {"name", "format", "description", "license", "tags", "source"}
SOURCE_KEYS = {
    "torchvision": {"kind", "model", "weights", "url", "sha256"},
    "timm": {"kind", "model", "revision"},
    "huggingface": {"kind", "framework", "repo", "revision", "task"},
    "torchserve": {"kind", "url", "sha256", "input_shape"},
    "torchhub": {"kind", "repo", "ref", "sha256", "entrypoint", "kwargs", "input_shape"},
}
SENTENCE = "The quick brown fox jumps over the lazy dog!"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def build_all(root: Path) -> tuple[dict, dict[str, str]]:
    fixtures = tf.build_torch_mirror(root)
    return fixtures, {name: getattr(tf, name)(root) for name in BAD}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("torch-mirror")
    fixtures, bad = build_all(root)
    return root, fixtures, bad


@pytest.fixture(scope="module")
def root(built) -> Path:
    return built[0]


@pytest.fixture(scope="module")
def fixtures(built) -> dict:
    return built[1]


@pytest.fixture(scope="module")
def bad(built) -> dict[str, str]:
    return built[2]


@pytest.fixture(scope="module")
def server(root):
    with MirrorServer(root) as mirror:
        yield mirror


def served(server: MirrorServer, url: str) -> bytes:
    """GET an upstream https URL through the mirror's `/HOST/PATH`."""
    assert url.startswith("https://")
    resp = requests.get(f"{server.url}/{url[len('https://'):]}", timeout=10)
    assert resp.status_code == 200, (url, resp.status_code, resp.text[:200])
    return resp.content


def source(card: str) -> dict:
    return yaml.safe_load(card)["source"]


def mar_path(root: Path, card: str) -> Path:
    return root / source(card)["url"][len("https://"):]


# ----------------------------------------------------------------------------- module and cards

def test_importing_the_module_imports_no_framework():
    code = ("import sys, tests.support.mirror.torch_fixtures; "
            "print([m for m in ('torch', 'torchvision', 'timm', 'transformers', 'safetensors') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_card_has_exactly_the_schema_keys(fixtures, bad):
    assert sorted(fixtures) == sorted(GOOD)
    cards = {name: f.card for name, f in fixtures.items()} | bad
    for label, text in cards.items():
        data = yaml.safe_load(text)
        assert set(data) - {"trust_code", "preprocessing", "labels"} == TOP_KEYS, label
        # kinds without preprocessing metadata (torch.hub, TorchServe) declare it in the card
        assert ("preprocessing" in data) == (data["source"]["kind"] in ("torchhub", "torchserve")), label
        assert data["format"] == "onnx" and isinstance(data["tags"], list) and data["description"], label
        assert re.fullmatch(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?", data["name"]), label
        assert set(data["source"]) == SOURCE_KEYS[data["source"]["kind"]], label
    names = {label: yaml.safe_load(text)["name"] for label, text in cards.items()}
    assert names["hub_without_trust"] == "hub-tiny" and len(set(names.values())) == len(names) - 1


def test_cards_pin_what_each_kind_needs(fixtures, bad):
    trust = {n: yaml.safe_load(f.card).get("trust_code") for n, f in fixtures.items()}
    assert trust == {**dict.fromkeys(GOOD), "mar-eager": True, "hub-tiny": True}
    tv = source(fixtures["tv-squeezenet"].card)
    assert (tv["model"], tv["weights"]) == ("squeezenet1_1", "IMAGENET1K_V1")
    assert tv["url"] == f"https://download.pytorch.org/models/squeezenet1_1-{tv['sha256'][:8]}.pth"
    assert tv["url"] != "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth"  # not the real file's name
    assert source(fixtures["timm-test-effnet"].card)["model"] == "test_efficientnet.r160_in1k"
    for name, task in (("tiny-bert", "feature-extraction"), ("tiny-bert-cls", "text-classification")):
        src = source(fixtures[name].card)
        assert (src["framework"], src["repo"], src["task"]) == ("pytorch", f"zoo-fixtures/{name}", task)
    hub = source(fixtures["hub-tiny"].card)
    assert hub["kwargs"] == {"width": 8} and hub["input_shape"] == [1, 3, 32, 32] and hub["entrypoint"] == "tiny_cnn"
    assert yaml.safe_load(bad["hub_without_trust"]) == {k: v for k, v in yaml.safe_load(fixtures["hub-tiny"].card).items()
                                                        if k != "trust_code"}
    branchy = yaml.safe_load(bad["branchy_hub"])
    assert branchy["trust_code"] is True
    assert {k: branchy["source"][k] for k in ("entrypoint", "kwargs", "input_shape")} == {
        "entrypoint": "branchy", "kwargs": {}, "input_shape": [1, 4]}
    unsafe = source(bad["unsafe_pickle_repo"])
    assert (unsafe["kind"], unsafe["framework"], unsafe["task"]) == ("huggingface", "pytorch", "feature-extraction")
    for text in (*(f.card for f in fixtures.values()), *bad.values()):
        for key in ("revision", "ref"):
            if key in source(text):
                assert len(source(text)[key]) == 40 and int(source(text)[key], 16) >= 0
    assert tf.tv_card_for(tv["url"], tv["sha256"]) == fixtures["tv-squeezenet"].card


def test_cards_load_with_the_registry_parser(fixtures, bad):
    from stages.card import parse_card
    from stages.errors import CardError

    for text in (*(f.card for f in fixtures.values()), *(bad[n] for n in BAD if n != "hub_without_trust")):
        data = yaml.safe_load(text)
        card = parse_card(Path(f"registry/onnx/{data['name']}.yaml"), data)
        assert card.kind == data["source"]["kind"] and card.trust_code is bool(data.get("trust_code"))
    with pytest.raises(CardError, match="trust_code"):
        parse_card(Path("registry/onnx/hub-tiny.yaml"), yaml.safe_load(bad["hub_without_trust"]))


# ----------------------------------------------------------------------------- serving and stability

def test_every_fixture_file_is_served_at_its_url_with_the_pinned_hash(server, fixtures, bad):
    for fixture in fixtures.values():
        assert fixture.files
        for rel, digest in fixture.files.items():
            assert sha(served(server, f"https://{rel}")) == digest, rel
        src = source(fixture.card)
        if "sha256" in src:
            url = src.get("url") or f"https://github.com/{src['repo']}/archive/{src['ref']}.zip"
            assert sha(served(server, url)) == src["sha256"]
            assert {url[len("https://"):]: src["sha256"]} == fixture.files
        else:  # Hugging Face: the files are the pinned commit's
            repo = src.get("repo") or f"timm/{src['model']}"
            assert all(rel.startswith(f"huggingface.co/{repo}/resolve/{src['revision']}/") for rel in fixture.files)
    for name in ("bad_mar_traversal", "bad_mar_absolute"):
        src = source(bad[name])
        assert sha(served(server, src["url"])) == src["sha256"]


def test_builds_are_byte_identical_in_process_and_across_processes(root, fixtures, bad, tmp_path):
    """Twice here, and once more in a new process with another PYTHONHASHSEED (set iteration order
    changes there: that is what made torch.jit.script output unstable)."""
    assert not (root / "_routes.json").exists()  # the ONNX fixtures' routes are never touched
    again, again_bad = build_all(tmp_path / "again")
    assert {n: f.card for n, f in again.items()} == {n: f.card for n, f in fixtures.items()} and again_bad == bad
    first = snapshot(root)
    assert snapshot(tmp_path / "again") == first
    code = ("import sys, warnings; warnings.simplefilter('ignore'); from pathlib import Path; "
            "from tests.support.mirror import torch_fixtures as tf; root = Path(sys.argv[1]); tf.build_torch_mirror(root); "
            f"[getattr(tf, n)(root) for n in {BAD!r}]")
    env = {**os.environ, "PYTHONHASHSEED": "4242"}
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "other")], cwd=REPO_ROOT, env=env, check=True,
                   capture_output=True)
    other = snapshot(tmp_path / "other")
    assert sorted(other) == sorted(first)
    assert [rel for rel in first if other[rel] != first[rel]] == []
    for rel, data in first.items():  # no local path leaks into any file (the venv's, the temp dir's)
        assert str(REPO_ROOT).encode() not in data and b"site-packages" not in data, rel


def test_rebuilding_into_a_served_root_changes_nothing(root, server, fixtures):
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and p.name != "refs.json"}
    assert tf.build_torch_mirror(root) == fixtures
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


# ----------------------------------------------------------------------------- each kind, read as its upstream is

def test_torchvision_weights_load_with_weights_only(root, fixtures):
    import torchvision

    rel = next(iter(fixtures["tv-squeezenet"].files))
    state = torch.load(io.BytesIO((root / rel).read_bytes()), weights_only=True)
    model = torchvision.models.squeezenet1_1(weights=None, num_classes=1000)
    model.load_state_dict(state, strict=True)
    assert model.eval()(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)


def test_mar_archives_are_torch_model_archiver_shaped(root, fixtures):
    for name, model_file in (("mar-scripted", None), ("mar-eager", "model.py")):
        with zipfile.ZipFile(mar_path(root, fixtures[name].card)) as zf:
            names = zf.namelist()
            assert names == sorted(names) and "index_to_name.json" in names
            assert all(i.date_time == tf.ZIP_DATE and i.compress_type == zipfile.ZIP_DEFLATED for i in zf.infolist())
            manifest = json.loads(zf.read("MAR-INF/MANIFEST.json"))
            assert manifest["runtime"] == "python" and manifest["archiverVersion"] == "0.12.0"
            assert manifest["createdOn"] == tf.MAR_CREATED_ON
            model = manifest["model"]
            assert model["handler"] == "image_classifier" and model["modelVersion"] == "1.0"
            assert model.get("modelFile") == model_file
            assert model["serializedFile"] in names and (model_file is None or model_file in names)
            assert len(json.loads(zf.read("index_to_name.json"))) == 10
            serialized, code = zf.read(model["serializedFile"]), model_file and zf.read(model_file)
        x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        if model_file is None:
            assert not [n for n in zipfile.ZipFile(io.BytesIO(serialized)).namelist() if n.endswith(".debug_pkl")]
            module = torch.jit.load(io.BytesIO(serialized))
            assert module(x).shape == (2, 10)
        else:
            namespace: dict = {"__name__": "mar_model"}
            exec(compile(code, "model.py", "exec"), namespace)  # noqa: S102 - our own fixture's code
            classes = [c for c in namespace.values() if isinstance(c, type) and issubclass(c, torch.nn.Module)
                       and c.__module__ == "mar_model"]
            assert [c.__name__ for c in classes] == ["TinyCNN"]
            module = classes[0]()
            module.load_state_dict(torch.load(io.BytesIO(serialized), weights_only=True), strict=True)
            assert module.eval()(x).shape == (2, 10)


@pytest.mark.parametrize("builder,evil", [("bad_mar_traversal", "../evil.py"), ("bad_mar_absolute", "/tmp/evil.py")])
def test_bad_mars_hold_the_unsafe_entry_beside_a_valid_manifest(root, bad, builder, evil):
    with zipfile.ZipFile(mar_path(root, bad[builder])) as zf:
        assert evil in zf.namelist()
        manifest = json.loads(zf.read("MAR-INF/MANIFEST.json"))
        assert manifest["model"]["serializedFile"] in zf.namelist()


def test_hub_archive_loads_with_torch_hub(root, fixtures, tmp_path):
    src = source(fixtures["hub-tiny"].card)
    archive = root / f"github.com/{src['repo']}/archive/{src['ref']}.zip"
    with zipfile.ZipFile(archive) as zf:
        top = f"tiny-hub-{src['ref']}/"
        assert zf.comment == src["ref"].encode() and all(n.startswith(top) for n in zf.namelist())
        assert all(not n.startswith("/") and ".." not in n.split("/") for n in zf.namelist())
        zf.extractall(tmp_path)
    repo = str(tmp_path / top)
    state = torch.get_rng_state()
    model = torch.hub.load(repo, "tiny_cnn", source="local", trust_repo=True, **src["kwargs"])
    twin = torch.hub.load(repo, "tiny_cnn", source="local", trust_repo=True, width=8)
    assert torch.equal(torch.get_rng_state(), state)  # seeded inside, without touching the caller's RNG
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert model(x).shape == (2, 10) and torch.equal(model(x), twin(x))
    branchy = torch.hub.load(repo, "branchy", source="local", trust_repo=True)
    up, down = torch.ones(1, 4), -torch.ones(1, 4)
    assert torch.equal(branchy(up), up * 2) and torch.equal(branchy(down), down * -1)


def hf_snapshot(server: MirrorServer, repo: str, revision: str, cache: Path) -> Path:
    """Every file of the repo at `revision`, through the real huggingface_hub client."""
    from huggingface_hub import HfApi, hf_hub_download

    endpoint = f"{server.url}/huggingface.co"
    files = HfApi(endpoint=endpoint).list_repo_files(repo, revision=revision)
    paths = [Path(hf_hub_download(repo, name, revision=revision, cache_dir=cache, endpoint=endpoint)) for name in files]
    folder = paths[0].parent
    assert all(p.parent == folder for p in paths) and folder.name == revision
    return folder


@pytest.fixture()
def hub_env(monkeypatch):
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def test_hf_repos_download_and_load_with_the_real_clients(server, fixtures, tmp_path, hub_env):
    import timm
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoModelForSequenceClassification, BertTokenizerFast

    for name in ("timm-test-effnet", "tiny-bert", "tiny-bert-cls"):
        src = source(fixtures[name].card)
        repo = src.get("repo") or f"timm/{src['model']}"
        folder = hf_snapshot(server, repo, src["revision"], tmp_path / "hf-cache")
        expected = {rel.rsplit("/", 1)[1]: digest for rel, digest in fixtures[name].files.items()}
        assert {p.name: sha(p.read_bytes()) for p in folder.iterdir()} == expected
        if name == "timm-test-effnet":
            config = json.loads((folder / "config.json").read_text())
            assert config["architecture"] == "test_efficientnet" and config["pretrained_cfg"]["tag"] == "r160_in1k"
            assert config["pretrained_cfg"]["input_size"] == [3, 160, 160]
            model = timm.create_model(config["architecture"], pretrained=False, **config["model_args"])
            model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
            assert model.eval()(torch.zeros(1, 3, 160, 160)).shape == (1, config["num_classes"])
            continue
        assert {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"} <= set(expected)
        tokenizer = BertTokenizerFast.from_pretrained(str(folder))
        encoded = tokenizer(SENTENCE, return_tensors="pt")
        ids = encoded["input_ids"][0].tolist()
        assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.convert_ids_to_tokens(ids)[1:4] == ["the", "quick", "brown"]
        cls = AutoModel if name == "tiny-bert" else AutoModelForSequenceClassification
        model = cls.from_pretrained(str(folder), local_files_only=True).eval()
        with torch.no_grad():
            out = model(**encoded)
        if name == "tiny-bert":
            assert out.last_hidden_state.shape == (1, len(ids), 32)
        else:
            assert out.logits.shape == (1, 3) and model.config.id2label == tf.SENTIMENT


def test_unsafe_pickle_needs_weights_only_false_and_the_others_do_not(server, root, fixtures, bad, tmp_path, hub_env):
    src = source(bad["unsafe_pickle_repo"])
    folder = hf_snapshot(server, src["repo"], src["revision"], tmp_path / "hf-cache")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "pytorch_model.bin"]
    data = (folder / "pytorch_model.bin").read_bytes()
    with pytest.raises(pickle.UnpicklingError, match="[Ww]eights only load failed"):
        torch.load(io.BytesIO(data), weights_only=True)
    state = torch.load(io.BytesIO(data), weights_only=False)  # our own harmless class: shows what it would run
    assert isinstance(state.pop("zoo_fixture_payload"), tf.NotATensor)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    pickles = [root / next(iter(fixtures["tv-squeezenet"].files))]
    with zipfile.ZipFile(mar_path(root, fixtures["mar-eager"].card)) as zf:
        pickles.append(io.BytesIO(zf.read("tiny_cnn.pth")))
    for item in pickles:
        assert torch.load(item, weights_only=True)
