"""Removing a model from the registry: its card and everything the pipeline made for it.

DVC forgets nothing on its own when a `foreach` item disappears: the lock entries, the outputs in
the workspace and their .gitignore lines stay. `zoo remove` takes them all out, so the next
commit's tree (what `zoo diff` and releases read) no longer has the model. Older releases keep
it: their tags still reference its data, and `zoo gc` keeps every tag's data.
"""

from __future__ import annotations

import re
from pathlib import Path

from stages.card import FORMATS, raw_dir
from stages.errors import ModelNotFound
from stages.files import remove, write_text_atomic


def _drop_gitignore_line(gitignore: Path, entry: str) -> None:
    if gitignore.exists():
        lines = gitignore.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if line.strip() != entry]
        if kept != lines:
            if kept:
                write_text_atomic(gitignore, "\n".join(kept) + "\n")
            else:
                gitignore.unlink()


def _drop_lock_entries(root: Path, name: str) -> list[str]:
    """The model's entries in every dvc.lock (its shard's, and the root one of the unsharded layout)."""
    from stages.shards import lock_files
    from stages.yamlio import RoundTrip

    yaml, dropped = RoundTrip(), []
    for lock in lock_files(root):
        data = yaml.load(lock.read_text(encoding="utf-8")) or {}
        stages = data.get("stages") or {}
        here = [key for key in list(stages) if re.fullmatch(rf"[a-z0-9-]+@{re.escape(name)}", key)]
        for key in here:
            del stages[key]
        if here:
            write_text_atomic(lock, yaml.dumps(data))
            dropped += [f"{lock.relative_to(root).as_posix()}: {key}" for key in here]
    return dropped


def remove_model(root: Path, name: str) -> list[str]:
    """Delete a model's card, manifest, staged and raw folders, .gitignore lines and lock entries."""
    from stages import index

    removed = []
    for fmt in FORMATS:
        base = root / "registry" / fmt
        for path in (base / f"{name}.yaml", base / f"{name}.manifest.json", base / name):
            if path.exists():
                remove(path)
                removed.append(path.relative_to(root).as_posix())
        _drop_gitignore_line(base / ".gitignore", f"/{name}")
    raw = root / raw_dir(name)
    if raw.exists():
        remove(raw)
        removed.append(raw.relative_to(root).as_posix())
    _drop_gitignore_line(raw.parent / ".gitignore", f"/{name}")
    removed += _drop_lock_entries(root, name)
    if not removed:
        raise ModelNotFound(f"registry/*/{name}.yaml: no model named {name!r}", fix="check `ls registry/*/`")
    index.write(root)
    return removed


def orphans(root: Path, staged: set[tuple[str, str]]) -> list[str]:
    """Manifests no card stages any more: `staged` holds (format, name) of every card and target.

    Left behind by deleting a card by hand instead of `zoo remove`, or by dropping a target.
    """
    found = []
    for fmt in FORMATS:
        for path in sorted((root / "registry" / fmt).glob("*.manifest.json")):
            if (fmt, path.name[: -len(".manifest.json")]) not in staged:
                found.append(path.relative_to(root).as_posix())
    return found
