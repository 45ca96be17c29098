"""Hugging Face Hub models at a pinned commit, built with transformers' Auto classes.

`framework: pytorch` is exported to ONNX by the torch converter; `framework: tensorflow` is built
with the TFAuto classes (from the repo's TF weights, or from its safetensors with `from_pytorch:
true`) and frozen by the tensorflow converter (format tensorflow, with an optional ONNX target
through tf2onnx). The preprocessing record comes from the repo's own files: its image processor
(resolved by transformers' processor class) or its tokenizer, converted to a fast tokenizer.json
when the repo has only a slow one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationInfo, field_validator, model_validator

from stages import schema
from stages.errors import StagingError
from stages.sources import hub, register
from stages.sources.base import RemoteFile, SourceKind, SourceModel

TASKS = ("feature-extraction", "text-classification", "token-classification", "image-classification",
         "fill-mask", "question-answering")
FRAMEWORK_FORMATS = {"pytorch": "onnx", "tensorflow": "tensorflow"}
TORCH_CLASSES = {
    "feature-extraction": "AutoModel",
    "text-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "fill-mask": "AutoModelForMaskedLM",
    "question-answering": "AutoModelForQuestionAnswering",
    "image-classification": "AutoModelForImageClassification",
}
TF_CLASSES = {task: f"TF{name}" for task, name in TORCH_CLASSES.items()}
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                   "merges.txt", "spiece.model", "sentencepiece.bpe.model", "added_tokens.json")
UNBOUNDED = 10**6  # transformers writes int(1e30) as model_max_length when a tokenizer sets none
# torch's dynamo exporter writes the wrapper's qualified name into every node's metadata
# (`namespace`, `pkg.torch.onnx.class_hierarchy`), so that name is part of the staged bytes. It is
# fixed here, independent of where this code lives, at the name the models were first staged with:
# moving the code must not restage every Hugging Face model.
WRAPPER_MODULE, WRAPPER_QUALNAME = "stages.convert.torch_models", "_hf_wrapper_class.<locals>.HFWrapper"


class HuggingFaceSpec(schema.Schema):
    """`source:` of a huggingface card; the framework decides the card's format."""

    kind: Literal["huggingface"]
    framework: schema.one_of(tuple(FRAMEWORK_FORMATS), "framework")
    repo: hub.Repo
    revision: hub.Revision
    task: schema.one_of(TASKS, "task")
    from_pytorch: schema.Flag | None = None  # tensorflow only: build the TF model from the repo's PyTorch weights

    @field_validator("from_pytorch")
    @classmethod
    def _tensorflow_only(cls, value: bool | None, info: ValidationInfo) -> bool | None:
        if value is not None and info.data.get("framework") == "pytorch":
            raise schema.invalid("only `framework: tensorflow` builds from PyTorch weights",
                                 "remove it (a pytorch card is built from them anyway)")
        return value or None  # false is the default: the spec says None

    @model_validator(mode="after")
    def _framework_fixes_the_format(self, info: ValidationInfo) -> HuggingFaceSpec:
        fmt, staged = (info.context or {}).get("format"), FRAMEWORK_FORMATS[self.framework]
        if fmt is not None and fmt != staged:
            raise schema.invalid(f"framework {self.framework!r} is staged as format {staged!r}, not {fmt!r}",
                                 f"set `format: {staged}` and move the card to registry/{staged}/ (add `targets:` "
                                 "for more formats)", at=("format",))
        return self


@register
class HuggingFace(SourceKind):
    """A Hugging Face Hub model at a pinned commit, built with transformers' Auto classes."""

    kind, converter, formats = "huggingface", "torch", ("onnx", "tensorflow")
    describes = frozenset({"preprocessing", "labels"})  # from the source's own metadata
    extra_targets = ("onnx",)
    spec = HuggingFaceSpec

    @classmethod
    def converter_for(cls, spec: HuggingFaceSpec) -> str:
        return "tensorflow" if spec.framework == "tensorflow" else "torch"

    @classmethod
    def converters(cls) -> tuple[str, ...]:
        return ("torch", "tensorflow")

    @classmethod
    def remote_files(cls, spec: HuggingFaceSpec) -> list[RemoteFile]:
        files = hub.repo_files(spec.repo, spec.revision)
        optional = hub.TOKENIZER_FILES + ("generation_config.json",)
        if spec.framework == "tensorflow" and not spec.from_pytorch:
            return hub.select(spec.repo, spec.revision, files, required=("config.json",), optional=optional,
                              weights=hub.TF_WEIGHT_PREFERENCE)
        return hub.select(spec.repo, spec.revision, files, required=("config.json",), optional=optional)

    @classmethod
    def pin(cls, source, pinner, changes: list[str]) -> None:
        from stages.sources.pinning import pin_revision

        pin_revision(source, source["repo"], pinner, changes)

    @classmethod
    def build(cls, card, raw, settings: dict, workdir: Path) -> SourceModel:
        if card.source.framework == "tensorflow":
            return _build_tf(card, raw, settings, workdir)
        return _build_torch(card, raw, settings, workdir)


# ----------------------------------------------------------------------------- PyTorch

def _build_torch(card, raw, settings: dict, workdir: Path) -> SourceModel:
    import torch
    import transformers

    from stages.inputs import TensorSpec
    from stages.labels import hf_labels
    from stages.sources._torch import load_state_dict, module_model, require_trust, vision

    spec = card.source
    config = json.loads(raw.file_named("config.json").read_text())
    if config.get("auto_map") and not card.trust_code:
        require_trust(card, f"{spec.repo}'s remote code ({sorted(config['auto_map'])[0]})")
    files = raw.all("repo")  # verifies every file's hash before transformers reads the folder
    for path in files:  # our own weights_only check first: transformers' wrapping hides why a pickle failed
        if path.suffix == ".bin":
            load_state_dict(path, card)
    cls = getattr(transformers, TORCH_CLASSES[spec.task])
    has_safetensors = any(p.suffix == ".safetensors" for p in files)
    try:
        module = cls.from_pretrained(str(raw.path), local_files_only=True, trust_remote_code=card.trust_code,
                                     use_safetensors=has_safetensors, dtype=torch.float32).eval()
    except Exception as exc:
        text = str(exc)
        if "weights_only" in text or "Unpickl" in text:
            raise StagingError(f"{card.path}: {spec.repo}'s pytorch_model.bin is a pickle that needs "
                               "weights_only=False to load", fix="refusing to unpickle arbitrary objects; pin a "
                               "revision with model.safetensors") from None
        raise StagingError(f"{card.path}: transformers cannot build {TORCH_CLASSES[spec.task]} from "
                           f"{spec.repo}@{spec.revision[:12]}: {text.splitlines()[0][:200]}",
                           fix="check `task:` against the model's architecture") from None
    architecture = (config.get("architectures") or ["?"])[0]
    labels = hf_labels(config, spec.task)
    if spec.task == "image-classification":
        size = config.get("image_size", 224)
        size = size if isinstance(size, int) else size[0]
        pre, _ = preprocessing(raw.path, config, spec.task, workdir)
        return vision(_wrapper(module, ["pixel_values"], ["logits"]), (1, config.get("num_channels", 3), size, size),
                      {"architecture": architecture}, name="pixel_values", labels=labels, preprocessing=pre)
    forward = module.forward.__code__.co_varnames
    names = [n for n in TEXT_INPUTS if n in forward]
    with torch.no_grad():
        probe = module(**{n: torch.ones((1, 4), dtype=torch.long) for n in names})
    outputs = [k for k, v in probe.items() if isinstance(v, torch.Tensor)]
    side = {p.name: p for p in files if p.name != "model.safetensors" and p.suffix not in (".bin", ".safetensors")
            and not p.name.endswith(".index.json")}
    pre, extra = preprocessing(raw.path, config, spec.task, workdir)
    side.update(extra)
    return module_model(_wrapper(module, names, outputs), [TensorSpec(n, "int64", ("batch", "sequence")) for n in names],
                        outputs, text=True, vocab=int(config.get("vocab_size", 100)), side_files=side,
                        info={"architecture": architecture, "task": spec.task}, labels=labels, preprocessing=pre)


def _wrapper(model, inputs: list[str], outputs: list[str]):
    """Positional tensors in, a tuple of named outputs out: what both exporters trace cleanly."""
    import torch

    class HFWrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model, self.inputs, self.outputs = model, inputs, outputs

        def forward(self, *args):
            result = self.model(**dict(zip(self.inputs, args)), return_dict=True)
            return tuple(result[k] for k in self.outputs)

    HFWrapper.__module__, HFWrapper.__qualname__ = WRAPPER_MODULE, WRAPPER_QUALNAME
    return HFWrapper().eval()


# ----------------------------------------------------------------------------- TensorFlow

def _build_tf(card, raw, settings: dict, workdir: Path) -> SourceModel:
    from stages.frameworks import import_tf
    from stages.labels import hf_labels
    from stages.sources._tf import signature_specs, through_saved_model

    spec = card.source
    tf = import_tf()
    import transformers

    config = json.loads(raw.file_named("config.json").read_text())
    if config.get("auto_map"):
        raise StagingError(f"{card.path}: {spec.repo} needs remote code ({sorted(config['auto_map'])[0]})",
                           fix="the TensorFlow path runs no remote code; pick a model transformers implements")
    files = raw.all("repo")  # verifies every file's hash before transformers reads the folder
    if spec.from_pytorch and not any(p.suffix == ".safetensors" for p in files):
        raise StagingError(f"{card.path}: from_pytorch needs model.safetensors in {spec.repo}@{spec.revision[:12]}",
                           fix="refusing to unpickle pytorch_model.bin; pin a revision with safetensors weights")
    cls = getattr(transformers, TF_CLASSES[spec.task])
    tf.random.set_seed(int(settings["seed"]))
    try:
        model = cls.from_pretrained(str(raw.path), local_files_only=True, from_pt=spec.from_pytorch)
    except Exception as exc:  # noqa: BLE001 - transformers wraps many failures
        raise StagingError(f"{card.path}: transformers cannot build {TF_CLASSES[spec.task]} from "
                           f"{spec.repo}@{spec.revision[:12]}: {str(exc).strip().splitlines()[0][:200]}",
                           fix="check `task:`, and `from_pytorch:` when the repo has no tf_model.h5") from None
    accepted = set(model.input_signature) if hasattr(model, "input_signature") else set()
    names = [n for n in TEXT_INPUTS if n in accepted]
    signature = [tf.TensorSpec([None, None], tf.int32, name=n) for n in names]

    def call(*args):
        result = model(**dict(zip(names, args)), training=False, return_dict=True)
        return {k: v for k, v in result.items() if isinstance(v, tf.Tensor)}

    serve = tf.function(call, input_signature=signature)
    outputs = sorted(serve.get_concrete_function().structured_outputs)
    fn = through_saved_model(serve, {"model": model}, workdir, tf)

    def reference(feeds: dict[str, Any]) -> dict[str, Any]:
        result = model(**{k: tf.constant(v) for k, v in feeds.items()}, training=False, return_dict=True)
        return {k: result[k].numpy() for k in outputs}

    side = {p.name: p for p in files if p.suffix not in (".h5", ".bin", ".safetensors", ".msgpack")
            and not p.name.endswith(".index.json")}
    pre, extra = preprocessing(raw.path, config, spec.task, workdir)
    side.update(extra)
    return SourceModel(inputs=signature_specs(fn), outputs=outputs, reference=reference, native=fn, text=True,
                       described="tensorflow transformers model built from the downloaded weights",
                       vocab=int(config.get("vocab_size", 100)), side_files=side, labels=hf_labels(config, spec.task),
                       preprocessing=pre,
                       info={"architecture": (config.get("architectures") or ["?"])[0], "task": spec.task,
                             "weights": "pytorch (safetensors)" if spec.from_pytorch else "tensorflow (tf_model.h5)"})


# ----------------------------------------------------------------------------- preprocessing

def preprocessing(folder: Path, config: dict, task: str, workdir: Path) -> tuple[dict[str, Any] | None, dict[str, Path]]:
    """The preprocessing record of a Hugging Face repo, and files to stage beside the model for it."""
    if task == "image-classification":
        if not (folder / "preprocessor_config.json").is_file():
            return None, {}
        # transformers' own processor class resolves the file (an int `size` means a square for ViT,
        # the shortest edge for CLIP, ...); the slow class, which resizes with PIL as `zoo run` does
        from transformers import AutoImageProcessor

        processor = AutoImageProcessor.from_pretrained(str(folder), local_files_only=True, use_fast=False)
        keys = ("do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale", "rescale_factor",
                "do_normalize", "image_mean", "image_std")
        resolved = {k: getattr(processor, k) for k in keys if getattr(processor, k, None) is not None}
        resolved["resample"] = int(resolved.get("resample", 2))
        resolved["image_processor_type"] = type(processor).__name__
        return image_preprocessing(resolved, int(config.get("num_channels", 3))), {}
    if (folder / "tokenizer.json").is_file():
        return text_preprocessing(folder, config), {}
    converted = fast_tokenizer(folder, workdir)
    if converted is None:
        return None, {}
    return text_preprocessing(folder, config, converted), {"tokenizer.json": converted}


def _pil_name(resample) -> str | None:
    names = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
    return names.get(resample) if isinstance(resample, int) else None


def image_preprocessing(config: dict, num_channels: int = 3) -> dict[str, Any] | None:
    """A Hugging Face image processor's settings (resize, crop, rescale, normalize), as its class
    resolved them: `size` and `crop_size` are dicts ({height, width} or {shortest_edge})."""
    from stages.preprocess import image

    size = config.get("size") or {}
    crop = config.get("crop_size") if config.get("do_center_crop") else None
    interpolation = _pil_name(config.get("resample", 2))
    if interpolation is None or config.get("do_resize") is False:
        return None
    if "height" in size and "width" in size and not crop:
        target, resize = [size["height"], size["width"]], None
    elif "shortest_edge" in size and crop:
        target, resize = [crop["height"], crop["width"]], size["shortest_edge"]
    else:
        return None
    normalize = config.get("do_normalize", True)
    return image(layout="NCHW", size=target, resize=resize, interpolation=interpolation,
                 color="RGB" if num_channels == 3 else "L",
                 scale=float(config.get("rescale_factor", 1 / 255)) if config.get("do_rescale", True) else 1.0,
                 mean=list(config.get("image_mean") or [0.5]) if normalize else [0.0],
                 std=list(config.get("image_std") or [0.5]) if normalize else [1.0],
                 source=f"Hugging Face preprocessor_config.json ({config.get('image_processor_type', '?')})")


def fast_tokenizer(folder: Path, workdir: Path) -> Path | None:
    """A repo with only a slow tokenizer (vocab.txt, ...): transformers' own slow-to-fast conversion
    writes the tokenizer.json that `zoo run` reads; None when transformers has no fast version."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), use_fast=True, local_files_only=True)
    except (OSError, ValueError):
        return None
    if not getattr(tokenizer, "is_fast", False):
        return None
    path = workdir / "tokenizer.json"
    path.write_text(tokenizer.backend_tokenizer.to_str(pretty=True), encoding="utf-8")
    return path


def text_preprocessing(folder: Path, config: dict, converted: Path | None = None) -> dict[str, Any] | None:
    """Tokenizer files of a Hugging Face repo (staged beside the model) and the maximum length;
    `converted` is a tokenizer.json made by fast_tokenizer for a repo without one."""
    from stages.preprocess import text

    files = [name for name in TOKENIZER_FILES if (folder / name).is_file()]
    if converted is not None and "tokenizer.json" not in files:
        files.append("tokenizer.json")
    if "tokenizer.json" not in files:
        return None
    tok_config = json.loads((folder / "tokenizer_config.json").read_text()) if "tokenizer_config.json" in files else {}
    max_length = tok_config.get("model_max_length")
    where = "tokenizer_config.json model_max_length"
    if not isinstance(max_length, (int, float)) or max_length >= UNBOUNDED:
        max_length, where = config.get("max_position_embeddings"), "config.json max_position_embeddings"
    if not max_length:
        return None
    origin = ("tokenizer.json converted by transformers from the repo's slow tokenizer" if converted is not None
              else "the repo's tokenizer files")
    return text(tokenizer="tokenizer.json", files=files, max_length=int(max_length),
                source=f"{origin}; max length from {where}")
