"""An offline HTTP mirror of model hubs, answering from a fixture directory.

The registry's downloader rewrites `https://HOST/PATH?Q` to `$ZOO_MIRROR/HOST/PATH?Q`, so this
server answers `/HOST/PATH` from `ROOT/HOST/PATH` (the upstream's own URL layout; the query is
ignored for the lookup). Routes that a file tree cannot express are kept in memory (and can be
persisted in `ROOT/_routes.json`, loaded at start):

    {"redirects": {"/github.com/o/r/raw/<sha>/f.onnx": "https://media.githubusercontent.com/..."},
     "status":    {"/host/gone.onnx": 410, "/host/private.bin": {"status": 403, "body": "denied"}},
     "faults":    {"/host/flaky.bin": {"fail_first": 2, "drop_after": 100}, "/host/slow.bin": {"delay": 30}}}

Redirects answer with the *real upstream* absolute Location on purpose: the downloader must
prove it mirrors every hop. Faults (per path, counted per request) are checked before routes.

Hugging Face (`/huggingface.co/...`) is emulated for huggingface_hub==0.36.2. Fixture layout:

    ROOT/huggingface.co/<repo_id>/.zoo-mirror/refs.json              {"main": "<commit>", ...}
    ROOT/huggingface.co/<repo_id>/.zoo-mirror/commits/<commit>/<path>  one full snapshot per commit

`add_hf_repo` writes it. Served: `HEAD|GET /<repo_id>/resolve|raw/<rev>/<path>` (200 direct, no
CDN redirect, never `X-Xet-*` headers so clients never try xet), `GET /api/models/<repo_id>`,
`.../revision/<rev>` and `.../tree/<rev>[/<path>]`. Errors carry `X-Error-Code` exactly as the
hub does, which is what makes huggingface_hub raise RepositoryNotFoundError (401 RepoNotFound),
RevisionNotFoundError (404 RevisionNotFound) and EntryNotFoundError (404 EntryNotFound).
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import re
import socket
import threading
import time
import traceback
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from tests.support.httpserver import TrackingHTTPServer

HF_HOST = "huggingface.co"
HF_META = ".zoo-mirror"
ROUTES_FILE = "_routes.json"
CHUNK = 1 << 16
LFS_MIN_SIZE = 1 << 20
LFS_SUFFIXES = (".onnx", ".bin", ".safetensors", ".h5", ".pb", ".pth", ".pt", ".msgpack",
                ".tar.gz", ".zip", ".keras", ".mar")
RATE_LIMIT_HTML = b"<!DOCTYPE html><html><body>Rate limit exceeded</body></html>"
FIXED_DATE = "2024-01-01T00:00:00.000Z"
CONTENT_TYPES = {".json": "application/json", ".html": "text/html; charset=utf-8",
                 ".txt": "text/plain; charset=utf-8"}
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
REPO_ID_RE = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def hf_commit_id(files: dict[str, bytes]) -> str:
    """Deterministic commit id: sha1 over sorted (path, sha256) pairs, so fixtures are stable."""
    digest = hashlib.sha1()
    for path in sorted(files):
        digest.update(f"{path}\0{hashlib.sha256(files[path]).hexdigest()}\n".encode())
    return digest.hexdigest()


def hf_repo_dir(root: Path, repo_id: str) -> Path:
    """Where a repo's refs and commit snapshots live (see the module docstring)."""
    if not REPO_ID_RE.match(repo_id) or ".." in repo_id.split("/"):
        raise ValueError(f"bad Hugging Face repo id {repo_id!r}")
    return Path(root) / HF_HOST / repo_id / HF_META


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def add_hf_repo(root: Path, repo_id: str, files: dict[str, bytes], *,
                refs: dict[str, str] | None = None) -> str:
    """Add one commit (a full snapshot of `files`) to a Hugging Face model repo fixture.

    Returns the commit id. Earlier commits are kept; `refs` (default {"main": commit}) is merged
    into the repo's refs, a value of "" or "HEAD" meaning this new commit. The snapshot is built
    beside its final place and renamed in, so a failed call never leaves half a commit behind.
    """
    meta, commit = hf_repo_dir(root, repo_id), hf_commit_id(files)
    bad = [rel for rel in files if any(p in ("", ".", "..") for p in rel.split("/"))]
    if bad:
        raise ValueError(f"bad paths in repo {repo_id}: {bad}")
    wanted = {"main": commit} if refs is None else {
        name: commit if target in ("", "HEAD") else target for name, target in refs.items()}
    unknown = {n: t for n, t in wanted.items() if t != commit
               and (not COMMIT_RE.match(t) or not (meta / "commits" / t).is_dir())}
    if unknown:
        raise ValueError(f"refs point to unknown commits in {repo_id}: {unknown}")
    commit_dir = meta / "commits" / commit
    if not commit_dir.is_dir():
        staging = commit_dir.with_name(f".{commit}.{os.getpid()}.tmp")
        for rel, data in files.items():
            target = staging.joinpath(*rel.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        staging.mkdir(parents=True, exist_ok=True)
        os.replace(staging, commit_dir)
    refs_path = meta / "refs.json"
    current = json.loads(refs_path.read_text()) if refs_path.exists() else {}
    _atomic_write(refs_path, json.dumps({**current, **wanted}, indent=2, sort_keys=True).encode())
    return commit


@dataclass
class Reply:
    """One response: headers plus a body held in memory or a slice of a file."""

    status: int
    headers: dict[str, str]
    data: bytes = b""
    file: Path | None = None
    start: int = 0
    length: int = 0

    @property
    def size(self) -> int:
        return self.length if self.file is not None else len(self.data)

    def chunks(self):
        """The body in chunks; files are streamed so large fixtures never sit in memory."""
        if self.file is None:
            yield self.data
            return
        with open(self.file, "rb") as fh:
            fh.seek(self.start)
            left = self.length
            while left > 0:
                chunk = fh.read(min(CHUNK, left))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk


def text_reply(status: int, text: str, **headers: str) -> Reply:
    return Reply(status, {"Content-Type": "text/plain; charset=utf-8", **headers}, text.encode())


def json_reply(obj, status: int = 200, **headers: str) -> Reply:
    return Reply(status, {"Content-Type": "application/json", **headers}, json.dumps(obj).encode())


def hf_error(status: int, code: str, message: str, **headers: str) -> Reply:
    """The hub's error shape: huggingface_hub dispatches on the X-Error-Code header."""
    return json_reply({"error": message}, status, **{"X-Error-Code": code, "X-Error-Message": message},
                      **headers)


def file_reply(path: Path, etag: str, **headers: str) -> Reply:
    st = path.stat()
    suffix = path.suffix.lower()
    base = {"Content-Type": CONTENT_TYPES.get(suffix, "application/octet-stream"),
            "ETag": f'"{etag}"', "Accept-Ranges": "bytes",
            "Last-Modified": email.utils.formatdate(st.st_mtime, usegmt=True)}
    return Reply(200, {**base, **headers}, file=path, length=st.st_size)


def apply_range(reply: Reply, range_header: str | None, if_range: str | None) -> Reply:
    """Honour one `bytes=a-b`, `bytes=a-` or `bytes=-n` range; anything fancier gets 200."""
    if reply.status != 200 or not range_header or "Accept-Ranges" not in reply.headers:
        return reply
    if if_range and if_range.startswith(("\"", "W/")) and if_range != reply.headers.get("ETag"):
        return reply  # the resource changed since the client's partial copy: send it whole
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", range_header)
    if not match or match.group(1) == match.group(2) == "":
        return reply
    size, first, last = reply.size, match.group(1), match.group(2)
    if first == "":
        start, end = max(size - int(last), 0), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        return text_reply(416, "range not satisfiable\n", **{"Content-Range": f"bytes */{size}"})
    headers = {**reply.headers, "Content-Range": f"bytes {start}-{end}/{size}"}
    if reply.file is not None:
        return Reply(206, headers, file=reply.file, start=reply.start + start, length=end - start + 1)
    return Reply(206, headers, reply.data[start:end + 1])


@dataclass(frozen=True)
class Digest:
    sha256: str
    git_sha1: str   # git blob id of the content ("blob <size>\0" + content)
    is_text: bool   # small and valid UTF-8: what git would keep out of LFS


class HashCache:
    """Hashes keyed by (path, mtime, size): fixtures can be big and are read on every HEAD.

    No lock: a dict get/set is atomic, and two threads hashing the same file agree anyway."""

    def __init__(self):
        self._cache: dict[tuple[str, int, int], Digest] = {}

    def get(self, path: Path) -> Digest:
        st = path.stat()
        key = (str(path), st.st_mtime_ns, st.st_size)
        if key not in self._cache:
            self._cache[key] = self._compute(path, st.st_size)
        return self._cache[key]

    @staticmethod
    def _compute(path: Path, size: int) -> Digest:
        sha256, sha1 = hashlib.sha256(), hashlib.sha1(f"blob {size}\0".encode())
        small = bytearray() if size <= LFS_MIN_SIZE else None
        with open(path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                sha256.update(chunk)
                sha1.update(chunk)
                if small is not None:
                    small += chunk
        return Digest(sha256.hexdigest(), sha1.hexdigest(), small is not None and _is_utf8(bytes(small)))


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


class HubEmulator:
    """Answers `/huggingface.co/...` requests from the fixture layout in the module docstring."""

    def __init__(self, root: Path, hashes: HashCache):
        self.base = root / HF_HOST
        self.hashes = hashes

    def handle(self, segments: list[str], query: dict[str, list[str]]) -> Reply | None:
        """`segments`: raw (still quoted) path segments after `huggingface.co`; None = not ours."""
        if segments[:2] == ["api", "models"]:
            return self._api(segments[2:], query)
        found = self._split_repo(segments, ("resolve", "raw"))
        if found is None:
            return None
        repo_id, rest = found
        if len(rest) < 3:
            return text_reply(404, "not found\n")
        return self._resolve(repo_id, unquote(rest[1]), [unquote(s) for s in rest[2:]])

    def _split_repo(self, segments: list[str], keywords: tuple[str, ...]):
        """Repo ids are `name` or `org/name`: prefer the one that exists, else the one that fits."""
        fits = [n for n in (2, 1) if len(segments) > n and segments[n] in keywords]
        for n in fits:
            repo_id = "/".join(unquote(s) for s in segments[:n])
            if REPO_ID_RE.match(repo_id) and (self.base / repo_id / HF_META).is_dir():
                return repo_id, segments[n:]
        if fits:
            return "/".join(unquote(s) for s in segments[:fits[0]]), segments[fits[0]:]
        return None

    def _commit_dir(self, repo_id: str, revision: str) -> tuple[Path | None, Reply | None]:
        meta = self.base / repo_id / HF_META
        if not REPO_ID_RE.match(repo_id) or not meta.is_dir():
            return None, hf_error(401, "RepoNotFound", "Repository not found")
        refs_path = meta / "refs.json"
        refs = json.loads(refs_path.read_text()) if refs_path.exists() else {}
        commit = refs.get(revision, revision)
        if COMMIT_RE.match(commit) and (meta / "commits" / commit).is_dir():
            return meta / "commits" / commit, None
        return None, hf_error(404, "RevisionNotFound", f"Invalid rev id: {revision}")

    def _is_lfs(self, path: Path, digest: Digest) -> bool:
        name = path.name.lower()
        return not digest.is_text or name.endswith(LFS_SUFFIXES)

    def _resolve(self, repo_id: str, revision: str, parts: list[str]) -> Reply:
        commit_dir, error = self._commit_dir(repo_id, revision)
        if error:
            return error
        commit = commit_dir.name
        target = commit_dir.joinpath(*parts)
        if any(p in ("", ".", "..") for p in parts) or not target.is_file():
            return hf_error(404, "EntryNotFound", "Entry not found", **{"X-Repo-Commit": commit})
        digest = self.hashes.get(target)
        if self._is_lfs(target, digest):
            size = str(target.stat().st_size)
            return file_reply(target, digest.sha256, **{
                "X-Repo-Commit": commit, "X-Linked-Etag": f'"{digest.sha256}"', "X-Linked-Size": size})
        return file_reply(target, digest.git_sha1, **{"X-Repo-Commit": commit})

    def _api(self, rest: list[str], query: dict[str, list[str]]) -> Reply:
        found = self._split_repo(rest, ("revision", "tree"))
        if found is None:
            repo_id = "/".join(unquote(s) for s in rest)
            return self._model_info(repo_id, "main", query) if rest else text_reply(404, "not found\n")
        repo_id, tail = found
        if len(tail) < 2:
            return text_reply(404, "not found\n")
        revision = unquote(tail[1])
        if tail[0] == "revision":
            return self._model_info(repo_id, revision, query)
        path = "/".join(unquote(s) for s in tail[2:])
        return self._tree(repo_id, revision, path, query)

    def _entry(self, commit_dir: Path, path: Path, expand: bool) -> dict:
        rel = path.relative_to(commit_dir).as_posix()
        last = {"lastCommit": {"id": commit_dir.name, "title": "zoo mirror fixture", "date": FIXED_DATE}}
        if path.is_dir():
            oid = hashlib.sha1(f"tree {rel}\0{commit_dir.name}".encode()).hexdigest()
            return {"type": "directory", "oid": oid, "path": rel, **(last if expand else {})}
        digest, size = self.hashes.get(path), path.stat().st_size
        entry = {"type": "file", "oid": digest.git_sha1, "size": size, "path": rel}
        if self._is_lfs(path, digest):
            pointer = lfs_pointer(digest.sha256, size)
            entry["oid"] = git_blob_id(pointer)
            entry["lfs"] = {"oid": digest.sha256, "size": size, "pointerSize": len(pointer)}
        return {**entry, **(last if expand else {})}

    def _model_info(self, repo_id: str, revision: str, query: dict[str, list[str]]) -> Reply:
        commit_dir, error = self._commit_dir(repo_id, revision)
        if error:
            return error
        blobs = _flag(query, "blobs")
        siblings = []
        for path in sorted(p for p in commit_dir.rglob("*") if p.is_file()):
            entry = self._entry(commit_dir, path, False)
            sibling = {"rfilename": entry["path"]}
            if blobs:
                sibling.update(size=entry["size"], blobId=entry["oid"])
                if "lfs" in entry:
                    lfs = entry["lfs"]
                    sibling["lfs"] = {"sha256": lfs["oid"], "size": lfs["size"], "pointerSize": lfs["pointerSize"]}
            siblings.append(sibling)
        author = repo_id.split("/")[0] if "/" in repo_id else None
        return json_reply({
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id, "modelId": repo_id,
            "author": author, "sha": commit_dir.name, "lastModified": FIXED_DATE, "createdAt": FIXED_DATE,
            "private": False, "disabled": False, "gated": False, "downloads": 0, "likes": 0,
            "tags": [], "siblings": siblings})

    def _tree(self, repo_id: str, revision: str, path: str, query: dict[str, list[str]]) -> Reply:
        commit_dir, error = self._commit_dir(repo_id, revision)
        if error:
            return error
        parts = [p for p in path.split("/") if p]
        top = commit_dir.joinpath(*parts)
        if any(p in (".", "..") for p in parts) or not top.is_dir():
            return hf_error(404, "EntryNotFound", f"{path} does not exist on {revision}",
                            **{"X-Repo-Commit": commit_dir.name})
        found = top.rglob("*") if _flag(query, "recursive") else top.iterdir()
        expand = _flag(query, "expand")
        return json_reply([self._entry(commit_dir, p, expand) for p in sorted(found)])


def _flag(query: dict[str, list[str]], name: str) -> bool:
    return query.get(name, ["false"])[-1].lower() in ("1", "true", "yes")


@dataclass
class Fault:
    """Per-path misbehaviour; `seen`/`dropped` count requests so a fault can heal itself."""

    fail_first: int = 0
    fail_status: int = 503
    drop_after: int | None = None
    drop_times: int = 1
    no_range: bool = False
    html_200: bool = False
    opaque_etag: bool = False  # an ETag that is no content digest (as many CDNs send)
    delay: float = 0.0         # a slow or stuck upstream: pause this long once `delay_after` body bytes are sent
    delay_after: int = 0
    seen: int = 0
    dropped: int = 0

    def next_action(self, method: str) -> str:
        """'fail', 'drop' or 'ok' for this request. HEAD has no body, so it never uses a drop."""
        self.seen += 1
        if self.seen <= self.fail_first:
            return "fail"
        if self.drop_after is not None and method == "GET" and self.dropped < self.drop_times:
            self.dropped += 1
            return "drop"
        return "ok"


class _Handler(BaseHTTPRequestHandler):
    """Thin HTTP layer: MirrorServer decides the reply, this writes it (or cuts it short)."""

    protocol_version = "HTTP/1.1"   # keep-alive, like the real hubs; every reply has a length
    server_version = "zoo-mirror"
    timeout = 30                    # idle keep-alive connections must not pin threads forever

    def setup(self):
        super().setup()
        self.server.track(self.connection, True)

    def finish(self):
        self.server.track(self.connection, False)
        super().finish()

    def do_GET(self):
        self._serve("GET")

    def do_HEAD(self):
        self._serve("HEAD")

    def _serve(self, method: str) -> None:
        mirror: MirrorServer = self.server.mirror
        try:
            reply, drop_after, pause = mirror.plan(method, self.path, self.headers)
            self._write(method, reply, drop_after, pause)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True
        except Exception:  # a bug in the mirror: say so loudly, answer 500
            traceback.print_exc()
            self.close_connection = True
            try:
                self._write(method, text_reply(500, "mirror error\n"), None, None)
            except OSError:
                pass

    def _write(self, method: str, reply: Reply, drop_after: int | None, pause: tuple[int, float] | None) -> None:
        """Send the reply; `pause` = (offset, seconds) stalls the body at that offset, as a slow upstream does."""
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(reply.size))
        self.end_headers()
        if method == "HEAD":
            return
        budget = reply.size if drop_after is None else min(drop_after, reply.size)
        sent = 0
        for chunk in reply.chunks():
            chunk = chunk[:budget - sent]
            if pause is not None and sent <= pause[0] < sent + len(chunk):
                split = pause[0] - sent
                self.wfile.write(chunk[:split])
                self.wfile.flush()
                time.sleep(pause[1])
                chunk, sent = chunk[split:], sent + split
            self.wfile.write(chunk)
            sent += len(chunk)
            if sent >= budget:
                break
        if drop_after is not None:
            self._abort()

    def _abort(self) -> None:
        """Close mid-body, as a flaky network does: the client sees fewer bytes than announced."""
        self.wfile.flush()
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def log_message(self, format, *args):  # noqa: A002 (stdlib signature)
        if os.environ.get("ZOO_MIRROR_LOG") == "1":
            super().log_message(format, *args)


class _HTTPServer(TrackingHTTPServer):
    mirror: "MirrorServer"


def load_routes(path: Path) -> dict[str, dict]:
    """Parse `_routes.json` into the in-memory shapes ("status"/"redirects" accept int/str or dict)."""
    raw = json.loads(path.read_text())
    routes: dict[str, dict] = {"redirects": {}, "status": {}, "faults": {}}
    for key, value in raw.get("redirects", {}).items():
        value = value if isinstance(value, dict) else {"location": value}
        routes["redirects"][key] = (value["location"], int(value.get("status", 302)))
    for key, value in raw.get("status", {}).items():
        value = value if isinstance(value, dict) else {"status": value}
        routes["status"][key] = (int(value["status"]), str(value.get("body", "")).encode())
    for key, value in raw.get("faults", {}).items():
        routes["faults"][key] = Fault(**value)
    return routes


class MirrorServer:
    """The mirror: static files, HF emulation, scripted redirects/status codes and faults."""

    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 0):
        self.root = Path(root).resolve()
        self.host, self.port = host, port
        self.url = ""
        self.requests_log: list[tuple[str, str, str | None]] = []
        self._lock = threading.Lock()
        self._routes: dict[str, dict] = {"redirects": {}, "status": {}, "faults": {}}  # set in code: win
        self._file_routes: dict[str, dict] = {"redirects": {}, "status": {}, "faults": {}}
        self._routes_stamp: tuple[int, int] | None = None
        self._hashes = HashCache()
        self._hub = HubEmulator(self.root, self._hashes)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> "MirrorServer":
        with self._lock:
            self._refresh_file_routes()  # a broken _routes.json fails here, not on a request
        self._httpd = _HTTPServer((self.host, self.port), _Handler)
        self._httpd.mirror = self
        self.port = self._httpd.server_address[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"zoo-mirror:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd.close_connections()
            self._thread.join(timeout=5)
            self._httpd = self._thread = None

    def __enter__(self) -> "MirrorServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- scripting (takes precedence over ROOT/_routes.json)

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        with self._lock:
            self._routes["redirects"][path] = (location, status)

    def set_status(self, path: str, status: int, body: bytes = b"") -> None:
        with self._lock:
            self._routes["status"][path] = (status, body)

    def fault(self, path: str, *, fail_first: int = 0, fail_status: int = 503, drop_after: int | None = None,
              drop_times: int = 1, no_range: bool = False, html_200: bool = False,
              opaque_etag: bool = False, delay: float = 0.0, delay_after: int = 0) -> None:
        with self._lock:
            self._routes["faults"][path] = Fault(fail_first, fail_status, drop_after, drop_times, no_range, html_200,
                                                 opaque_etag, delay, delay_after)

    def clear_faults(self) -> None:
        with self._lock:
            self._routes["faults"].clear()
            self._file_routes["faults"].clear()  # until _routes.json changes again

    def _refresh_file_routes(self) -> None:
        """Re-read ROOT/_routes.json when it changes: fixtures may be (re)built while serving."""
        try:
            st = (self.root / ROUTES_FILE).stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._routes_stamp:
            self._file_routes = load_routes(self.root / ROUTES_FILE) if stamp else {
                "redirects": {}, "status": {}, "faults": {}}
            self._routes_stamp = stamp

    def _find(self, kind: str, keys: list[str]):
        for table in (self._routes[kind], self._file_routes[kind]):
            for key in keys:
                if key in table:
                    return table[key]
        return None

    # -- answering

    def plan(self, method: str, raw_path: str, headers) -> tuple[Reply, int | None, tuple[int, float] | None]:
        """Decide the reply for one request, whether to cut its body short (drop_after) and where to stall it."""
        parts = urlsplit(raw_path)
        keys = [raw_path, parts.path, unquote(parts.path)]
        with self._lock:
            self.requests_log.append((method, raw_path, headers.get("Range")))
            self._refresh_file_routes()
            fault = self._find("faults", keys)
            action = fault.next_action(method) if fault else "ok"
            status, redirect = self._find("status", keys), self._find("redirects", keys)
        if action == "fail":
            return text_reply(fault.fail_status, f"injected failure {fault.fail_status}\n"), None, None
        if status is not None:
            return Reply(status[0], {"Content-Type": "text/plain; charset=utf-8"}, status[1]), None, None
        if redirect is not None:
            return Reply(redirect[1], {"Location": redirect[0]}), None, None
        if fault and fault.html_200:
            return Reply(200, {"Content-Type": "text/html; charset=utf-8"}, RATE_LIMIT_HTML), None, None
        reply = self._content(parts.path, parse_qs(parts.query))
        if fault and fault.opaque_etag and "ETag" in reply.headers:
            reply.headers["ETag"] = f'"cdn-{hashlib.md5(reply.headers["ETag"].encode()).hexdigest()[:12]}"'
        if not (fault and fault.no_range):
            reply = apply_range(reply, headers.get("Range"), headers.get("If-Range"))
        pause = (fault.delay_after, fault.delay) if fault and fault.delay else None
        return reply, (fault.drop_after if action == "drop" else None), pause

    def _content(self, path: str, query: dict[str, list[str]]) -> Reply:
        segments = [s for s in path.split("/") if s]
        names = [unquote(s) for s in segments]
        pieces = [p for n in names for p in n.split("/")]  # an HF revision may hold a quoted "/"
        if any(p in (".", "..") or "\\" in p or "\0" in p for p in pieces):
            return text_reply(400, "bad path\n")
        if segments and names[0] == HF_HOST:
            reply = self._hub.handle(segments[1:], query)
            if reply is not None:
                return reply
        target = self.root.joinpath(*names)
        if not names or len(pieces) != len(names) or not target.is_file():
            return text_reply(404, f"not in mirror: {path}\n")
        return file_reply(target, self._hashes.get(target).sha256)
