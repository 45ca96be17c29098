"""`zoo catalog`: the zoo as a static website, from git alone (no `dvc pull`, no network, no server).

Three kinds of page, plain HTML with one CSS and one JavaScript file in `assets/`, relative links
only, so the folder can be served from anywhere or opened as file://:
- `index.html`: every model (artifact) in one sortable, filterable table (`#models`); complete
  without JavaScript, the script only sorts and filters;
- `models/<artifact>.html`: how to get it, its inputs and outputs, preprocessing, classes,
  validation, every file's sha256, upstream pins, converter, licence, history across releases;
- `releases.html`: every `zoo-v*` release's diff (stages.diff), and inline SVG charts.

Everything comes from `registry/index.json`, the manifests and the cards, at one revision (read
through stages.gitio: one `git ls-tree` and one `git cat-file --batch` per revision, whatever the
number of models) or in the working tree, plus each release tag reachable from it. Bad input never
stops a build: a manifest that is missing, malformed or lacks a field is shown as a gap with a
note. The same revision gives byte-identical files (nothing timed, everything sorted, floats
formatted one way), built in a temp folder and swapped in whole (stages.files.building_dir).
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from stages import diff as zdiff
from stages import gitio
from stages.errors import ConfigError, GitError
from stages.files import building_dir, human_size

INDEX = "registry/index.json"
CARD_RE = re.compile(r"^registry/([a-z]+)/([a-z0-9-]+)\.yaml$")
NAME_RE = re.compile(r"^[a-z0-9-]+$")  # the names gitio.MANIFEST_RE accepts: safe as file names
CODE_RE = re.compile(r"`([^`]+)`")
URL_RE = re.compile(r"^https?://[^\s\"'<>]+$")  # only these become links (never javascript: or data:)
PLACEHOLDER_URL = "<registry-url>"
NOT_RECORDED = "not recorded"
DASH = "\u2014"
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f")
FIRST_LABELS = 10
COLOURS = {"L": "greyscale (L)", "RGB": "RGB", "BGR": "BGR (channels reversed)"}
SECTION_TYPES = {"model": dict, "validation": dict, "converter": dict, "source": dict, "preprocessing": dict,
                 "files": dict, "tags": list}
RECORDED = ("files", "model", "validation", "converter", "source", "license", "preprocessing")


# ----------------------------------------------------------------------------- the registry at one revision

@dataclass
class Model:
    """One artifact: a card's own format under its name, or a card's target as `<name>-<format>`."""

    artifact: str
    name: str                      # the card's name: the folder registry/<format>/<name>/
    format: str
    manifest: dict | None          # cleaned (see _clean_manifest); None: not staged or unreadable
    staged: bool                   # a manifest file exists (it may still be unreadable)
    entry: dict                    # its card's registry/index.json entry
    card: dict                     # its card file's fields, when readable
    notes: list[str] = field(default_factory=list)  # what is missing or malformed, shown on its page
    labels: list[str] | None = None  # class names in output order, when git or the working tree holds them
    labels_from: str = ""


@dataclass
class State:
    label: str
    commit: str
    index: dict
    models: dict[str, Model]
    notes: list[str]

    def snapshot(self) -> gitio.Snapshot:
        """What stages.diff compares: the cleaned index and the readable manifests."""
        return gitio.Snapshot(rev=self.label, commit=self.commit, index=self.index,
                              manifests={a: m.manifest for a, m in self.models.items() if m.manifest is not None})


@dataclass
class Release:
    tag: str
    commit: str
    date: str
    state: State
    diff: dict  # against the previous release (the first: against an empty zoo)


@dataclass
class Site:
    """Everything the pages are made of: the selected revision, its releases, per-model history."""

    state: State
    releases: list[Release]
    unreleased: dict | None
    history: dict[str, list[tuple[str, str, list]]]
    upstream: dict[str, dict]
    url: str

    def last_changed(self, artifact: str) -> str | None:
        """The latest release that added or changed it: its GTO version tag `<artifact>@v<version>`."""
        tags = [tag for tag, what, _ in self.history.get(artifact, []) if tag != "unreleased" and what != "removed"]
        return tags[-1] if tags else None

    def latest_holding(self, artifact: str) -> str | None:
        """The latest release whose zoo has it staged."""
        held = [r.tag for r in self.releases
                if artifact in r.state.models and r.state.models[artifact].manifest is not None]
        return held[-1] if held else None


def _wanted(cards: bool) -> Callable[[str], bool]:
    """Which registry paths a revision is read for: the index, the manifests and (for the one built) the cards."""
    def keep(path: str) -> bool:
        return path == INDEX or bool(gitio.MANIFEST_RE.match(path)) or (cards and bool(CARD_RE.match(path)))
    return keep


def _worktree_blobs(root: Path) -> dict[str, bytes | None]:
    """The working tree's index, manifests and cards as {path: bytes} (None: unreadable)."""
    registry = root / "registry"
    paths = [registry / "index.json", *registry.glob("*/*.manifest.json"), *registry.glob("*/*.yaml")]
    blobs: dict[str, bytes | None] = {}
    for path in sorted(paths):
        rel = path.relative_to(root).as_posix()
        if not (path.is_file() and _wanted(True)(rel)):
            continue
        try:
            blobs[rel] = path.read_bytes()
        except OSError:
            blobs[rel] = None
    return blobs


def _load_json(path: str, blob: bytes | None) -> tuple[Any, str | None]:
    if blob is None:
        return None, f"{path} cannot be read"
    try:
        return json.loads(blob), None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None, f"{path} is not valid JSON ({str(exc)[:120]}); restore it: `git checkout -- {path}` or `dvc repro`"


def _load_card(path: str, blob: bytes | None) -> dict:
    """A card's fields for display; a card that does not parse shows nothing (`zoo check` names its error)."""
    from stages.yamlio import parse

    if blob is None:
        return {}
    try:
        data = parse(blob)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _clean_index(data: Any) -> tuple[dict, list[str]]:
    """The index with only well-formed entries, so that stages.diff and the pages can trust its shape."""
    if not isinstance(data, dict):
        return {"cards": {}, "converters": {}}, ([f"{INDEX} is not a JSON object"] if data is not None else [])
    notes = []
    cards = data.get("cards") if isinstance(data.get("cards"), dict) else {}
    bad = sorted(str(n) for n, e in cards.items() if not (NAME_RE.match(n) and isinstance(e, dict)))
    if bad:
        notes.append(f"{INDEX}: malformed card entries ignored: {', '.join(bad[:5])}")
    raw = data.get("converters") if isinstance(data.get("converters"), dict) else {}
    converters = {conv: {n: e for n, e in entries.items() if isinstance(e, dict) and isinstance(e.get("format"), str)}
                  for conv, entries in raw.items() if isinstance(entries, dict)}
    return {"cards": {n: e for n, e in cards.items() if n not in bad}, "converters": converters}, notes


def _clean_manifest(data: Any, path: str) -> tuple[dict | None, list[str]]:
    """The manifest with every section of the wrong type dropped, and notes saying what is missing or dropped."""
    if not isinstance(data, dict):
        return None, [f"{path} is not a JSON object"]
    out, notes = dict(data), []
    for key, kind in SECTION_TYPES.items():
        if key in out and not isinstance(out[key], kind):
            notes.append(f"`{key}` is malformed (not a JSON {'object' if kind is dict else 'list'}); ignored")
            del out[key]
    for key in ("name", "format", "description", "license"):
        if key in out and not isinstance(out[key], str):
            notes.append(f"`{key}` is malformed (not a string); ignored")
            del out[key]
    if "tags" in out:
        out["tags"] = [t for t in out["tags"] if isinstance(t, str)]
    if isinstance(out.get("files"), dict):
        out["files"] = {p: _clean_file(p, rec, notes) for p, rec in out["files"].items()}
    if isinstance(out.get("model"), dict):
        model = out["model"] = dict(out["model"])
        for key in ("inputs", "outputs"):
            if key in model and not (isinstance(model[key], list) and all(isinstance(x, dict) for x in model[key])):
                notes.append(f"`model.{key}` is malformed; ignored")
                del model[key]
    notes += [f"no `{key}` record" for key in RECORDED if key not in out and key not in data]
    return out, notes


def _clean_file(path: str, record: Any, notes: list[str]) -> dict:
    record = dict(record) if isinstance(record, dict) else {}
    sha256, size = record.get("sha256"), record.get("size")
    if not (isinstance(sha256, str) and re.fullmatch(r"[0-9a-f]{64}", sha256)):
        notes.append(f"files: {path}: sha256 {NOT_RECORDED}")
        record.pop("sha256", None)
    if not _is_size(size):
        notes.append(f"files: {path}: size {NOT_RECORDED}")
        record.pop("size", None)
    return record


def _is_size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _card_labels(card: dict) -> tuple[list[str] | None, str]:
    declared = card.get("labels")
    if isinstance(declared, list) and all(isinstance(x, str) for x in declared):
        return declared, "declared in the card"
    if isinstance(declared, str):
        return None, f"the named set `{declared}`, declared in the card"
    return None, ""


def _worktree_labels(root: Path, model: Model) -> list[str] | None:
    """labels.txt of a pulled folder, only when its sha256 is the manifest's (a stale copy is never shown)."""
    record = ((model.manifest or {}).get("files") or {}).get("labels.txt") or {}
    path = root / "registry" / model.format / model.name / "labels.txt"
    if "sha256" not in record or not path.is_file():
        return None
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if hashlib.sha256(data).hexdigest() != record["sha256"]:
        return None
    return data.decode("utf-8", errors="replace").splitlines()


def _state(label: str, commit: str, blobs: dict[str, bytes | None], root: Path | None = None) -> State:
    """The registry from its files' bytes: every artifact with a manifest, and every card's expected one."""
    raw_index, problem = _load_json(INDEX, blobs[INDEX]) if INDEX in blobs else (None, f"no {INDEX}")
    index, notes = _clean_index(raw_index)
    notes = ([problem] if problem else []) + notes
    cards = index["cards"]
    by_name = {}
    for path in sorted(p for p in blobs if CARD_RE.match(p)):
        name = CARD_RE.match(path).group(2)
        if name not in by_name or cards.get(name, {}).get("card") == path:
            by_name[name] = _load_card(path, blobs[path])
    expected = {name: (name, e["format"]) for name, e in cards.items() if isinstance(e.get("format"), str)}
    for entries in index["converters"].values():
        for name, entry in entries.items():
            if name in cards and entry["format"] != cards[name].get("format") and NAME_RE.match(entry["format"]):
                expected[f"{name}-{entry['format']}"] = (name, entry["format"])
    models: dict[str, Model] = {}
    for path in sorted(p for p in blobs if gitio.MANIFEST_RE.match(p)):
        fmt, name = gitio.MANIFEST_RE.match(path).groups()
        artifact = name if cards.get(name, {}).get("format", fmt) == fmt else f"{name}-{fmt}"
        data, problem = _load_json(path, blobs[path])
        manifest, problems = _clean_manifest(data, path) if problem is None else (None, [problem])
        models[artifact] = Model(artifact, name, fmt, manifest, True, cards.get(name, {}), by_name.get(name, {}), problems)
    for artifact, (name, fmt) in expected.items():
        if artifact not in models:
            models[artifact] = Model(artifact, name, fmt, None, False, cards.get(name, {}), by_name.get(name, {}),
                                     [f"not staged: registry/{fmt}/{name}.manifest.json does not exist yet "
                                      f"(run `dvc repro`, then commit the manifest)"])
    for model in models.values():
        model.labels, model.labels_from = _card_labels(model.card)
        if model.labels is None and root is not None and (names := _worktree_labels(root, model)) is not None:
            model.labels, model.labels_from = names, "labels.txt in the working tree (its sha256 is the manifest's)"
    return State(label, commit, index, dict(sorted(models.items())), notes)


# ----------------------------------------------------------------------------- releases and history

def _head(root: Path) -> str | None:
    """HEAD's commit, or None outside a git repository (or before its first commit)."""
    try:
        return gitio.rev_parse(root, "HEAD")
    except GitError:
        return None


def _release_refs(root: Path, commit: str) -> list[tuple[str, str, str]]:
    """(tag, commit, date) of every `zoo-v*` release reachable from `commit`, oldest version first: a build
    of one revision never depends on releases made after it."""
    out = gitio.git(root, "for-each-ref", f"--merged={commit}", "refs/tags/zoo-v*",
                    "--format=%(refname:strip=2)%09%(objectname)%09%(*objectname)%09%(creatordate:short)")
    refs = []
    for line in out.decode().splitlines():
        tag, oid, peeled, date = line.split("\t")
        if gitio.RELEASE_TAG_RE.match(tag):
            refs.append((tag, peeled or oid, date))
    return sorted(refs, key=lambda r: gitio.semver_key(r[0]))


def _releases(root: Path, commit: str | None) -> list[Release]:
    if commit is None:
        return []
    releases: list[Release] = []
    states: dict[str, State] = {}
    previous = State("", "", {"cards": {}, "converters": {}}, {}, [])
    for tag, tag_commit, date in _release_refs(root, commit):
        if tag_commit not in states:  # one read per commit, whatever the number of tags on it
            states[tag_commit] = _state(tag, tag_commit, gitio.read_tree(root, tag_commit, _wanted(False)))
        state = states[tag_commit]
        releases.append(Release(tag, tag_commit, date, state, zdiff.diff(previous.snapshot(), state.snapshot())))
        previous = state
    return releases


def _histories(releases: list[Release], unreleased: dict | None) -> dict[str, list[tuple[str, str, list]]]:
    """Per artifact: (release, what happened, the changed aspects' lines) for each release that touched it."""
    out: dict[str, list[tuple[str, str, list]]] = {}
    steps = [(r.tag, r.diff) for r in releases] + ([("unreleased", unreleased)] if unreleased else [])
    for tag, result in steps:
        for name in result["added"]:
            out.setdefault(name, []).append((tag, "added", []))
        for name, aspects in result["changed"].items():
            lines = [line for aspect, change in aspects.items() for line in _change_lines(aspect, change)]
            out.setdefault(name, []).append((tag, "changed: " + ", ".join(aspects), lines))
        for name in result["removed"]:
            out.setdefault(name, []).append((tag, "removed", []))
    return out


def _change_lines(aspect: str, change: dict) -> list[tuple[str, str, str]]:
    """stages.diff's (what, from, to) rows; a scalar aspect (licence) is named without its empty key."""
    return [(what.removesuffix(": "), old, new) for what, old, new in zdiff.change_lines(aspect, change)]


def _origin_url(root: Path) -> str:
    """The git remote `origin` without credentials, else the placeholder: a published page never leaks a token."""
    try:
        url = gitio.git(root, "config", "--get", "remote.origin.url").decode().strip()
    except GitError:
        return PLACEHOLDER_URL
    return re.sub(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", r"\1", url) or PLACEHOLDER_URL


# ----------------------------------------------------------------------------- formatting

def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def num(value: Any) -> float | None:
    """A finite number from JSON, else None (booleans are not numbers here)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return value
    return None


def sig(value: Any) -> str:
    """One stable format for measured floats: 3 significant digits."""
    v = num(value)
    return DASH if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))


def text(value: Any) -> str:
    """A JSON value as short readable text."""
    if value is None:
        return DASH
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return sig(value)
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def shape_text(shape: Any) -> str:
    if not isinstance(shape, list):
        return "[?]"
    return "[" + ", ".join(str(d) if isinstance(d, (int, str)) else "?" for d in shape) + "]"


def io_text(spec: dict) -> str:
    return f"{text(spec.get('name'))} {text(spec.get('dtype'))}{shape_text(spec.get('shape'))}"


def opset_text_of(opset: Any) -> str:
    if isinstance(opset, dict) and opset:
        if set(opset) == {"ai.onnx"}:
            return f"opset {text(opset['ai.onnx'])}"
        return ", ".join(f"{k} {text(v)}" for k, v in sorted(opset.items()))
    return f"opset {opset}" if num(opset) is not None else DASH


def opset_text(model: Model) -> str:
    """The ONNX opset, else the framework version the model was frozen with."""
    info = (model.manifest or {}).get("model") or {}
    if "opset" in info:
        return opset_text_of(info["opset"])
    if isinstance(info.get("tensorflow"), str):
        return f"TensorFlow {info['tensorflow']}"
    return DASH


def total_size(manifest: dict) -> tuple[int, bool]:
    """Sum of the recorded file sizes, and whether every file has one."""
    files = (manifest.get("files") or {}).values()
    sizes = [rec["size"] for rec in files if "size" in rec]
    return sum(sizes), len(sizes) == len(files)


def link(href: str, label: str) -> str:
    return f'<a href="{esc(href)}">{esc(label)}</a>'


def ext_link(url: Any, label: Any = None) -> str:
    """An upstream URL as a link when it is http(s), else as text."""
    shown = esc(text(url if label is None else label))
    return f'<a href="{esc(url)}" rel="noreferrer">{shown}</a>' if isinstance(url, str) and URL_RE.match(url) else shown


def td(content: str, value: Any = None, cls: str = "") -> str:
    attrs = (f' data-value="{esc(value)}"' if value is not None else "") + (f' class="{cls}"' if cls else "")
    return f"<td{attrs}>{content}</td>"


def table(heads: list[str], rows: list[str], attrs: str = "") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in heads)
    return f"<table{attrs}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>"


def kv_table(pairs: list[tuple[str, str]]) -> str:
    """Two columns, the values already HTML."""
    rows = "\n".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in pairs)
    return f'<table class="kv">\n{rows}\n</table>'


def code_block(lines: list[str]) -> str:
    return "<pre><code>" + esc("\n".join(lines)) + "</code></pre>"


def note(lines: list[str]) -> str:
    """A highlighted box of plain-text lines; `quoted` parts become code."""
    if not lines:
        return ""
    paragraphs = (CODE_RE.sub(r"<code>\1</code>", esc(line)) for line in lines)
    return '<div class="note">' + "".join(f"<p>{p}</p>" for p in paragraphs) + "</div>"


# The browser asks every site for an icon: one of its own, so no request is left unanswered.
FAVICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" '
           'fill="#2b6cb0"/><text x="8" y="12" font-size="10" text-anchor="middle" fill="#fff" '
           'font-family="sans-serif">Z</text></svg>\n')


def page(title: str, body: str, depth: int, revision: str) -> str:
    up = "../" * depth
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<link rel="stylesheet" href="{up}assets/catalog.css">
<link rel="icon" type="image/svg+xml" href="{up}assets/favicon.svg">
<script src="{up}assets/catalog.js" defer></script>
</head>
<body>
<header>
<nav><a href="{up}index.html">Models</a> <a href="{up}releases.html">Releases</a></nav>
<p class="revision">{esc(revision)}</p>
</header>
<main>
{body}
</main>
</body>
</html>
"""


# ----------------------------------------------------------------------------- index.html

UPSTREAM = ("ok", "moved", "changed", "gone")  # stages.upstream's statuses
COLUMNS = (("Model", ""), ("Format", ""), ("Kind", ""), ("Tags", ""), ("Size", "number"),
           ("Opset / framework", ""), ("Inputs", ""), ("Licence", ""), ("Validation (max abs error)", "number"),
           ("Last changed in", ""), ("Upstream", ""))


def _kind(model: Model) -> str:
    kind = model.entry.get("kind") or ((model.manifest or {}).get("source") or {}).get("kind")
    return kind if isinstance(kind, str) else DASH


def _field(model: Model, key: str) -> Any:
    """A manifest field, else the card's (a card not staged yet has only its card)."""
    manifest = model.manifest or {}
    return manifest[key] if key in manifest else model.card.get(key)


def _tags(model: Model) -> list[str]:
    tags = _field(model, "tags")
    return sorted(t for t in tags if isinstance(t, str)) if isinstance(tags, list) else []


def _validation_cell(model: Model) -> str:
    if model.manifest is None:
        return td(esc("not staged" if not model.staged else "manifest unreadable"), cls="gap")
    validation = model.manifest.get("validation")
    if validation is None:
        return td(esc(NOT_RECORDED), cls="gap")
    passed, error = validation.get("passed"), num(validation.get("max_abs_error"))
    verdict = "pass" if passed is True else "fail" if passed is False else "?"
    cls = verdict if verdict != "?" else "gap"
    return td(f'<span class="{cls}">{verdict}</span> {esc(sig(error))}', value=repr(error) if error is not None else "")


def _release_key(tag: str) -> str:
    """A sort key for a release column: numeric order of the version, pre-releases first."""
    major, minor, patch, pre = gitio.RELEASE_TAG_RE.match(tag).groups()
    return f"{int(major):06d}.{int(minor):06d}.{int(patch):06d}.{0 if pre else 1}{pre or ''}"


def index_row(site: Site, model: Model) -> str:
    manifest = model.manifest or {}
    a = model.artifact
    cells = [td(link(f"models/{a}.html", a)), td(esc(model.format)), td(esc(_kind(model))),
             td(esc(", ".join(_tags(model))))]
    if "files" in manifest:
        size, whole = total_size(manifest)
        cells.append(td(esc(human_size(size) + ("" if whole else " (incomplete)")), value=size, cls="num"))
    else:
        cells.append(td(DASH, value=""))
    cells.append(td(esc(opset_text(model))))
    inputs = (manifest.get("model") or {}).get("inputs")
    cells.append(td("<br>".join(esc(io_text(spec)) for spec in inputs) if inputs else DASH, cls="io"))
    licence = _field(model, "license")
    cells.append(td(esc(licence if isinstance(licence, str) else DASH)))
    cells.append(_validation_cell(model))
    release = site.last_changed(a)
    changed_since = any(tag == "unreleased" for tag, _, _ in site.history.get(a, []))
    shown = (release or "unreleased") + (" (changed since)" if release and changed_since else "")
    cells.append(td(esc(shown), value=_release_key(release) if release else ""))
    status = site.upstream.get(model.name, {}).get("status")
    cells.append(td(esc(status) if isinstance(status, str) else "", cls=f"up-{status}" if status in UPSTREAM else ""))
    return f'<tr data-name="{esc(a)}">' + "".join(cells) + "</tr>"


def _th(title: str, kind: str, first: bool) -> str:
    """A header cell of #models: `data-type="number"` sorts by the cells' data-value; rows start in name order."""
    attrs = (f' data-type="{kind}"' if kind else "") + (' aria-sort="ascending"' if first else "")
    return f"<th{attrs}>{esc(title)}</th>"


def index_page(site: Site) -> str:
    state = site.state
    models = list(state.models.values())
    staged = sum(m.manifest is not None for m in models)
    formats = sorted({m.format for m in models})
    latest = site.releases[-1].tag if site.releases else None
    heads = "".join(_th(title, kind, first=i == 0) for i, (title, kind) in enumerate(COLUMNS))
    rows = "\n".join(index_row(site, m) for m in models)
    summary = (f"{len(models)} models ({staged} staged) in {len(formats)} formats ({', '.join(formats) or DASH}); "
               + (f"{len(site.releases)} releases, the latest {latest}." if latest else "no release yet."))
    body = f"""<h1>Model zoo</h1>
<p class="summary">{esc(summary)} <a href="releases.html">Releases and charts</a></p>
{note(state.notes)}
<p id="filter-box" hidden><label for="filter">Filter</label>
<input id="filter" type="search" autocomplete="off" placeholder="name, format, kind, tag, licence...">
<output id="shown" for="filter"></output></p>
<div class="scroll">
<table id="models">
<thead><tr>{heads}</tr></thead>
<tbody>
{rows}
</tbody>
</table>
</div>"""
    return page("Model zoo", body, 0, _revision_line(site))


def _revision_line(site: Site) -> str:
    return f"Built from {site.state.label}" + (f" (commit {site.state.commit[:12]})" if site.state.commit else "")


# ----------------------------------------------------------------------------- models/<artifact>.html

def get_section(site: Site, model: Model) -> str:
    a, url = model.artifact, site.url
    folder = f"registry/{model.format}/{model.name}"
    release, changed_in = site.latest_holding(a), site.last_changed(a)
    version = changed_in.removeprefix("zoo-") if changed_in else "v<version>"  # its GTO tag: <artifact>@v1.2.0
    blocks = [
        f"<p>In a clone of the registry (<code>git clone {esc(url)} zoo &amp;&amp; cd zoo</code>), this model and "
        "nothing else:</p>",
        code_block([f"dvc pull {folder}"]),
        "<p>The same by name, every file then checked against the manifest:</p>",
        code_block([f"zoo pull {a}"] + ([f"zoo pull {a} --rev {release} --out {release}/   # as released"]
                                        if release else [])),
        "<p>From another repository, at a release:</p>",
        code_block([f"dvc get {url} {folder} --rev {release or '<release>'}",
                    f"dvc artifacts get {url} {a} --rev {version}"]),
        "<p>From Python (every file checked against the release's manifest):</p>",
        code_block(["from stages.api import download",
                    f"model = download({json.dumps(model.name)}, {json.dumps(f'models/{a}')}, repo={json.dumps(url)}, "
                    f"release={json.dumps(release or '<release>')}, format={json.dumps(model.format)})"]),
    ]
    gaps = []
    if release is None:
        gaps.append("This model is in no release yet: replace <release> by a release that has it once one does.")
    if url == PLACEHOLDER_URL:
        gaps.append("This repository has no `origin` remote: replace <registry-url> by the registry's git URL.")
    return '<section id="get">\n<h2>How to get it</h2>\n' + note(gaps) + "\n".join(blocks) + "\n</section>"


def dims_html(shape: Any) -> str:
    if not isinstance(shape, list):
        return esc(NOT_RECORDED)
    dims = [f"<var>{esc(d)}</var>" if isinstance(d, str) else esc(d) for d in shape]
    return "[" + ", ".join(dims) + "]"


def io_section(manifest: dict) -> str:
    info = manifest.get("model") or {}
    rows, symbolic = [], False
    for role in ("inputs", "outputs"):
        for spec in info.get(role) or []:
            symbolic |= isinstance(spec.get("shape"), list) and any(isinstance(d, str) for d in spec["shape"])
            tensor = f" <code>{esc(spec['tensor'])}</code>" if isinstance(spec.get("tensor"), str) else ""
            rows.append(f"<tr><td>{role[:-1]}</td><td><code>{esc(text(spec.get('name')))}</code>{tensor}</td>"
                        f"<td>{esc(text(spec.get('dtype')))}</td><td>{dims_html(spec.get('shape'))}</td></tr>")
    if not rows:
        return f'<section id="io">\n<h2>Inputs and outputs</h2>\n<p class="gap">{esc(NOT_RECORDED)}</p>\n</section>'
    return ('<section id="io">\n<h2>Inputs and outputs</h2>\n'
            + table(["", "name (tensor)", "dtype", "shape"], rows, ' class="io"')
            + ("\n<p class=\"hint\">Dims in <var>italics</var> are symbolic: any size.</p>" if symbolic else "")
            + "\n</section>")


def _scale_text(scale: float) -> str:
    inverse = 1 / scale if scale else 0
    if inverse and abs(inverse * 2 - round(inverse * 2)) < 1e-6:
        return f"multiply by {scale:.6g} (1/{inverse:g})"
    return f"multiply by {scale:.6g}"


def preprocessing_steps(pre: dict) -> list[str]:
    """The manifest's preprocessing record (stages.preprocess) as numbered, human-readable steps."""
    kind = pre.get("type")
    if kind == "image":
        size = pre.get("size")
        hw = f"{text(size[0])}x{text(size[1])}" if isinstance(size, list) and len(size) == 2 else text(size)
        interpolation = text(pre.get("interpolation"))
        resize = pre.get("resize")
        scale = num(pre.get("scale"))
        return [
            f"Open the image and convert it to {COLOURS.get(pre.get('color'), text(pre.get('color')))}.",
            (f"Resize it so its shorter side is {text(resize)} px ({interpolation}), then crop the centre {hw} "
             f"(height x width)." if resize is not None else f"Resize it to {hw} (height x width), {interpolation}."),
            (f"Per pixel: {_scale_text(scale)}, subtract the mean {text(pre.get('mean'))} and divide by the std "
             f"{text(pre.get('std'))}, per channel." if scale is not None else
             f"Per pixel: scale {NOT_RECORDED}; mean {text(pre.get('mean'))}, std {text(pre.get('std'))}."),
            f"Lay it out as {text(pre.get('layout'))}, a batch of one, float32.",
        ]
    if kind == "text":
        files = pre.get("files")
        return [f"Tokenize with {text(pre.get('tokenizer'))} (staged beside the model"
                + (f", with {', '.join(map(text, files))}" if isinstance(files, list) and files else "") + ").",
                f"Truncate to at most {text(pre.get('max_length'))} tokens."]
    if kind == "tensor":
        return [f"Raw tensors: {text(pre.get('note'))}"]
    return [f"An unknown preprocessing record: {text(pre)}"]


def preprocessing_section(manifest: dict) -> str:
    pre = manifest.get("preprocessing")
    if pre is None:
        body = f'<p class="gap">{esc(NOT_RECORDED)}</p>'
    else:
        steps = "".join(f"<li>{esc(s)}</li>" for s in preprocessing_steps(pre))
        body = (f"<ol>{steps}</ol>\n<p>Source: {esc(text(pre.get('source')))}. "
                f"<code>zoo run</code> applies it for you.</p>")
    return f'<section id="preprocessing">\n<h2>Preprocessing</h2>\n{body}\n</section>'


def labels_section(model: Model) -> str:
    count = num(((model.manifest or {}).get("model") or {}).get("labels"))
    if model.labels is None and count is None and not model.labels_from:
        return ""
    parts = []
    total = len(model.labels) if model.labels is not None else count
    if total is not None:
        parts.append(f"<p>{esc(total)} classes.</p>")
    if model.labels is not None:
        first = "".join(f"<li>{esc(n)}</li>" for n in model.labels[:FIRST_LABELS])
        more = f" (the first {FIRST_LABELS})" if len(model.labels) > FIRST_LABELS else ""
        parts.append(f"<p>Class names{esc(more)}, from {esc(model.labels_from)}:</p>\n"
                     f'<ol start="0" class="labels">{first}</ol>')
    elif model.labels_from:
        parts.append(f"<p>Class names: {esc(model.labels_from)}.</p>")
    else:
        parts.append("<p>Class names: in <code>labels.txt</code> in the staged folder (pull it to read them); "
                     "git records their count only.</p>")
    return '<section id="labels">\n<h2>Classes</h2>\n' + "\n".join(parts) + "\n</section>"


def validation_section(manifest: dict) -> str:
    v = manifest.get("validation")
    if v is None:
        return f'<section id="validation">\n<h2>Validation</h2>\n<p class="gap">{esc(NOT_RECORDED)}</p>\n</section>'
    passed = v.get("passed")
    verdict = ('<span class="pass">passed</span>' if passed is True else '<span class="fail">failed</span>'
               if passed is False else f'<span class="gap">{esc(NOT_RECORDED)}</span>')
    pairs = [("result", verdict), ("reference", esc(text(v.get("reference")))),
             ("max abs error", esc(sig(v.get("max_abs_error")))), ("max rel error", esc(sig(v.get("max_rel_error")))),
             ("tolerance", f"atol {esc(sig(v.get('atol')))}, rtol {esc(sig(v.get('rtol')))}"),
             ("cases", esc(text(v.get("cases"))))]
    if isinstance(v.get("files"), list):
        pairs.append(("files compared", esc(", ".join(map(text, v["files"])))))
    if v.get("defaulted_dims"):
        pairs.append(("defaulted dims", esc(text(v["defaulted_dims"])) + " (no card value: took dim_default)"))
    runs = v.get("runs")
    rows = []
    for run in runs if isinstance(runs, list) else []:
        run = run if isinstance(run, dict) else {}
        shapes = run.get("shapes") if isinstance(run.get("shapes"), dict) else {}
        fed = "; ".join(f"{k} {shape_text(s)}" for k, s in sorted(shapes.items())) or DASH
        rows.append(f"<tr><td>{esc(text(run.get('case')))}</td><td>{esc(fed)}</td></tr>")
    cases = (table(["case", "inputs fed (shapes)"], rows, ' class="cases"') if rows
             else f'<p class="gap">Cases: {esc(NOT_RECORDED)}.</p>')
    return ('<section id="validation">\n<h2>Validation</h2>\n<p>Each staged file against its reference, at staging '
            "time; the errors are the largest over every case and output.</p>\n"
            + kv_table(pairs) + "\n<h3>Cases</h3>\n" + cases + "\n</section>")


def files_section(model: Model) -> str:
    files = (model.manifest or {}).get("files")
    if files is None:
        return f'<section id="files">\n<h2>Files</h2>\n<p class="gap">{esc(NOT_RECORDED)}</p>\n</section>'
    rows = []
    for path, rec in sorted(files.items()):
        size = rec.get("size")
        size_html = (f'<span class="gap">{esc(NOT_RECORDED)}</span>' if size is None else esc(human_size(size))
                     + (f" <small>({size:,} B)</small>" if size >= 1024 else ""))
        sha = (f'<code class="sha256">{esc(rec["sha256"])}</code>' if "sha256" in rec
               else f'<span class="gap">{esc(NOT_RECORDED)}</span>')
        rows.append(f'<tr data-path="{esc(path)}"><td><code>{esc(path)}</code></td>'
                    + td(size_html, value=size if size is not None else "", cls="num") + f"<td>{sha}</td></tr>")
    size, whole = total_size(model.manifest)
    folder = f"registry/{model.format}/{model.name}/"
    return (f'<section id="files">\n<h2>Files</h2>\n<p>In <code>{esc(folder)}</code> (DVC): {len(files)} files, '
            f"{esc(human_size(size))}{'' if whole else ' (some sizes not recorded)'}. "
            f"<code>zoo verify</code> and <code>zoo pull</code> check every one against this list.</p>\n"
            + table(["path", "size", "sha256"], rows, ' class="files"') + "\n</section>")


def upstream_section(site: Site, model: Model) -> str:
    source = (model.manifest or {}).get("source") or {}
    rows = []
    for rec in source.get("files") if isinstance(source.get("files"), list) else []:
        rec = rec if isinstance(rec, dict) else {}
        if isinstance(rec.get("hf_repo"), str):
            repo, revision, path = rec["hf_repo"], text(rec.get("hf_revision")), text(rec.get("hf_path"))
            where = (ext_link(f"https://huggingface.co/{repo}/tree/{revision}", f"{repo}@{revision}") + " "
                     + ext_link(f"https://huggingface.co/{repo}/blob/{revision}/{path}", path))
        else:
            where = ext_link(rec.get("url"))
            if rec.get("redirected_to"):
                where += f"<br><small>redirected to {ext_link(rec['redirected_to'])}</small>"
        sha = f'<code class="sha256">{esc(rec["sha256"])}</code>' if isinstance(rec.get("sha256"), str) else DASH
        size = rec.get("size") if _is_size(rec.get("size")) else None
        rows.append(f"<tr><td><code>{esc(text(rec.get('filename')))}</code></td><td>{esc(text(rec.get('role')))}</td>"
                    f"<td>{where}</td>" + td(DASH if size is None else esc(human_size(size)), cls="num")
                    + f"<td>{sha}</td></tr>")
    parts = [f"<p>Kind: <code>{esc(_kind(model))}</code>.</p>"]
    parts.append(table(["file", "role", "pinned at", "size", "sha256"], rows, ' class="pins"') if rows
                 else f'<p class="gap">Fetched files: {esc(NOT_RECORDED)}.</p>')
    pins = model.entry.get("source")
    if isinstance(pins, dict) and pins:
        parts.append("<h3>Pinned in the card</h3>\n" + kv_table([(k, ext_link(v) if isinstance(v, str) else esc(text(v)))
                                                                  for k, v in _pairs(pins)]))
    check = site.upstream.get(model.name)
    if check is not None:
        status = check.get("status")
        parts.append(f"<p>Upstream check (<code>zoo upstream</code>): <strong class=\"up-{esc(status)}\">{esc(text(status))}"
                     f"</strong> {esc(text(check.get('detail')) if check.get('detail') else '')}</p>")
    return '<section id="upstream">\n<h2>Upstream pins</h2>\n' + "\n".join(parts) + "\n</section>"


def _pairs(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """A nested mapping as (dotted key, leaf value) pairs, in key order."""
    if not (isinstance(value, dict) and value):
        return [(prefix, value)]
    pairs = [p for k, v in value.items() for p in _pairs(v, f"{prefix}.{k}" if prefix else str(k))]
    return sorted(pairs, key=lambda p: p[0])


def converter_section(manifest: dict) -> str:
    conv = manifest.get("converter")
    if conv is None:
        return f'<section id="converter">\n<h2>Converter</h2>\n<p class="gap">{esc(NOT_RECORDED)}</p>\n</section>'
    versions = conv.get("versions") if isinstance(conv.get("versions"), dict) else {}
    pairs = [("converter", f"<code>{esc(text(conv.get('name')))}</code>"),
             ("params.yaml section", f"<code>{esc(text(conv.get('params_section')))}</code>"),
             ("params sha256", f'<code class="sha256">{esc(text(conv.get("params_sha256")))}</code>')]
    pairs += [(pkg, esc(text(version))) for pkg, version in sorted(versions.items())]
    return '<section id="converter">\n<h2>Converter</h2>\n' + kv_table(pairs) + "\n</section>"


def model_section(manifest: dict) -> str:
    """The model record's other facts (architecture, producer, exporter, how to run it...)."""
    info = manifest.get("model") or {}
    skip = {"inputs", "outputs", "labels"}
    pairs = [(k, esc(opset_text_of(v) if k == "opset" else text(v))) for k, v in sorted(info.items()) if k not in skip]
    if not pairs:
        return ""
    return '<section id="model">\n<h2>Model</h2>\n' + kv_table(pairs) + "\n</section>"


def history_section(site: Site, model: Model) -> str:
    entries = site.history.get(model.artifact, [])
    if not entries:
        return '<section id="history">\n<h2>History</h2>\n<p>In no release yet.</p>\n</section>'
    rows = []
    for tag, what, lines in reversed(entries):
        detail = "<br>".join(f"{esc(w)}: {esc(old or DASH)} \u2192 {esc(new or DASH)}" for w, old, new in lines)
        where = link(f"../releases.html#release-{tag}", tag) if tag != "unreleased" else "unreleased"
        rows.append(f"<tr><td>{where}</td><td>{esc(what)}</td><td>{detail}</td></tr>")
    return ('<section id="history">\n<h2>History</h2>\n'
            + table(["release", "what", "details"], rows, ' class="history"') + "\n</section>")


def model_page(site: Site, model: Model) -> str:
    manifest = model.manifest or {}
    description = _field(model, "description")
    licence = _field(model, "license")
    heading = (f'<h1>{esc(model.artifact)} <span class="format">{esc(model.format)}</span></h1>\n'
               f'<p class="description">{esc(description if isinstance(description, str) else NOT_RECORDED)}</p>\n'
               f"<p>Kind <code>{esc(_kind(model))}</code>; tags: {esc(', '.join(_tags(model)) or DASH)}; "
               f"licence: <strong>{esc(licence if isinstance(licence, str) else NOT_RECORDED)}</strong>"
               + ("" if opset_text(model) == DASH else f"; {esc(opset_text(model))}") + ".</p>")
    if model.manifest is None:
        status = "Not staged" if not model.staged else "Manifest unreadable"
        return page(f"{model.artifact} (zoo)", heading + f'\n<h2 class="gap">{status}</h2>\n' + note(model.notes)
                    + "\n" + history_section(site, model), 1, _revision_line(site))
    notes = (["This manifest is incomplete; what it lacks is shown as \u201c" + NOT_RECORDED + "\u201d."]
             + model.notes) if model.notes else []
    sections = [heading, note(notes), get_section(site, model), io_section(manifest), model_section(manifest),
                preprocessing_section(manifest), labels_section(model), validation_section(manifest),
                files_section(model), upstream_section(site, model), converter_section(manifest),
                history_section(site, model)]
    return page(f"{model.artifact} (zoo)", "\n".join(s for s in sections if s), 1, _revision_line(site))


# ----------------------------------------------------------------------------- releases.html and charts

def _nice_step(top: float, ticks: int = 5) -> float:
    raw = top / ticks
    base = 10 ** math.floor(math.log10(raw))
    return next(m * base for m in (1, 2, 5, 10) if raw <= m * base)


def _svg(width: int, height: int, title: str, parts: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'role="img" font-family="sans-serif" font-size="11">\n<title>{esc(title)}</title>\n'
            + "\n".join(parts) + "\n</svg>")


def _colours(formats: list[str]) -> dict[str, str]:
    return {f: PALETTE[i % len(PALETTE)] for i, f in enumerate(formats)}


def stacked_bars(title: str, bars: list[tuple[str, dict[str, float]]], formats: list[str],
                 label: Callable[[float], str], unit: float = 1.0) -> str:
    """Bars (one per release, oldest first) stacked by format; `label(value)` writes totals and ticks."""
    ml, mt, mb, step, bw, height = 72, 34, 28, 88, 48, 200
    width = max(ml + step * len(bars) + 16, 120 + sum(len(f) * 7 + 28 for f in formats))
    top = max([sum(values.values()) for _, values in bars] + [0]) / unit
    tick = max(_nice_step(top), 1.0) if top > 0 else 1.0
    ymax = math.ceil(top / tick) * tick if top > 0 else tick
    y = lambda v: mt + height - round(v / unit / ymax * height)  # noqa: E731
    colours = _colours(formats)
    parts = []
    for i in range(int(round(ymax / tick)) + 1):
        v = i * tick * unit
        parts.append(f'<line x1="{ml}" x2="{width - 8}" y1="{y(v)}" y2="{y(v)}" stroke="#d8dee4"/>'
                     f'<text x="{ml - 6}" y="{y(v) + 4}" text-anchor="end">{esc(label(v))}</text>')
    x = 20
    for f in formats:
        parts.append(f'<rect x="{x}" y="8" width="10" height="10" fill="{colours[f]}"/>'
                     f'<text x="{x + 14}" y="17">{esc(f)}</text>')
        x += len(f) * 7 + 28
    for i, (name, values) in enumerate(bars):
        x0, base = ml + i * step + (step - bw) // 2, 0.0
        for f in formats:
            value = values.get(f, 0)
            if value:
                parts.append(f'<rect x="{x0}" y="{y(base + value)}" width="{bw}" height="{y(base) - y(base + value)}" '
                             f'fill="{colours[f]}"><title>{esc(name)}: {esc(f)} {esc(label(value))}</title></rect>')
                base += value
        parts.append(f'<text x="{x0 + bw // 2}" y="{y(base) - 4}" text-anchor="middle">{esc(label(base))}</text>'
                     f'<text x="{x0 + bw // 2}" y="{mt + height + 16}" text-anchor="middle">{esc(name)}</text>')
    return _svg(width, mt + height + mb, title, parts)


def error_dots(title: str, points: list[tuple[str, float, float | None, bool | None]]) -> str:
    """One row per model: its max abs error as a dot on a log scale, its atol as a tick; 0 has its own column."""
    ml = 16 + 7 * max(len(name) for name, _, _, _ in points)
    x0, span, row, mt = ml + 44, 440, 16, 36
    width, height = x0 + span + 24, mt + row * len(points) + 12
    positive = [v for _, e, atol, _ in points for v in (e, atol) if v]
    lo = math.floor(math.log10(min(positive))) if positive else -8
    hi = max(math.ceil(math.log10(max(positive))), lo + 1) if positive else 0
    x = lambda v: x0 + round((math.log10(v) - lo) / (hi - lo) * span)  # noqa: E731
    parts = [f'<text x="{ml + 20}" y="{mt - 8}" text-anchor="middle">0</text>'
             f'<line x1="{ml + 20}" x2="{ml + 20}" y1="{mt - 4}" y2="{height - 8}" stroke="#d8dee4"/>']
    for d in range(lo, hi + 1):
        parts.append(f'<line x1="{x(10.0 ** d)}" x2="{x(10.0 ** d)}" y1="{mt - 4}" y2="{height - 8}" stroke="#d8dee4"/>'
                     f'<text x="{x(10.0 ** d)}" y="{mt - 8}" text-anchor="middle">1e{d}</text>')
    parts.append(f'<text x="{x0}" y="12">dots: max abs error, log scale (<tspan fill="#2da44e">\u25cf</tspan> passed, '
                 f'<tspan fill="#cf222e">\u25cf</tspan> failed); bars: atol</text>')
    for i, (name, error, atol, passed) in enumerate(points):
        cy = mt + i * row + row // 2
        cx = x(error) if error > 0 else ml + 20
        colour = "#2da44e" if passed is True else "#cf222e" if passed is False else "#6e7781"
        parts.append(f'<text x="{ml}" y="{cy + 4}" text-anchor="end">{esc(name)}</text>')
        if atol:
            parts.append(f'<line x1="{x(atol)}" x2="{x(atol)}" y1="{cy - 6}" y2="{cy + 6}" stroke="#57606a"/>')
        parts.append(f'<circle cx="{cx}" cy="{cy}" r="4" fill="{colour}"><title>{esc(name)}: {esc(sig(error))}'
                     f'{" (atol " + esc(sig(atol)) + ")" if atol else ""}</title></circle>')
    return _svg(width, height, title, parts)


def _format_totals(state: State, value: Callable[[Model], float]) -> dict[str, float]:
    """Per format, the sum of `value` over the staged models."""
    out: dict[str, float] = {}
    for model in state.models.values():
        if model.manifest is not None:
            out[model.format] = out.get(model.format, 0) + value(model)
    return out


def _bytes_unit(total: float) -> tuple[float, str]:
    for unit, name in ((1024 ** 3, "GiB"), (1024 ** 2, "MiB"), (1024, "KiB")):
        if total >= unit:
            return unit, name
    return 1, "B"


def charts(site: Site) -> str:
    out = []
    releases = site.releases
    if releases:
        formats = sorted({m.format for r in releases for m in r.state.models.values() if m.manifest is not None})
        counts = [(r.tag, _format_totals(r.state, lambda m: 1)) for r in releases]
        out.append('<figure id="chart-formats">\n' + stacked_bars("Models per format per release", counts, formats,
                                                                  lambda v: f"{v:g}")
                   + "\n<figcaption>Staged models per format, per release.</figcaption>\n</figure>")
        sizes = [(r.tag, _format_totals(r.state, lambda m: total_size(m.manifest)[0])) for r in releases]
        unit, name = _bytes_unit(max(sum(v.values()) for _, v in sizes))
        out.append('<figure id="chart-bytes">\n' + stacked_bars("Total bytes per release", sizes, formats,
                                                                lambda v: f"{v / unit:.3g} {name}", unit)
                   + "\n<figcaption>Total size of the staged files per release, by format.</figcaption>\n</figure>")
    points, missing = [], []
    for model in site.state.models.values():
        v = (model.manifest or {}).get("validation") or {}
        error = num(v.get("max_abs_error"))
        if error is None or error < 0:
            missing.append(model.artifact)
            continue
        atol = num(v.get("atol"))
        points.append((model.artifact, float(error), float(atol) if atol and atol > 0 else None, v.get("passed")))
    if points:
        out.append('<figure id="chart-errors">\n' + error_dots(f"Validation max abs error at {site.state.label}", points)
                   + f"\n<figcaption>Validation max abs error of every model at {esc(site.state.label)}, log scale."
                   + (f" No error recorded for: {esc(', '.join(missing))}." if missing else "")
                   + "</figcaption>\n</figure>")
    return '<section id="charts">\n<h2>Charts</h2>\n' + ("\n".join(out) or "<p>Nothing to chart yet.</p>") + "\n</section>"


def _model_ref(site: Site, name: str) -> str:
    return link(f"models/{name}.html", name) if name in site.state.models else esc(name)


def diff_html(site: Site, result: dict) -> str:
    parts = [f"<p>{len(result['added'])} added, {len(result['removed'])} removed, {len(result['changed'])} changed, "
             f"{len(result['unchanged'])} unchanged.</p>"]
    for title, key in (("Added", "added"), ("Removed", "removed")):
        if result[key]:
            items = "".join(f"<li>{_model_ref(site, n)} ({esc(text(fmt))})</li>" for n, fmt in result[key].items())
            parts.append(f'<h3>{title}</h3>\n<ul class="{key}">{items}</ul>')
    rows = []
    for name, aspects in result["changed"].items():
        for aspect, change in aspects.items():
            for what, old, new in _change_lines(aspect, change):
                rows.append(f"<tr><td>{_model_ref(site, name)}</td><td>{esc(what)}</td><td>{esc(old or DASH)}</td>"
                            f"<td>{esc(new or DASH)}</td></tr>")
    if rows:
        parts.append("<h3>Changed</h3>\n" + table(["model", "what", "from", "to"], rows, ' class="changes"'))
    return "\n".join(parts)


def releases_page(site: Site) -> str:
    sections = []
    if site.unreleased:
        sections.append(f'<section class="release" id="unreleased">\n<h2>Unreleased: {esc(site.state.label)}</h2>\n'
                        f"<p>Changes since {esc(site.releases[-1].tag)}.</p>\n{diff_html(site, site.unreleased)}"
                        "\n</section>")
    for i, r in reversed(list(enumerate(site.releases))):
        staged = sum(m.manifest is not None for m in r.state.models.values())
        since = f"since {esc(site.releases[i - 1].tag)}" if i else "initial release"
        sections.append(f'<section class="release" id="release-{esc(r.tag)}">\n<h2>{esc(r.tag)}</h2>\n'
                        f'<p class="meta">{esc(r.date)}, commit <code>{esc(r.commit[:12])}</code>; {staged} staged models; '
                        f"{since}.</p>\n{note(r.state.notes)}\n{diff_html(site, r.diff)}\n</section>")
    if not site.releases:
        sections.append("<p>No <code>zoo-v*</code> release yet: <code>zoo release 1.0.0</code> makes the first.</p>")
    body = "<h1>Releases</h1>\n" + charts(site) + "\n" + "\n".join(sections)
    return page("Zoo releases", body, 0, _revision_line(site))


# ----------------------------------------------------------------------------- assets and build

CSS = """\
body { font: 15px/1.45 system-ui, sans-serif; color: #1f2328; margin: 0 auto; max-width: 84rem; padding: 0 1rem 3rem; }
header { display: flex; gap: 2rem; align-items: baseline; border-bottom: 1px solid #d0d7de; margin-bottom: 1rem; }
header nav a { margin-right: 1rem; font-weight: 600; }
.revision { color: #57606a; margin: .6rem 0; }
a { color: #0969da; }
table { border-collapse: collapse; margin: .5rem 0 1rem; }
th, td { border-bottom: 1px solid #d8dee4; padding: .25rem .6rem; text-align: left; vertical-align: top; }
thead th { background: #f6f8fa; }
#models thead th { cursor: pointer; white-space: nowrap; }
#models th button { all: unset; }
#models th button:focus-visible { outline: 2px solid #0969da; }
#models th[aria-sort="ascending"]::after { content: " \\25B2"; }
#models th[aria-sort="descending"]::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.kv th { background: none; font-weight: 600; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: .9em; }
pre { background: #f6f8fa; padding: .5rem .75rem; overflow-x: auto; }
.sha256 { word-break: break-all; }
.pass, .up-ok { color: #1a7f37; }
.fail, .up-gone, .up-changed { color: #cf222e; font-weight: 600; }
.up-moved { color: #9a6700; }
.gap { color: #6e7781; font-style: italic; }
.note { background: #fff8c5; border-left: 4px solid #d4a72c; padding: .1rem .75rem; margin: .75rem 0; }
.hint { color: #57606a; font-size: .9em; }
.format { color: #57606a; font-weight: normal; font-size: .7em; }
.scroll, figure { overflow-x: auto; }
figure { margin: 1rem 0 2rem; }
#filter { width: 24rem; max-width: 100%; }
#models td.io { white-space: nowrap; }
.pins a, .kv td { overflow-wrap: anywhere; }
"""

JS = """\
// The zoo catalogue's index: sort the models table by a column, filter its rows. Without this
// script the table is complete, in name order.
"use strict";

function sortable(table) {
  const body = table.tBodies[0];
  const heads = Array.from(table.tHead.rows[0].cells);
  heads.forEach((th, column) => {
    const button = document.createElement("button");  // keyboard access to the header
    button.type = "button";
    button.append(...th.childNodes);
    th.append(button);
    th.addEventListener("click", () => {
      const ascending = th.getAttribute("aria-sort") !== "ascending";
      const numeric = th.dataset.type === "number";
      heads.forEach((h) => h.removeAttribute("aria-sort"));
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      const key = (row) => {
        const cell = row.cells[column];
        const value = cell.dataset.value !== undefined ? cell.dataset.value : cell.textContent.trim();
        return numeric ? (value === "" || isNaN(parseFloat(value)) ? null : parseFloat(value)) : (value || null);
      };
      const rows = Array.from(body.rows);
      rows.sort((a, b) => {
        const x = key(a), y = key(b);
        if (x === null || y === null) return (x === null) - (y === null);  // blanks last, either way
        const order = numeric ? x - y : x.localeCompare(y, undefined, {numeric: true, sensitivity: "base"});
        return ascending ? order : -order;
      });
      body.append(...rows);
    });
  });
}

function filterable(table) {
  const box = document.getElementById("filter-box");
  const input = document.getElementById("filter");
  const shown = document.getElementById("shown");
  const rows = Array.from(table.tBodies[0].rows);
  const apply = () => {
    const query = input.value.trim().toLowerCase();
    let count = 0;
    for (const row of rows) {
      row.hidden = query !== "" && !row.textContent.toLowerCase().includes(query);
      count += row.hidden ? 0 : 1;
    }
    shown.textContent = query ? `${count} of ${rows.length} models` : `${rows.length} models`;
  };
  input.addEventListener("input", apply);
  box.hidden = false;
  apply();  // a browser may restore the box's text on reload
}

const models = document.getElementById("models");
if (models) {
  sortable(models);
  filterable(models);
}
"""


def _upstream_rows(upstream: list | None) -> dict[str, dict]:
    """`zoo upstream --json` rows by card name; anything else in it is ignored."""
    rows = upstream if isinstance(upstream, list) else []
    return {r["name"]: r for r in rows if isinstance(r, dict) and isinstance(r.get("name"), str)}


def load(root: Path, rev: str | None = None, upstream: list | None = None) -> Site:
    """Everything the pages show, read once: the selected revision, then each release reachable from it."""
    if rev is None:
        commit = _head(root)
        state = _state("the working tree" + (f" at HEAD {commit[:12]}" if commit else ""), "",
                       _worktree_blobs(root), root)
    else:
        commit = gitio.rev_parse(root, rev)
        state = _state(rev, commit, gitio.read_tree(root, commit, _wanted(True)))
    releases = _releases(root, commit)
    unreleased = None
    if releases:
        result = zdiff.diff(releases[-1].state.snapshot(), state.snapshot())
        unreleased = result if result["added"] or result["removed"] or result["changed"] else None
    url = _origin_url(root) if commit else PLACEHOLDER_URL
    return Site(state, releases, unreleased, _histories(releases, unreleased), _upstream_rows(upstream), url)


def render(site: Site) -> dict[str, str]:
    """{relative path: text} of every file of the site."""
    files = {"assets/catalog.css": CSS, "assets/catalog.js": JS, "assets/favicon.svg": FAVICON,
             "index.html": index_page(site),
             "releases.html": releases_page(site)}
    for model in site.state.models.values():
        files[f"models/{model.artifact}.html"] = model_page(site, model)
    return files


def _check_out(root: Path, out: Path) -> None:
    """The build replaces `out` whole: only ever a new or empty folder or an earlier catalogue, never a
    folder holding the registry (`--out .` would otherwise delete it)."""
    target, registry = out.resolve(), root.resolve()
    if target == registry or target in registry.parents:
        raise ConfigError(f"{out}: the catalogue would replace the folder holding the registry",
                          fix="give --out a new folder (the default is catalog/ in the registry)")
    if out.exists() and not (out.is_dir() and ((out / "assets" / "catalog.js").is_file() or not any(out.iterdir()))):
        raise ConfigError(f"{out}: not replacing it: it is neither empty nor a catalogue (no assets/catalog.js)",
                          fix="give --out a new or empty folder, or remove that one yourself")


def build(root: Path, rev: str | None = None, out: Path | None = None, upstream: list | None = None) -> Path:
    """Build the catalogue of `root` at `rev` (None: the working tree) into `out` (default `<root>/catalog`),
    replacing it whole; returns the path of its index.html. A revision that does not exist, or `rev` outside
    a git repository, raises GitError; an `out` that is not a new or empty folder or an earlier catalogue,
    ConfigError. Anything wrong inside the registry shows on the pages instead."""
    root = Path(root)
    out = Path(out) if out is not None else root / "catalog"
    _check_out(root, out)
    files = render(load(root, rev, upstream))
    with building_dir(out) as tmp:
        for rel, content in sorted(files.items()):
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8", newline="\n")
    return out / "index.html"
