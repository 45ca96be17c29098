"""Manifests: `registry/<format>/<name>.manifest.json`, what was staged, tracked by git.

Pure functions over data: everything a release diff needs (file hashes and sizes, source pins,
converter versions, opset, I/O, validation numbers) is in this one canonical JSON file, written
atomically, with no timestamps or machine-specific paths, so restaging unchanged inputs rewrites
the same bytes.
"""

from __future__ import annotations

import platform
import re
from importlib import metadata
from pathlib import Path
from typing import Any

from stages.errors import ManifestError, ModelNotFound, VersionMismatchError
from stages.files import dumps_stable, sha256_file, write_json_atomic

SCHEMA = 1
PIN_RE = re.compile(r"^\s*([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*==\s*([^\s;#]+)")


def read_pins(pins_file: Path) -> dict[str, str]:
    """`name==version` lines of a pins file (comments and blank lines ignored)."""
    pins = {}
    for line in pins_file.read_text(encoding="utf-8").splitlines():
        match = PIN_RE.match(line)
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def converter_versions(pins_files: list[Path]) -> dict[str, str]:
    """Installed versions of the converter's pinned packages; refuses to stage when one differs.

    The pins file is a DVC dependency of the stage: if the code ran with other versions than the
    file says, `dvc repro` could not tell a converter upgrade happened.
    """
    found = {}
    pinned_all = {}
    for pins_file in pins_files:
        pinned_all.update({name: (version, pins_file) for name, version in read_pins(pins_file).items()})
    for name, (pinned, pins_file) in sorted(pinned_all.items()):
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != pinned:
            raise VersionMismatchError(
                f"{name} {installed or 'is not installed'}{' is installed' if installed else ''} but {pins_file} pins {pinned}",
                fix="install the pinned versions (`make venv`), or change the pin and restage with `dvc repro`")
        found[name] = installed
    found["python"] = ".".join(platform.python_version_tuple()[:2])  # patch releases would only add noise
    return found


def converter_record(converter, versions: dict, settings: dict) -> dict:
    """Which converter, which versions, which settings (hashed) produced the staged files."""
    import hashlib

    return {
        "name": converter.name,
        "versions": versions,
        "params_section": converter.params,
        "params_sha256": hashlib.sha256(dumps_stable(settings).encode()).hexdigest(),
    }


def file_records(folder: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file under a staged folder, by posix relative path."""
    records = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        records[path.relative_to(folder).as_posix()] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return records


def build(card, *, files: dict, source_files: list[dict], model: dict, converter: dict,
          validation: dict, extra: dict | None = None, fmt: str | None = None) -> dict[str, Any]:
    manifest = {
        "schema": SCHEMA,
        "name": card.name,
        "format": fmt or card.format,
        "description": card.description,
        "license": card.license,
        "tags": list(card.tags),
        "source": {"kind": card.kind, "files": source_files},
        "files": files,
        "model": model,
        "converter": converter,
        "validation": validation,
    }
    if extra:
        manifest.update(extra)
    return manifest


def write(path: Path, manifest: dict[str, Any]) -> None:
    write_json_atomic(path, manifest)


def read(path: Path) -> dict[str, Any]:
    """The manifest of a staged folder (`registry/<format>/<name>`) or at its own path, checked.

    The one reader of manifests for the commands people run on a pulled model (`zoo run`, `zoo
    verify`): a hand-edited, half-merged or non-UTF-8 file is a ManifestError naming it and how to
    get it back, not a JSONDecodeError; no file at all is a ModelNotFound (the path given is not a
    staged model: a usage error, exit 2).
    """
    import json

    path = Path(path)
    if not path.name.endswith(".manifest.json"):
        path = path.with_name(f"{path.name}.manifest.json")
    restore = f"restore it with `git checkout -- {path}`, or restage the model (`dvc repro`)"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelNotFound(f"{path}: no manifest", fix="give a staged model folder, registry/<format>/<name> "
                            "(its manifest, registry/<format>/<name>.manifest.json, is in git)") from None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot be read ({exc.strerror or exc})",
                            fix="check the path and its permissions") from None
    try:
        manifest = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})",
                            fix=restore) from None
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})",
                            fix=restore) from None
    if not isinstance(manifest, dict):
        raise ManifestError(f"{path}: expected a JSON object, got {type(manifest).__name__}", fix=restore)
    if not isinstance(manifest.get("format"), str):
        raise ManifestError(f"{path}: has no `format` (not a manifest the registry wrote)", fix=restore)
    return manifest


def _expected_files(folder: Path, manifest: dict[str, Any]) -> dict[str, tuple[int, str]]:
    """The manifest's `files` as {posix relative path: (size, sha256)}; a malformed entry is a ManifestError."""
    path = folder.with_name(f"{folder.name}.manifest.json")
    files = manifest.get("files")
    restore = f"restore it with `git checkout -- {path}`, or restage the model (`dvc repro`)"
    if not isinstance(files, dict) or not files:
        raise ManifestError(f"{path}: no `files` (the staged files' sha256 and size)", fix=restore)
    expected = {}
    for rel, rec in files.items():
        size, sha = (rec.get("size"), rec.get("sha256")) if isinstance(rec, dict) else (None, None)
        if not isinstance(size, int) or not isinstance(sha, str) or len(sha) != 64:
            raise ManifestError(f"{path}: files.{rel}: expected {{sha256, size}}, got {rec!r}"[:300], fix=restore)
        expected[rel] = (size, sha)
    return expected


def check_files(folder: Path, manifest: dict[str, Any], shown: str | None = None,
                known: dict[str, str] | None = None) -> tuple[int, int]:
    """Every file under a staged folder against its manifest's sizes and sha256: (files, bytes).

    Sizes first (no reading), then each sha256 streamed, or taken from `known` ({relpath: sha256} of
    files the caller hashed as it wrote or read them, so no file is read twice). Every difference is
    collected before raising, so one IntegrityError names each missing, extra or changed file with
    both values. `shown` is the folder as the user named it (default: relative to the current folder).
    """
    from stages.errors import IntegrityError

    folder = Path(folder)
    expected = _expected_files(folder, manifest)
    present = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()} if folder.is_dir() else {}
    problems = [f"{rel}: missing (expected {size} bytes, sha256 {sha[:12]})"
                for rel, (size, sha) in sorted(expected.items()) if rel not in present]
    problems += [f"{rel}: not in the manifest (an extra file, {present[rel].stat().st_size} bytes)"
                 for rel in sorted(present.keys() - expected.keys())]
    for rel in sorted(present.keys() & expected.keys()):
        size, sha = expected[rel]
        actual_size = present[rel].stat().st_size
        if actual_size != size:
            problems.append(f"{rel}: expected {size} bytes, got {actual_size}")
        elif (actual := (known or {}).get(rel) or sha256_file(present[rel])) != sha:
            problems.append(f"{rel}: expected sha256 {sha[:12]}, got {actual[:12]} (same size, {size} bytes)")
    if problems:
        listed = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        here = Path.cwd()
        where = shown or (folder.relative_to(here) if folder.is_relative_to(here) else folder).as_posix()
        count = "1 file differs" if len(problems) == 1 else f"{len(problems)} files differ"
        # DVC trusts a copy it checked out (its state db holds the hash), so the bad copy goes first
        raise IntegrityError(f"{where}: {count} from {where}.manifest.json: {listed}",
                             fix=f"get a good copy: `rm -r {where}` then `zoo pull {folder.parent.name}/{folder.name}` "
                                 f"(or `dvc pull {where}`, whose remote has verify = true); if it comes back wrong, "
                                 "the DVC cache is damaged: `zoo audit --repair` restores it from the remote")
    return len(expected), sum(size for size, _ in expected.values())
