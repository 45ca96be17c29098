"""Release diffs: what changed in the zoo between two revisions, from git alone.

Pure functions over two snapshots (stages.gitio): models added, removed and changed, and for each
changed model which aspects changed. Rendered as a terminal table, JSON or Markdown.
"""

from __future__ import annotations

import json
from typing import Any

ASPECTS = ("source", "files", "opset", "io", "converter", "validation", "license", "preprocessing")


def model_view(index_entry: dict | None, manifest: dict | None) -> dict[str, Any]:
    """The comparable facts of one model; a card never staged has only its source pins."""
    manifest = manifest or {}
    model = manifest.get("model", {})
    validation = manifest.get("validation", {})
    converter = manifest.get("converter", {})
    return {
        "format": (index_entry or {}).get("format") or manifest.get("format"),
        "source": (index_entry or {}).get("source") or manifest.get("source"),
        "files": manifest.get("files"),
        "opset": model.get("opset"),
        "io": {"inputs": model.get("inputs"), "outputs": model.get("outputs")} if model else None,
        "converter": ({"versions": converter.get("versions"), "params_sha256": converter.get("params_sha256")}
                      if converter else None),
        "validation": ({k: validation.get(k) for k in ("max_abs_error", "max_rel_error", "atol", "rtol", "passed")}
                       if validation else None),
        "license": manifest.get("license"),
        "preprocessing": manifest.get("preprocessing"),
    }


def views(snap) -> dict[str, dict]:
    names = set(snap.index.get("cards", {})) | set(snap.manifests)
    return {n: model_view(snap.index.get("cards", {}).get(n), snap.manifests.get(n)) for n in sorted(names)}


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out = {}
        for key, sub in value.items():
            out.update(_flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def _files_change(old: dict | None, new: dict | None) -> dict:
    old, new = old or {}, new or {}
    return {
        "added": {p: new[p] for p in sorted(set(new) - set(old))},
        "removed": {p: old[p] for p in sorted(set(old) - set(new))},
        "changed": {p: {"from": old[p], "to": new[p]} for p in sorted(set(old) & set(new)) if old[p] != new[p]},
    }


def aspect_change(aspect: str, old: Any, new: Any) -> dict:
    if aspect == "files":
        return _files_change(old, new)
    flat_old, flat_new = _flatten(old), _flatten(new)
    keys = sorted(set(flat_old) | set(flat_new))
    return {k: {"from": flat_old.get(k), "to": flat_new.get(k)} for k in keys if flat_old.get(k) != flat_new.get(k)}


def diff(old_snap, new_snap) -> dict[str, Any]:
    old, new = views(old_snap), views(new_snap)
    changed = {}
    for name in sorted(set(old) & set(new)):
        aspects = {a: aspect_change(a, old[name][a], new[name][a]) for a in ASPECTS if old[name][a] != new[name][a]}
        if aspects:
            changed[name] = aspects
    return {
        "from": {"rev": old_snap.rev, "commit": old_snap.commit},
        "to": {"rev": new_snap.rev, "commit": new_snap.commit},
        "added": {n: new[n]["format"] for n in sorted(set(new) - set(old))},
        "removed": {n: old[n]["format"] for n in sorted(set(old) - set(new))},
        "changed": changed,
        "unchanged": sorted(n for n in set(old) & set(new) if n not in changed),
    }


def _short(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12]
    if isinstance(value, dict) and "sha256" in value:
        return f"{value['sha256'][:12]} ({value.get('size', '?')} B)"
    if isinstance(value, float):
        return f"{value:.3g}"
    return json.dumps(value) if not isinstance(value, str) else value


def change_lines(aspect: str, change: dict) -> list[tuple[str, str, str]]:
    """(what, from, to) rows for one aspect of one model."""
    if aspect == "files":
        rows = [(f"files: + {p}", "", _short(v)) for p, v in change["added"].items()]
        rows += [(f"files: - {p}", _short(v), "") for p, v in change["removed"].items()]
        rows += [(f"files: {p}", _short(v["from"]), _short(v["to"])) for p, v in change["changed"].items()]
        return rows
    return [(f"{aspect}: {key}", _short(v["from"]), _short(v["to"])) for key, v in change.items()]


def summary_line(result: dict) -> str:
    return (f"{result['from']['rev']} ({result['from']['commit'][:10]}) -> {result['to']['rev']} "
            f"({result['to']['commit'][:10]}): {len(result['added'])} added, {len(result['removed'])} removed, "
            f"{len(result['changed'])} changed, {len(result['unchanged'])} unchanged")


def render_table(result: dict) -> str:
    lines = [summary_line(result)]
    for name, fmt in result["added"].items():
        lines.append(f"  + {name} ({fmt})")
    for name, fmt in result["removed"].items():
        lines.append(f"  - {name} ({fmt})")
    for name, aspects in result["changed"].items():
        lines.append(f"  ~ {name}: {', '.join(aspects)}")
        for aspect, change in aspects.items():
            for what, old, new in change_lines(aspect, change):
                lines.append(f"      {what}: {old or '-'} -> {new or '-'}")
    return "\n".join(lines) + "\n"


def render_markdown(result: dict) -> str:
    out = [f"## Zoo changes: {result['from']['rev']} → {result['to']['rev']}", "",
           f"{len(result['added'])} added, {len(result['removed'])} removed, {len(result['changed'])} changed, "
           f"{len(result['unchanged'])} unchanged.", ""]
    for title, key in (("Added", "added"), ("Removed", "removed")):
        if result[key]:
            out += [f"### {title}", ""] + [f"- `{n}` ({fmt})" for n, fmt in result[key].items()] + [""]
    if result["changed"]:
        out += ["### Changed", "", "| model | what | from | to |", "|---|---|---|---|"]
        for name, aspects in result["changed"].items():
            for aspect, change in aspects.items():
                for what, old, new in change_lines(aspect, change):
                    out.append(f"| `{name}` | {what} | {old.replace('|', '/')} | {new.replace('|', '/')} |")
        out.append("")
    return "\n".join(out)


def render_json(result: dict) -> str:
    return json.dumps(result, indent=2, sort_keys=True) + "\n"
