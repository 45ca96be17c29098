"""What the DVC stages run: fetch a card's raw files, stage a card. The CLI only parses and calls these."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from stages import index
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
                               fix=f"run `dvc repro fetch@{card.name}` or `dvc pull {path.as_posix()}`") from None
        return cls(path, tuple(record["files"]))

    def has(self, role: str) -> bool:
        return any(f["role"] == role for f in self.files)

    def file(self, role: str) -> Path:
        return self.verified(next(f for f in self.files if f["role"] == role))

    def file_named(self, filename: str) -> Path:
        entry = next((f for f in self.files if f["filename"] == filename), None)
        if entry is None:
            raise StagingError(f"{self.path}: no raw file {filename}", fix=f"refetch: `dvc repro --force fetch@{self.path.name}`")
        return self.verified(entry)

    def all(self, role: str) -> list[Path]:
        return [self.verified(f) for f in self.files if f["role"] == role]

    def verified(self, entry: dict) -> Path:
        path = self.path / entry["filename"]
        if not path.is_file() or sha256_file(path) != entry["sha256"]:
            raise StagingError(f"{path}: raw file does not match its pinned sha256 {entry['sha256']}",
                               fix=f"refetch it: `dvc repro --force fetch@{self.path.name}`")
        return path


def fetch_card(root: Path, card_path: Path, pins: str | None = None) -> Path:
    """Download every pinned file of a card into registry/_raw/<name>/, verified, all or nothing.

    `pins` is the fingerprint the DVC stage's command carries; it must match the card.
    """
    card = load_card(card_path, root)
    index.check_card_pins(root, card, pins)
    files = get_kind(card.kind).remote_files(card.source)
    dest = root / card.raw_dir
    partial = root / ".dvc" / "tmp" / "zoo-partial" if (root / ".dvc").is_dir() else None
    records = []
    with building_dir(dest) as tmp:
        for remote in files:
            target = tmp / remote.filename
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


def load_params(root: Path) -> dict:
    import yaml

    return yaml.load((root / "params.yaml").read_text(encoding="utf-8"),
                     Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}


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
    index.check_card_pins(root, card)
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
