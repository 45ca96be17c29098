"""`zoo upstream`: does every card's pinned upstream still serve the same bytes?

For each pinned file, cheapest first: a HEAD request (fetching's retrying session and redirect
follower, each hop through `ZOO_MIRROR`) says whether it is gone (401/403/404/410) or has moved (any
redirect); the size it announces, against the size recorded when the file was fetched (the
manifest's or the raw folder's record), can prove it changed; an ETag that is a digest of the kind
the pin uses (sha256, git blob sha1, md5) settles it either way. Only when none of that settles it
is the file downloaded and hashed (to a temp file, deleted after). A status per card: the worst of
its files' (gone > changed > moved > ok).
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from stages.card import Card
from stages.errors import FetchError

ORDER = ("ok", "moved", "changed", "gone")
HEX = re.compile(r"^[0-9a-f]+$")


@dataclass(frozen=True)
class FileStatus:
    filename: str
    url: str
    status: str  # ok | moved | changed | gone
    detail: str
    checked_by: str  # head | size | etag | hash


def _url(remote) -> str:
    if remote.url:
        return remote.url
    return f"https://huggingface.co/{remote.hf_repo}/resolve/{remote.hf_revision}/{remote.hf_path}"


def _etag_digest(headers: dict) -> str | None:
    """The hub's content digest when the ETag is one (Hugging Face's X-Linked-Etag first)."""
    for key in ("X-Linked-Etag", "ETag"):  # requests' headers: case-insensitive
        value = headers.get(key)
        if value:
            value = value.strip()
            value = value[2:] if value.startswith("W/") else value
            value = value.strip('"').lower()
            if HEX.match(value) and len(value) in (32, 40, 64):
                return value
    return None


def check_file(session, remote, expected: dict) -> FileStatus:
    """One pinned file's status; `expected` has the recorded sha256 and size (when known)."""
    from stages.fetch import describe, download, open_url

    url = _url(remote)
    sha256 = remote.sha256 or expected.get("sha256")
    hops: list[str] = []
    try:
        resp, _ = open_url(session, url, {"Accept-Encoding": "identity"}, hops, method="HEAD")
        resp.close()
    except FetchError as exc:
        return FileStatus(remote.filename, url, "gone", str(exc).split("; ")[0][:200], "head")
    except Exception as exc:  # noqa: BLE001 - connection failures of every kind (after the session's retries)
        return FileStatus(remote.filename, url, "gone", f"no answer: {describe(exc).split(':')[0]}", "head")
    status, headers = resp.status_code, resp.headers
    moved = f"redirects to {hops[-1]}" if hops else ""
    if status >= 400:
        return FileStatus(remote.filename, url, "gone", f"HTTP {status}" + (f" after {moved}" if moved else ""), "head")
    size = headers.get("X-Linked-Size") or headers.get("Content-Length")
    if expected.get("size") is not None and size and size.isdigit() and int(size) != int(expected["size"]):
        return FileStatus(remote.filename, url, "changed", f"size {size}, pinned file has {expected['size']}"
                          + (f"; {moved}" if moved else ""), "size")
    digest = _etag_digest(headers)
    pins = {64: sha256, 40: remote.git_sha1, 32: remote.md5}
    if digest is not None and pins.get(len(digest)):
        if digest != pins[len(digest)]:
            return FileStatus(remote.filename, url, "changed", f"served digest {digest[:16]}..., pinned "
                              f"{pins[len(digest)][:16]}..." + (f"; {moved}" if moved else ""), "etag")
        return FileStatus(remote.filename, url, "moved" if hops else "ok", moved or "same digest", "etag")
    with tempfile.TemporaryDirectory(prefix="zoo-upstream-") as tmp:  # nothing cheaper settles it: hash it
        try:
            _, actual = download(url, Path(tmp) / "file", None, session=session)
        except FetchError as exc:
            return FileStatus(remote.filename, url, "gone", str(exc).split("; ")[0][:200], "hash")
    if sha256 and actual != sha256:
        return FileStatus(remote.filename, url, "changed", f"sha256 {actual[:16]}..., pinned {sha256[:16]}..."
                          + (f"; {moved}" if moved else ""), "hash")
    return FileStatus(remote.filename, url, "moved" if hops else "ok", moved or "same sha256", "hash")


def _recorded(root: Path, card: Card) -> dict[str, dict]:
    """sha256 and size of each raw file as fetched: from the manifest (git), else the raw folder."""
    for path in (root / card.manifest_path, root / card.raw_dir / "_fetch.json"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            continue
        files = data["source"]["files"] if "source" in data else data.get("files", [])
        return {f["filename"]: f for f in files}
    return {}


def check(root: Path, cards: list[Card]) -> list[dict]:
    from stages.fetch import http_session
    from stages.sources import get_kind

    session = http_session()
    rows = []
    for card in cards:
        recorded = _recorded(root, card)
        try:
            remotes = get_kind(card.kind).remote_files(card.source)
        except Exception as exc:  # noqa: BLE001 - a hub API that no longer answers for this repo
            rows.append({"name": card.name, "status": "gone", "files": [],
                         "detail": f"cannot list its files: {str(exc).splitlines()[0][:200]}"})
            continue
        files = [check_file(session, r, recorded.get(r.filename, {})) for r in remotes]
        worst = max((f.status for f in files), key=ORDER.index, default="ok")
        detail = "; ".join(f"{f.filename}: {f.detail}" for f in files if f.status == worst) if worst != "ok" else ""
        rows.append({"name": card.name, "status": worst, "detail": detail, "files": [asdict(f) for f in files]})
    return rows


def render_table(rows: list[dict]) -> str:
    width = max([len(r["name"]) for r in rows] + [5])
    lines = [f"{'model':{width}}  {'status':8} detail"]
    lines += [f"{r['name']:{width}}  {r['status']:8} {r['detail']}".rstrip() for r in rows]
    counts = {s: sum(r["status"] == s for r in rows) for s in ORDER}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines) + "\n"
