"""What the DVC stages run: fetch a card's raw files, stage a card. The CLI only parses and calls these."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from stages import indexfile
from stages.card import Card, load_card
from stages.errors import StagingError
from stages.fetch import download, download_hf
from stages.files import building_dir, sha256_file, write_json_atomic
from stages.sources import get_kind

log = logging.getLogger(__name__)
FETCH_RECORD = "_fetch.json"


@dataclass(frozen=True)
class RawFolder:
    """A fetched card's raw files (registry/_raw/<name>/) and the record of what each one is."""

    path: Path
    files: tuple[dict, ...]

    @classmethod
    def open(cls, path: Path, card: Card) -> "RawFolder":
        try:
            record = json.loads((path / FETCH_RECORD).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise StagingError(f"{path}: raw files of {card.name} are missing",
                               fix=f"run `dvc repro {_fetch_stage(path)}` or `dvc pull {path.as_posix()}`") from None
        return cls(path, tuple(record["files"]))

    def has(self, role: str) -> bool:
        return any(f["role"] == role for f in self.files)

    def file(self, role: str) -> Path:
        return self.verified(next(f for f in self.files if f["role"] == role))

    def file_named(self, filename: str) -> Path:
        entry = next((f for f in self.files if f["filename"] == filename), None)
        if entry is None:
            raise StagingError(f"{self.path}: no raw file {filename}", fix=f"refetch: `dvc repro --force {_fetch_stage(self.path)}`")
        return self.verified(entry)

    def all(self, role: str) -> list[Path]:
        return [self.verified(f) for f in self.files if f["role"] == role]

    def verified(self, entry: dict) -> Path:
        path = self.path / entry["filename"]
        if not path.is_file() or sha256_file(path) != entry["sha256"]:
            raise StagingError(f"{path}: raw file does not match its pinned sha256 {entry['sha256']}",
                               fix=f"refetch it: `dvc repro --force {_fetch_stage(self.path)}`")
        return path


def _fetch_stage(raw: Path) -> str:
    """The fetch stage's DVC address for a raw folder registry/_raw/<name>."""
    return indexfile.address_of(raw.parents[2] if len(raw.parents) > 2 else Path("."), raw.name, "fetch")


def fetch_card(root: Path, card_path: Path, pins: str | None = None) -> Path:
    """Download every pinned file of a card into registry/_raw/<name>/, verified, all or nothing.

    `pins` is the fingerprint the DVC stage's command carries; it must match the card.
    """
    card = load_card(card_path, root)
    indexfile.check_card_pins(root, card, pins)
    files = get_kind(card.kind).remote_files(card.source)
    dest = root / card.raw_dir
    partial = root / ".dvc" / "tmp" / "zoo-partial" if (root / ".dvc").is_dir() else None
    records = []
    with building_dir(dest) as tmp:
        for remote in files:
            target = tmp / _inside(card, remote.filename)
            target.parent.mkdir(parents=True, exist_ok=True)
            moved: list[str] = []
            if remote.url:
                size, sha = _download_url(remote, target, card, partial, moved)
            else:
                size, sha = download_hf(remote.hf_repo, remote.hf_revision, remote.hf_path, target,
                                        remote.sha256, remote.git_sha1)
            record = remote.record() | {"sha256": sha, "size": size}
            if moved:
                record["redirected_to"] = moved[-1]
                log.warning("%s: %s has moved: served from %s (bytes verified against the pin)",
                            card.name, remote.url, moved[-1])
            records.append(record)
            log.info("%s: fetched %s (%d bytes, sha256 ok)", card.name, remote.describe(), size)
        write_json_atomic(tmp / FETCH_RECORD, {"card": card.name, "kind": card.kind, "files": records})
    return dest


def _inside(card: Card, filename: str) -> str:
    """An upstream file name (a hub's listing chooses it) as a path inside the raw folder, or refused."""
    from pathlib import PurePosixPath

    from stages.errors import UnsafeArchiveError

    rel = PurePosixPath(filename.replace("\\", "/"))
    if not rel.parts or rel.is_absolute() or ".." in rel.parts:
        raise UnsafeArchiveError(f"{card.path}: the upstream file name {filename!r} would be written outside "
                                 f"{card.raw_dir.as_posix()}",
                                 fix="refusing it: the upstream listing is malformed or malicious; pin another revision")
    return rel.as_posix()


def _download_url(remote, target: Path, card: Card, partial: Path | None, moved: list[str]) -> tuple[int, str]:
    from stages.errors import HTTPStatusError

    try:
        return download(remote.url, target, remote.sha256, sha256_prefix=remote.sha256_prefix, md5=remote.md5,
                        desc=f"{card.name}: {remote.filename}", partial_dir=partial, redirects=moved)
    except HTTPStatusError as exc:
        if remote.moved_hint and exc.status in (401, 403, 404, 410):
            where = f" (after redirects to {moved[-1]})" if moved else ""
            raise HTTPStatusError(remote.url, exc.status, f"HTTP {exc.status}{where}: the handle no longer serves "
                                  "the model here", fix=remote.moved_hint, requested=exc.requested) from None
        raise


def _number(v, low: float = 0.0) -> bool:
    """A finite number >= low; a string such as `1e-4` counts (YAML 1.1 reads it as a string, float() does not care)."""
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        return False
    try:
        return math.isfinite(float(v)) and float(v) >= low
    except ValueError:
        return False


def _whole(v, low: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _bounds(v, check) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(map(check, v)) and float(v[0]) < float(v[1])


# The keys of params.yaml's converter sections, wherever they appear: (check, what it must be, example).
PARAM_KEYS = {
    "atol": (_number, "a non-negative number", "atol: 1.0e-4"),
    "rtol": (_number, "a non-negative number", "rtol: 1.0e-3"),
    "seed": (_whole, "a non-negative integer", "seed: 0"),
    "threads": (lambda v: _whole(v, 1), "a positive integer", "threads: 1"),
    "opset": (lambda v: _whole(v, 1), "a positive integer", "opset: 17"),
    "dim_default": (lambda v: _whole(v, 1), "a positive integer", "dim_default: 1"),
    "batch_sizes": (lambda v: isinstance(v, list) and bool(v) and all(_whole(b, 1) for b in v),
                    "a non-empty list of positive integers", "batch_sizes: [1, 2]"),
    "sequence_lengths": (lambda v: isinstance(v, list) and bool(v) and all(_whole(b, 1) for b in v),
                         "a non-empty list of positive integers", "sequence_lengths: [8, 16]"),
    "dim_values": (lambda v: isinstance(v, dict) and all(isinstance(k, str) and _whole(n, 1) for k, n in v.items()),
                   "a mapping of dim names to positive integers", "dim_values: {sequence_length: 16}"),
    "int_range": (lambda v: _bounds(v, _whole), "[low, high] integers with low < high", "int_range: [0, 100]"),
    "float_range": (lambda v: _bounds(v, lambda x: _number(x, -math.inf)), "[low, high] numbers with low < high",
                    "float_range: [0.0, 1.0]"),
    "exporter": (lambda v: v in ("dynamo", "torchscript"), "one of dynamo, torchscript", "exporter: dynamo"),
    "external_data_threshold_mb": (_number, "a non-negative number (0 puts every weight in model.onnx.data)",
                                   "external_data_threshold_mb: 1800"),
    "skip_optimizers": (lambda v: isinstance(v, list) and all(isinstance(o, str) for o in v),
                        "a list of tf2onnx optimizer names", "skip_optimizers: [optimize_transpose]"),
    "allow": (lambda v: isinstance(v, list) and all(isinstance(a, str) for a in v), "a list of SPDX licence ids",
              "allow: [apache-2.0, mit]"),
}
# What each section must hold: the keys its converter reads without a default (`settings["key"]`).
PARAM_SECTIONS = {
    "licenses": (),
    "onnx": ("atol", "rtol", "batch_sizes"),
    "torch": ("exporter", "opset", "atol", "rtol", "batch_sizes", "sequence_lengths", "external_data_threshold_mb"),
    "tensorflow": ("atol", "rtol", "seed", "batch_sizes", "sequence_lengths"),
    "tf2onnx": ("opset", "atol", "rtol", "seed", "batch_sizes", "sequence_lengths"),
}


def load_params(root: Path) -> dict:
    """params.yaml, read by the one YAML reader (card.load_yaml) and checked key by key.

    A stage runs its converter minutes after it starts: a typo there must be one line naming
    params.yaml, the section and the key when the stage begins, not a KeyError or a TypeError from
    deep inside an export. Unknown sections and keys are left alone (they are no converter's).
    """
    from stages.card import load_yaml
    from stages.errors import ConfigError

    def error(where, problem, fix):
        return ConfigError(f"params.yaml: {where}: {problem}" if where else f"params.yaml: {problem}", fix=fix)

    params = load_yaml(root / "params.yaml", Path("params.yaml"), what="params.yaml", error=error)
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise error(None, f"expected a mapping, got {type(params).__name__}",
                    "write `section:` lines, each holding `key: value` lines (see the repository's params.yaml)")
    for section, required in PARAM_SECTIONS.items():
        if section not in params:
            continue  # the stage that needs it says so (stage_card, check_license)
        settings = params[section]
        if not isinstance(settings, dict):
            raise error(section, f"expected a mapping, got {type(settings).__name__}",
                        "restore the section from the repository's params.yaml")
        for key in required:
            if settings.get(key) is None:
                raise error(f"{section}.{key}", "missing",
                            f"add `{key}:` to the `{section}:` section (the repository's params.yaml has it)")
        for key, value in settings.items():
            if key in PARAM_KEYS and not (value is None and key not in required):
                check, expected, example = PARAM_KEYS[key]
                if not check(value):
                    raise error(f"{section}.{key}", f"expected {expected}, got {value!r}", f"write e.g. `{example}`")
    return params


def check_license(card: Card, params: dict) -> None:
    """A card's licence must be on params.yaml's allow-list (`licenses.allow`) to be staged."""
    allow = (params.get("licenses") or {}).get("allow")
    if not isinstance(allow, list):
        raise StagingError("params.yaml has no `licenses: {allow: [...]}` list",
                           fix="restore that section from the repository's params.yaml")
    if card.license.lower() not in {str(a).lower() for a in allow}:
        raise StagingError(f"{card.path}: licence {card.license!r} is not in params.yaml licenses.allow "
                           f"({', '.join(map(str, allow))})",
                           fix="add it there if its terms fit how this zoo is used, or remove the model "
                               "(`zoo remove`)")


def stage_labels(card: Card, derived: list[str] | None, model: dict, out: Path) -> None:
    """labels.txt beside the model, counted in the manifest: the card's declaration wins over the
    source's (`derived`); a classifier must end up with names, as many as its output has scores."""
    from stages import labels

    names = card.labels or derived
    if names:
        labels.check_width(card, list(names), model.get("outputs") or [])
        model["labels"] = labels.write(out, names)
    elif labels.is_classifier(card):
        raise StagingError(f"{card.path}: a classifier without class names: the {card.kind} source gives none and "
                           "the card declares none", fix="add `labels:` to the card (a list, or imagenet-1k)")


def stage_card(root: Path, card_path: Path, target: str | None = None) -> Path:
    """Stage a card from its raw files into registry/<format>/<name>/ and write its manifest.

    `target` stages one of the card's extra `targets:` (e.g. onnx) into registry/<target>/<name>/.
    """
    from stages import manifest, preprocess
    from stages.convert import for_card

    card = load_card(card_path, root)
    indexfile.check_card_pins(root, card)
    fmt = target or card.format
    if fmt != card.format and fmt not in card.targets:
        raise StagingError(f"{card.path}: {fmt!r} is not one of the card's targets ({', '.join((card.format, *card.targets))})",
                           fix="add it to the card's `targets:` and run `zoo index`")
    converter = for_card(card, fmt)
    params = load_params(root)
    settings = params.get(converter.params)
    if not isinstance(settings, dict):
        raise StagingError(f"params.yaml has no `{converter.params}:` section (the {converter.name} converter's settings)",
                           fix="restore that section from the repository's params.yaml")
    check_license(card, params)
    versions = manifest.converter_versions([root / pins for pins in converter.pins])
    raw = RawFolder.open(root / card.raw_dir, card)
    dest = root / card.target_dir(fmt)
    with building_dir(dest) as tmp:
        sections = converter.run()(card, raw, tmp, settings)
        model = sections["model"]
        pre = preprocess.check(card.preprocessing or sections.get("preprocessing"), card, model.get("inputs") or [], tmp)
        stage_labels(card, sections.get("labels"), model, tmp)
        files = manifest.file_records(tmp)
    data = manifest.build(card, files=files, source_files=list(raw.files), model=model,
                          converter=manifest.converter_record(converter, versions, settings),
                          validation=sections["validation"], fmt=fmt, extra={"preprocessing": pre})
    manifest.write(root / card.target_manifest(fmt), data)
    return dest
