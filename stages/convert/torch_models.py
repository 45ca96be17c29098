"""Building the PyTorch model a torch-ecosystem card describes, from its raw files only.

One builder per source kind. Weights are loaded safely: safetensors, or pickles through
`torch.load(weights_only=True)`, which refuses anything but tensors and plain containers. Code from
a third party (a hubconf.py, a .mar's model file, a Hub repo's remote code) runs only when the
card says `trust_code: true`. Archives are checked entry by entry before anything is extracted.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages import preprocess
from stages.archives import check_entry_name
from stages.errors import StagingError, UnsafeArchiveError
from stages.inputs import TensorSpec
from stages.labels import hf_labels, torchserve_labels


@dataclass
class Built:
    """A model ready to export: a module taking positional tensors and returning a tuple of tensors."""

    module: Any
    inputs: list[TensorSpec]  # in the module's positional order; what stages.inputs generates feeds from
    output_names: list[str]
    dynamic: dict[str, dict[int, str]]  # input name -> {axis: symbolic dim name}
    text: bool = False
    vocab: int | None = None  # a text model's vocabulary size (token ids are drawn below it)
    side_files: dict[str, Path] = field(default_factory=dict)  # staged beside model.onnx
    info: dict[str, Any] = field(default_factory=dict)  # manifest extras
    labels: list[str] | None = None  # a classifier's class names, in output order (labels.txt)
    preprocessing: dict[str, Any] | None = None  # from the source's metadata (stages.preprocess)

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]


def _vision(module, shape: tuple[int, ...], info: dict, name: str = "input", output: str = "logits") -> Built:
    return Built(module=module, inputs=[TensorSpec(name, "float32", ("batch", *shape[1:]))], output_names=[output],
                 dynamic={name: {0: "batch"}}, info=info)


def load_state_dict(path: Path, card) -> dict:
    """Weights without code: safetensors, or a pickle restricted to tensors (weights_only=True)."""
    import pickle

    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise StagingError(f"{card.path}: {path.name} is a pickle that needs weights_only=False to load ({first})",
                           fix="refusing to unpickle arbitrary objects; pin a safetensors file or plain state dict") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state


def _load_strict(module, state: dict, card) -> None:
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise StagingError(f"{card.path}: weights do not fit the architecture (missing {result.missing_keys[:3]}, "
                           f"unexpected {result.unexpected_keys[:3]})",
                           fix="the weights belong to another architecture or variant; check `model:`/`weights:`")


def build_torchvision(card, raw, settings) -> Built:
    import torchvision

    from stages.sources.torch_zoos import Torchvision

    spec = card.source
    weights = Torchvision.weights_enum(spec)
    num_classes = len(weights.meta.get("categories") or []) or None
    kwargs = {"num_classes": num_classes} if num_classes else {}
    if spec.model in ("googlenet", "inception_v3"):
        kwargs.update(aux_logits=False, init_weights=False)
    module = torchvision.models.get_model(spec.model, weights=None, **kwargs).eval()
    _load_strict(module, load_state_dict(raw.file("weights"), card), card)
    crop = getattr(weights.transforms(), "crop_size", [224])[0]
    shape = spec.input_shape or (1, 3, crop, crop)
    built = _vision(module, shape, {"architecture": f"torchvision.models.{spec.model}", "weights": spec.weights})
    built.labels = list(weights.meta.get("categories") or []) or None  # the weights' own meta
    built.preprocessing = preprocess.from_torchvision(weights)
    return built


def build_timm(card, raw, settings) -> Built:
    import timm

    config = json.loads(raw.file_named("config.json").read_text())
    arch = config.get("architecture") or card.source.model.split(".")[0]
    kwargs = dict(config.get("model_args") or {})
    if "num_classes" in config:
        kwargs.setdefault("num_classes", config["num_classes"])
    module = timm.create_model(arch, pretrained=False, **kwargs).eval()
    weights = [p for p in raw.all("repo") if p.suffix in (".safetensors", ".bin")]
    state: dict = {}
    for path in weights:
        state.update(load_state_dict(path, card))
    _load_strict(module, state, card)
    from timm.data import resolve_data_config

    data_config = resolve_data_config({}, pretrained_cfg=config.get("pretrained_cfg") or {})  # timm's eval transform
    built = _vision(module, (1, *data_config["input_size"]), {"architecture": f"timm {arch}"})
    built.preprocessing = preprocess.from_timm(data_config)
    built.labels = timm_labels(config, module.num_classes)
    return built


def timm_labels(config: dict, num_classes: int) -> list[str] | None:
    """Class names from the hub config (label_names / label_descriptions), else timm's ImageNet info."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    names, descriptions = config.get("label_names"), config.get("label_descriptions") or {}
    if isinstance(names, list) and len(names) == num_classes:
        return [str(descriptions.get(n, n)) if isinstance(descriptions, dict) else str(n) for n in names]
    subset = infer_imagenet_subset({**(config.get("pretrained_cfg") or {}), "num_classes": num_classes})
    if subset is None:
        return None
    info = ImageNetInfo(subset)
    return [info.index_to_description(i) for i in range(info.num_classes())]


def safe_extract_zip(archive: Path, dest: Path) -> list[str]:
    """Extract a zip after checking every entry: no absolute paths, no '..', no symlinks."""
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            check_entry_name(archive, info.filename)
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise UnsafeArchiveError(f"{archive}: entry {info.filename!r} is a symbolic link",
                                         fix="refusing to extract it; the archive is malformed or malicious")
        names = []
        for info in infos:
            if info.is_dir():
                continue
            target = dest / check_entry_name(archive, info.filename)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                out.write(src.read())
            names.append(info.filename)
        return names


def _require_trust(card, what: str) -> None:
    if not card.trust_code:
        raise StagingError(f"{card.path}: staging runs third-party code ({what})",
                           fix="review that code at the pinned version, then set `trust_code: true` in the card")


def build_torchhub(card, raw, settings, workdir: Path) -> Built:
    import torch

    spec = card.source
    _require_trust(card, f"{spec.repo}'s hubconf.py at {spec.ref}")
    code = workdir / "hub"
    safe_extract_zip(raw.file("code"), code)
    tops = [p for p in code.iterdir() if p.is_dir()]
    if len(tops) != 1 or not (tops[0] / "hubconf.py").is_file():
        raise StagingError(f"{card.path}: the archive of {spec.repo}@{spec.ref} has no single folder with hubconf.py",
                           fix="check `repo:` and `ref:`; torch.hub repos keep hubconf.py at their root")
    module = torch.hub.load(str(tops[0]), spec.entrypoint, source="local", trust_repo=True, **dict(spec.kwargs))
    if spec.weights:
        _load_strict(module, load_state_dict(raw.file("weights"), card), card)
    return _vision(module.eval(), spec.input_shape, {"architecture": f"torch.hub {spec.repo}:{spec.entrypoint}"})


def build_torchserve(card, raw, settings, workdir: Path) -> Built:
    import importlib.util
    import inspect
    import sys

    import torch

    archive = raw.file("archive")
    folder = workdir / "mar"
    names = safe_extract_zip(archive, folder)
    if "MAR-INF/MANIFEST.json" not in names:
        raise StagingError(f"{card.path}: {archive.name} has no MAR-INF/MANIFEST.json",
                           fix="not a TorchServe archive; check `source.url`")
    model = json.loads((folder / "MAR-INF/MANIFEST.json").read_text()).get("model", {})
    serialized = folder / check_entry_name(archive, model.get("serializedFile") or "")
    if not serialized.is_file():
        raise StagingError(f"{card.path}: the manifest names serializedFile {model.get('serializedFile')!r}, "
                           "which the archive lacks", fix="the archive is incomplete; pin another one")
    info = {"architecture": f"torchserve {model.get('modelName')}", "handler": model.get("handler")}
    labels = torchserve_labels(folder / "index_to_name.json")
    if not model.get("modelFile"):
        module = torch.jit.load(str(serialized), map_location="cpu").eval()
        built = _vision(module, card.source.input_shape, info | {"mode": "torchscript"})
        built.labels = labels
        return built
    _require_trust(card, f"{archive.name}'s {model['modelFile']}")
    path = folder / check_entry_name(archive, model["modelFile"])
    spec = importlib.util.spec_from_file_location(f"zoo_mar_{card.name.replace('-', '_')}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    classes = [c for _, c in inspect.getmembers(mod, inspect.isclass)
               if issubclass(c, torch.nn.Module) and c.__module__ == mod.__name__]
    if len(classes) != 1:
        raise StagingError(f"{card.path}: {model['modelFile']} defines {len(classes)} nn.Module classes, not one",
                           fix="TorchServe's convention is one model class per model file")
    module = classes[0]()
    _load_strict(module, load_state_dict(serialized, card), card)
    built = _vision(module.eval(), card.source.input_shape, info | {"mode": "eager"})
    built.labels = labels
    return built


HF_TASK_CLASSES = {
    "feature-extraction": "AutoModel",
    "text-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "fill-mask": "AutoModelForMaskedLM",
    "question-answering": "AutoModelForQuestionAnswering",
    "image-classification": "AutoModelForImageClassification",
}


def build_huggingface(card, raw, settings, workdir: Path) -> Built:
    import torch
    import transformers

    spec = card.source
    config = json.loads(raw.file_named("config.json").read_text())
    if config.get("auto_map") and not card.trust_code:
        _require_trust(card, f"{spec.repo}'s remote code ({sorted(config['auto_map'])[0]})")
    files = raw.all("repo")  # verifies every file's hash before transformers reads the folder
    for path in files:  # our own weights_only check first: transformers' wrapping hides why a pickle failed
        if path.suffix == ".bin":
            load_state_dict(path, card)
    cls = getattr(transformers, HF_TASK_CLASSES[spec.task])
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
        raise StagingError(f"{card.path}: transformers cannot build {HF_TASK_CLASSES[spec.task]} from "
                           f"{spec.repo}@{spec.revision[:12]}: {text.splitlines()[0][:200]}",
                           fix="check `task:` against the model's architecture") from None
    if spec.task == "image-classification":
        size = config.get("image_size", 224)
        size = size if isinstance(size, int) else size[0]
        built = _vision(_HFWrapper(module, ["pixel_values"], ["logits"]), (1, config.get("num_channels", 3), size, size),
                        {}, name="pixel_values")
        built.info = {"architecture": (config.get("architectures") or ["?"])[0]}
        built.labels = hf_labels(config, spec.task)
        built.preprocessing, _ = preprocess.from_hf(raw.path, config, spec.task, workdir)
        return built
    forward = module.forward.__code__.co_varnames
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in forward]
    with torch.no_grad():
        probe = module(**{n: torch.ones((1, 4), dtype=torch.long) for n in names})
    outputs = [k for k, v in probe.items() if isinstance(v, torch.Tensor)]
    side = {p.name: p for p in raw.all("repo") if p.name != "model.safetensors" and p.suffix not in (".bin", ".safetensors")
            and not p.name.endswith(".index.json")}
    pre, extra = preprocess.from_hf(raw.path, config, spec.task, workdir)
    side.update(extra)
    return Built(module=_HFWrapper(module, names, outputs), output_names=outputs,
                 inputs=[TensorSpec(n, "int64", ("batch", "sequence")) for n in names],
                 dynamic={n: {0: "batch", 1: "sequence"} for n in names}, text=True,
                 vocab=int(config.get("vocab_size", 100)),
                 side_files=side, info={"architecture": (config.get("architectures") or ["?"])[0],
                                        "task": spec.task}, labels=hf_labels(config, spec.task),
                 preprocessing=pre)


def _hf_wrapper_class():
    import torch

    class HFWrapper(torch.nn.Module):
        """Positional tensors in, a tuple of named outputs out: what both exporters trace cleanly."""

        def __init__(self, model, inputs: list[str], outputs: list[str]):
            super().__init__()
            self.model, self.inputs, self.outputs = model, inputs, outputs

        def forward(self, *args):
            result = self.model(**dict(zip(self.inputs, args)), return_dict=True)
            return tuple(result[k] for k in self.outputs)

    return HFWrapper


def _HFWrapper(model, inputs, outputs):  # noqa: N802 - a class built lazily (torch imported on use)
    return _hf_wrapper_class()(model, inputs, outputs).eval()


def build(card, raw, settings, workdir: Path) -> Built:
    kind = card.kind
    if kind == "torchvision":
        return build_torchvision(card, raw, settings)
    if kind == "timm":
        return build_timm(card, raw, settings)
    if kind == "torchhub":
        return build_torchhub(card, raw, settings, workdir)
    if kind == "torchserve":
        return build_torchserve(card, raw, settings, workdir)
    if kind == "huggingface":
        return build_huggingface(card, raw, settings, workdir)
    raise StagingError(f"{card.path}: the torch converter cannot build kind {kind!r}", fix="this is a registry bug")
