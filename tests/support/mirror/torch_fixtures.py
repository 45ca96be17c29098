"""PyTorch-ecosystem fixtures for the offline mirror: one per source kind, in each upstream's real layout.

Nothing is downloaded: every model is a real architecture (torchvision's squeezenet1_1, timm's
test_efficientnet, transformers' BERT, a small CNN) built here with seeded random weights, and
serialised the way its upstream serialises it (torch.save state dicts, timm's `save_for_hf`,
`save_pretrained`, TorchServe `.mar` zips, GitHub archive zips of a torch.hub repo). The weights
are not the real ones, so cards pin our bytes (`url:`/`sha256:`/`revision:`) rather than the
upstream's.

Every file is byte-stable: across runs, processes and PYTHONHASHSEED values, and independent of
where the checkout or the venv lives. That takes care in three places, each explained where it is
done: zips get fixed timestamps, modes and order (`zip_bytes`); TorchScript is traced, not
scripted, in a fresh interpreter, and saved without its debug records (`_torchscript_bytes`);
torch.save always writes to memory, never to a named file (`_torch_save`).

torch, timm and transformers are imported inside the builders only: importing this module is free.
"""

from __future__ import annotations

import functools
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from tests.support.mirror.common import hf_files, place, read_dir, sha256_hex
from tests.support.mirror.fixtures import Fixture

TV_MODELS = "https://download.pytorch.org/models"
TIMM_REPO = "timm/test_efficientnet.r160_in1k"
BERT_REPO = "zoo-fixtures/tiny-bert"
BERT_CLS_REPO = "zoo-fixtures/tiny-bert-cls"
UNSAFE_REPO = "zoo-fixtures/unsafe-pickle"
MAR_FILES = "https://torchserve.pytorch.org/mar_files"
HUB_REPO = "zoo-fixtures/tiny-hub"
# A made-up commit id (this repo does not exist on GitHub): the fixture's archive is ours alone.
HUB_REF = "d0d0cafe5eed0f1c7a3b0c0ffee0ddba11f00d42"
HUB_URL = f"https://github.com/{HUB_REPO}/archive/{HUB_REF}.zip"

ZIP_DATE = (2024, 1, 1, 0, 0, 0)          # every zip entry's timestamp (the mirror's FIXED_DATE)
MAR_CREATED_ON = "01/01/2024 00:00:00"    # torch-model-archiver's "%d/%m/%Y %H:%M:%S"
MAR_ARCHIVER_VERSION = "0.12.0"
CNN_INPUT = [1, 3, 32, 32]
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# torch.hub repos and .mar archives carry no preprocessing metadata: their cards declare it.
CNN_PRE = ("preprocessing: {type: image, layout: NCHW, size: [32, 32], interpolation: bilinear, color: RGB, "
           "scale: 0.00392156862745098, mean: [0.5], std: [0.5]}\n")
SENTIMENT = {0: "negative", 1: "neutral", 2: "positive"}

# A WordPiece vocabulary: BERT's five special tokens, whole letters and their "##" continuations
# (so any lowercase word tokenizes), punctuation and a few common words.
LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]
WORDS = ["the", "and", "of", "to", "in", "is", "it", "this", "was", "for", "on", "with", "not",
         "good", "bad", "great", "movie", "film", "love", "hate", "quick", "brown", "fox", "jumps", "over",
         "lazy", "dog", "cat", "model", "zoo", "hello", "world", "very", "happy", "sad"]
VOCAB = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + LETTERS + [f"##{c}" for c in LETTERS]
         + [".", ",", "!", "?", "'"] + WORDS)
assert len(set(VOCAB)) == len(VOCAB), "a duplicate token leaves a hole in the tokenizer's ids"

# The small CNN, as source text: it is shipped verbatim as a .mar's model.py and inside hubconf.py,
# and exec'd here to build the weights, so the archive's code and its weights always agree. One
# nn.Module class only: TorchServe's convention (and the registry's check) for a model file.
CNN_SOURCE = '''\
import torch
from torch import nn


class TinyCNN(nn.Module):
    """conv-bn-relu-pool-linear for 3x32x32 images (a test fixture: the weights are random)."""

    def __init__(self, num_classes: int = 10, width: int = 8):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))
'''

# BatchNorm's default statistics (mean 0, var 1, weight 1, bias 0) make it an identity that a
# wrong export (say, a dropped or mis-folded BN) would still match; random ones make it count.
SEED_BN_SOURCE = '''

def _seeded(model, seed):
    """Give every BatchNorm random statistics, from `seed`, without touching the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.running_mean, 0.0, 0.2)
                nn.init.uniform_(m.running_var, 0.5, 1.5)
                nn.init.uniform_(m.weight, 0.5, 1.5)
                nn.init.normal_(m.bias, 0.0, 0.2)
    return model
'''

HUBCONF_SOURCE = (
    '"""torch.hub entrypoints of zoo-fixtures/tiny-hub, a registry test fixture (weights are seeded, not trained)."""\n\n'
    'dependencies = ["torch"]\n\n'
    + CNN_SOURCE + SEED_BN_SOURCE + '''

class Branchy(nn.Module):
    """Python control flow on a tensor's value: a tracing exporter records only the branch it saw."""

    def forward(self, x):
        if x.mean() > 0:
            return x * 2
        else:
            return x * -1


def tiny_cnn(width=8, num_classes=10):
    """TinyCNN with weights seeded inside, so every load gives the same model."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = TinyCNN(num_classes=num_classes, width=width)
    return _seeded(model, 1).eval()


def branchy():
    """Doubles x when its mean is positive, negates it otherwise (no weights)."""
    return Branchy().eval()
''')


class NotATensor:
    """A plain object pickled beside the weights of `unsafe_pickle_repo`.

    Harmless itself, but a class that is not a tensor or a plain container: torch.load refuses it
    with weights_only=True, and would import this module to rebuild it with weights_only=False.
    That is the shape of a malicious pickle, which is what the registry must refuse to open.
    """

    def __init__(self, note: str):
        self.note = note


# ----------------------------------------------------------------------------- byte-stable writers

def zip_bytes(entries: list[tuple[str, bytes]], comment: bytes = b"") -> bytes:
    """A byte-stable zip: sorted entries, fixed date, unix 0644/0755 modes, deflate level 6.

    Names ending in '/' are directory entries (stored). Names are written as given, so callers
    can make deliberately unsafe archives ('../x', '/x'); zipfile only cleans names on extract.
    """
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.create_system = 3  # unix, whatever the host: the mode bits below mean the same everywhere
            if name.endswith("/"):
                info.external_attr = (0o40755 << 16) | 0x10
                info.compress_type = zipfile.ZIP_STORED
                zf.writestr(info, b"")
            else:
                info.external_attr = 0o100644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, data, compresslevel=6)
        zf.comment = comment
    return out.getvalue()


def _torch_save(obj) -> bytes:
    """torch.save into memory.

    torch.save's zip names its top folder after the target file (`foo.pth` -> `foo/data.pkl`);
    into a buffer it is always `archive/`, so the bytes never depend on the name they are served
    under. Its records have fixed dates and the serialization id is derived from the content, so
    two saves of the same state dict are equal, in any process (checked by the tests).
    """
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _torchscript_bytes(module, example) -> bytes:
    """A traced TorchScript file that is byte-stable and holds no local paths.

    Three things make torch.jit.save's output unstable; this avoids each:
    * torch.jit.script writes each module's `__constants__` (Conv2d's kernel_size, stride, ...) in
      Python set order, which follows PYTHONHASHSEED: the code records, and so the file's hash,
      change from one process to the next. Tracing records the same constants without that set.
    * A traced module's types get mangled names (`___torch_mangle_N`, in record names, code and
      data.pkl) whenever the process already holds a type of that name, N counting every type it
      made before: the same model traced twice, or after any other TorchScript work, gives other
      bytes. So this runs in a fresh interpreter (`_traced_cnn`), where the names only depend on
      the model (the second Conv2d is always `___torch_mangle_0`).
    * `*.debug_pkl` records hold source ranges with absolute paths of torch's own files (where the
      venv lives). They are optional for torch.jit.load, so the archive is rewritten without them,
      record by record, with torch's own PyTorchFileWriter (which keeps its alignment rules).
    """
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.* are deprecated in favour of torch.export
        traced = torch.jit.trace(module.eval(), example)
        raw = io.BytesIO()
        torch.jit.save(traced, raw)
    out = io.BytesIO()
    writer = torch._C.PyTorchFileWriter(out)
    with zipfile.ZipFile(io.BytesIO(raw.getvalue())) as zf:
        for info in zf.infolist():
            name = info.filename.split("/", 1)[1]
            if name.endswith(".debug_pkl") or name == ".data/serialization_id":
                continue  # the writer derives a fresh serialization id from the records it holds
            data = zf.read(info)
            writer.write_record(name, data, len(data))
    writer.write_end_of_file()
    return out.getvalue()


def _trace_cnn_here(seed: int = 15) -> bytes:
    """The mar-scripted model.pt, traced in this process (which must not have used TorchScript before)."""
    import torch

    return _torchscript_bytes(_exec_cnn(seed), torch.zeros(CNN_INPUT))


@functools.cache
def _traced_cnn() -> bytes:
    """`_trace_cnn_here` run in a fresh interpreter (see `_torchscript_bytes` for why), once per process."""
    with tempfile.TemporaryDirectory(prefix="zoo-trace-") as tmp:
        out = Path(tmp) / "model.pt"
        code = ("import sys; from pathlib import Path; from tests.support.mirror.torch_fixtures import _trace_cnn_here; "
                "Path(sys.argv[1]).write_bytes(_trace_cnn_here())")
        package_parent = str(Path(__file__).resolve().parents[3])  # the project root, where `tests` lives
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH")) if p)}
        proc = subprocess.run([sys.executable, "-c", code, str(out)], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"tracing the TorchServe fixture model failed: {proc.stderr.strip()[-2000:]}")
        return out.read_bytes()


def _exec_cnn(seed: int, width: int = 8, num_classes: int = 10):
    """TinyCNN built from CNN_SOURCE (the code the archives ship), with seeded weights."""
    import torch

    namespace = {"__name__": "tiny_cnn"}
    exec(compile(CNN_SOURCE + SEED_BN_SOURCE, "<zoo fixture tiny_cnn>", "exec"), namespace)  # noqa: S102
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = namespace["TinyCNN"](num_classes=num_classes, width=width)
    return namespace["_seeded"](model, seed + 1).eval()


def _flow(items: list) -> str:
    return "[" + ", ".join(str(i) for i in items) + "]"


def _card(name: str, description: str, license_id: str, tags: list[str], source: dict,
          trust_code: bool | None = None, meta: str = "") -> str:
    """A card's YAML text, one key per line in the registry's order (flow style for lists/maps)."""
    lines = [f"name: {name}", "format: onnx", f"description: {description}", f"license: {license_id}",
             f"tags: {_flow(tags)}"]
    if trust_code is not None:
        lines.append(f"trust_code: {'true' if trust_code else 'false'}")
    if meta:  # what the source does not describe: preprocessing (and labels), declared by the card
        lines.append(meta.rstrip("\n"))
    lines.append("source:")
    for key, value in source.items():
        if isinstance(value, dict):
            value = "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
        elif isinstance(value, list):
            value = _flow(value)
        lines.append(f"  {key}: {value}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- torchvision

def tv_card_for(url: str, sha: str) -> str:
    """The tv-squeezenet card pinning `url` (which overrides the weights enum's URL) and its sha256."""
    return _card("tv-squeezenet", "SqueezeNet 1.1 from torchvision (seeded random weights, a test fixture)",
                 "bsd-3-clause", ["vision", "classification"],
                 {"kind": "torchvision", "model": "squeezenet1_1", "weights": "IMAGENET1K_V1", "url": url,
                  "sha256": sha})


def build_torchvision(root: Path) -> Fixture:
    """squeezenet1_1's state dict under torchvision's name scheme, `<arch>-<first 8 hex of sha256>.pth`.

    The name's hash prefix is what torch.hub's download checks, so it is computed from our bytes;
    it differs from the real file's (b8a52dc0), which is why the card pins `url:` too.
    """
    import torch
    import torchvision

    torch.manual_seed(11)
    model = torchvision.models.squeezenet1_1(weights=None, num_classes=1000)
    data = _torch_save(model.state_dict())
    url = f"{TV_MODELS}/squeezenet1_1-{sha256_hex(data)[:8]}.pth"
    rel, sha = place(root, url, data)
    return Fixture("tv-squeezenet", tv_card_for(url, sha), {rel: sha})


# ----------------------------------------------------------------------------- Hugging Face (timm, transformers)

def build_timm(root: Path) -> Fixture:
    """`timm/test_efficientnet.r160_in1k` as timm publishes it: timm's own save_for_hf writes
    config.json (architecture, num_classes, num_features, model_args, pretrained_cfg with the tag,
    input size, mean/std, crop) and model.safetensors, from a seeded model."""
    import torch
    from timm import create_model
    from timm.models import save_for_hf

    torch.manual_seed(12)
    model = create_model("test_efficientnet.r160_in1k", pretrained=False)
    with tempfile.TemporaryDirectory(prefix="zoo-timm-") as tmp:
        save_for_hf(model, tmp, safe_serialization=True)
        files = read_dir(Path(tmp))
    commit, served = hf_files(root, TIMM_REPO, files)
    card = _card("timm-test-effnet", "timm test_efficientnet, r160_in1k config (seeded random weights, a test fixture)",
                 "apache-2.0", ["vision", "classification"],
                 {"kind": "timm", "model": "test_efficientnet.r160_in1k", "revision": commit})
    return Fixture("timm-test-effnet", card, served)


def bert_config(**extra):
    from transformers import BertConfig

    return BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=37, max_position_embeddings=64, **extra)


def tokenizer_files(tmp: Path) -> dict[str, bytes]:
    """A real WordPiece tokenizer from VOCAB: tokenizer.json, tokenizer_config.json,
    special_tokens_map.json and vocab.txt, as BertTokenizerFast.save_pretrained writes them."""
    from transformers import BertTokenizerFast

    vocab = tmp / "vocab-source.txt"
    vocab.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True, model_max_length=64)
    tokenizer.save_pretrained(str(tmp / "tokenizer"))
    return read_dir(tmp / "tokenizer")


def _bert_repo(cls_name: str, seed: int, **extra) -> dict[str, bytes]:
    """config.json + model.safetensors (save_pretrained) of a seeded tiny BERT, plus its tokenizer."""
    import torch
    import transformers

    with tempfile.TemporaryDirectory(prefix="zoo-bert-") as tmp:
        tmp = Path(tmp)
        files = tokenizer_files(tmp)
        torch.manual_seed(seed)
        model = getattr(transformers, cls_name)(bert_config(**extra))
        model.save_pretrained(str(tmp / "model"), safe_serialization=True)
        files.update(read_dir(tmp / "model"))
    return files


def _hf_card(name: str, description: str, repo: str, commit: str, task: str) -> str:
    return _card(name, description, "apache-2.0", ["text", task],
                 {"kind": "huggingface", "framework": "pytorch", "repo": repo, "revision": commit, "task": task})


def build_tiny_bert(root: Path) -> Fixture:
    files = _bert_repo("BertModel", seed=13)
    commit, served = hf_files(root, BERT_REPO, files)
    card = _hf_card("tiny-bert", "Tiny BERT encoder with a WordPiece tokenizer (seeded random weights, a test fixture)",
                    BERT_REPO, commit, "feature-extraction")
    return Fixture("tiny-bert", card, served)


def build_tiny_bert_cls(root: Path) -> Fixture:
    files = _bert_repo("BertForSequenceClassification", seed=14, num_labels=len(SENTIMENT), id2label=SENTIMENT,
                       label2id={v: k for k, v in SENTIMENT.items()})
    commit, served = hf_files(root, BERT_CLS_REPO, files)
    card = _hf_card("tiny-bert-cls", "Tiny BERT sentiment classifier, 3 labels (seeded random weights, a test fixture)",
                    BERT_CLS_REPO, commit, "text-classification")
    return Fixture("tiny-bert-cls", card, served)


def unsafe_pickle_repo(root: Path) -> str:
    """`zoo-fixtures/unsafe-pickle`: the tiny BERT's config.json and a pytorch_model.bin holding its
    weights AND a NotATensor object, so only torch.load(weights_only=False) would open it.

    No model.safetensors, so the registry has to choose the pickle (and must refuse it)."""
    import torch
    from transformers import BertModel

    torch.manual_seed(13)
    model = BertModel(bert_config())
    with tempfile.TemporaryDirectory(prefix="zoo-bert-") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        config = (Path(tmp) / "config.json").read_bytes()
    state = dict(model.state_dict())
    state["zoo_fixture_payload"] = NotATensor("weights_only=False would unpickle this object")
    files = {"config.json": config, "pytorch_model.bin": _torch_save(state)}
    commit, _ = hf_files(root, UNSAFE_REPO, files)
    return _hf_card("unsafe-pickle", "BERT whose pytorch_model.bin pickles a custom object (must be refused)",
                    UNSAFE_REPO, commit, "feature-extraction")


# ----------------------------------------------------------------------------- TorchServe

def mar_manifest(model_name: str, serialized: str, model_file: str | None = None) -> bytes:
    """MAR-INF/MANIFEST.json as torch-model-archiver writes it (json.dumps(indent=2), its key order)."""
    model = {"modelName": model_name, "serializedFile": serialized, "handler": "image_classifier",
             "modelVersion": "1.0"}
    if model_file:
        model["modelFile"] = model_file
    manifest = {"createdOn": MAR_CREATED_ON, "runtime": "python", "model": model,
                "archiverVersion": MAR_ARCHIVER_VERSION}
    return json.dumps(manifest, indent=2).encode()


def _index_to_name() -> bytes:
    """image_classifier's label file: class index (as a string) -> name."""
    return json.dumps({str(i): n for i, n in enumerate(CIFAR10)}, indent=2).encode()


def _mar_card(name: str, description: str, url: str, sha: str, trust_code: bool | None = None) -> str:
    return _card(name, description, "apache-2.0", ["vision", "classification"],
                 {"kind": "torchserve", "url": url, "sha256": sha, "input_shape": CNN_INPUT}, trust_code, CNN_PRE)


def _scripted_entries() -> list[tuple[str, bytes]]:
    return [("MAR-INF/MANIFEST.json", mar_manifest("tiny_cnn_scripted", "model.pt")),
            ("index_to_name.json", _index_to_name()),
            ("model.pt", _traced_cnn())]


def build_mar_scripted(root: Path) -> Fixture:
    """A TorchScript .mar: manifest without modelFile, model.pt a traced TinyCNN (no code runs)."""
    url = f"{MAR_FILES}/tiny_cnn_scripted.mar"
    rel, sha = place(root, url, zip_bytes(_scripted_entries()))
    card = _mar_card("mar-scripted", "Small CNN as a TorchScript TorchServe archive (seeded random weights, a test fixture)",
                     url, sha)
    return Fixture("mar-scripted", card, {rel: sha})


def build_mar_eager(root: Path) -> Fixture:
    """An eager-mode .mar: model.py (TinyCNN's source) as modelFile, tiny_cnn.pth its state dict."""
    model = _exec_cnn(seed=16)
    entries = [("MAR-INF/MANIFEST.json", mar_manifest("tiny_cnn_eager", "tiny_cnn.pth", "model.py")),
               ("index_to_name.json", _index_to_name()),
               ("model.py", CNN_SOURCE.encode()),
               ("tiny_cnn.pth", _torch_save(model.state_dict()))]
    url = f"{MAR_FILES}/tiny_cnn_eager.mar"
    rel, sha = place(root, url, zip_bytes(entries))
    card = _mar_card("mar-eager", "Small CNN as an eager TorchServe archive, model.py + state dict (a test fixture)",
                     url, sha, trust_code=True)
    return Fixture("mar-eager", card, {rel: sha})


EVIL_PY = b'raise SystemExit("zoo fixture: this entry must never be extracted")\n'


def _bad_mar(root: Path, name: str, evil_entry: str) -> str:
    """A valid scripted .mar plus one entry that would land outside the extraction folder."""
    url = f"{MAR_FILES}/{name.replace('-', '_')}.mar"
    _, sha = place(root, url, zip_bytes(_scripted_entries() + [(evil_entry, EVIL_PY)]))
    return _mar_card(name, f"TorchServe archive with the entry {evil_entry} (must be refused)", url, sha)


def bad_mar_traversal(root: Path) -> str:
    return _bad_mar(root, "mar-traversal", "../evil.py")


def bad_mar_absolute(root: Path) -> str:
    return _bad_mar(root, "mar-absolute", "/tmp/evil.py")


# ----------------------------------------------------------------------------- torch.hub

def hub_archive() -> bytes:
    """`https://github.com/<repo>/archive/<ref>.zip` as GitHub serves it: one top folder
    `<name>-<ref>/` with directory entries, and the commit id as the zip comment."""
    top = f"{HUB_REPO.split('/')[1]}-{HUB_REF}/"
    readme = b"# tiny-hub\n\nA torch.hub repository for the model registry's tests. Weights are seeded, not trained.\n"
    return zip_bytes([(top, b""), (f"{top}README.md", readme), (f"{top}hubconf.py", HUBCONF_SOURCE.encode())],
                     comment=HUB_REF.encode())


def _hub_card(root: Path, name: str, entrypoint: str, kwargs: dict, input_shape: list[int],
              trust_code: bool | None = True) -> tuple[str, str, str]:
    rel, sha = place(root, HUB_URL, hub_archive())
    tags = ["vision", "classification"] if entrypoint == "tiny_cnn" else ["test"]
    meta = CNN_PRE + f"labels: {_flow(CIFAR10)}\n" if entrypoint == "tiny_cnn" else \
        "preprocessing: {type: tensor, note: four numbers}\n"
    card = _card(name, f"torch.hub {HUB_REPO}:{entrypoint} (a test fixture)", "mit", tags,
                 {"kind": "torchhub", "repo": HUB_REPO, "ref": HUB_REF, "sha256": sha, "entrypoint": entrypoint,
                  "kwargs": kwargs, "input_shape": input_shape}, trust_code, meta)
    return card, rel, sha


def build_hub_tiny(root: Path) -> Fixture:
    card, rel, sha = _hub_card(root, "hub-tiny", "tiny_cnn", {"width": 8}, CNN_INPUT)
    return Fixture("hub-tiny", card, {rel: sha})


def hub_without_trust(root: Path) -> str:
    """The hub-tiny card without `trust_code`: loading it must be refused (hubconf.py is code)."""
    card, _, _ = _hub_card(root, "hub-tiny", "tiny_cnn", {"width": 8}, CNN_INPUT, trust_code=None)
    return card


def branchy_hub(root: Path) -> str:
    """A hub card whose model branches on a tensor value: tracing bakes one branch in."""
    card, _, _ = _hub_card(root, "hub-branchy", "branchy", {}, [1, 4])
    return card


# ----------------------------------------------------------------------------- all of them

BUILDERS = (build_torchvision, build_timm, build_tiny_bert, build_tiny_bert_cls, build_mar_scripted,
            build_mar_eager, build_hub_tiny)


def build_torch_mirror(root: Path) -> dict[str, Fixture]:
    """Write every good PyTorch-kind fixture under `root` (a MirrorServer root); return them by card name.

    Safe to call again on the same root, even while it is served: the bytes are the same, so
    files already in place are left alone and the HF commits are the same ids.
    """
    root = Path(root)
    fixtures = [builder(root) for builder in BUILDERS]
    return {f.name: f for f in fixtures}
