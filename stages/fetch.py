"""Verified fetching, shared by every source kind.

A download streams into a unique temp file beside its destination, hashing while it streams;
it is renamed into place only when the sha256 matches the pin. Every request has a timeout; the
session's urllib3 `Retry` retries connection errors, 5xx and 429 with exponential backoff (and
`Retry-After`); a body cut short is resumed with an HTTP Range request when the server allows it.
`open_url` follows redirects (here and for `zoo upstream`) so each `Location` is mirrored too.
"""

from __future__ import annotations

import contextlib

import hashlib
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from stages import constants
from stages.errors import (DISK_FULL_ERRNOS, FetchError, HashMismatchError, HTTPStatusError, NotAModelError,
                           TruncatedError)
from stages.files import temp_sibling

log = logging.getLogger(__name__)

MAX_REDIRECTS = 10
NET_CHUNK = 1 << 16  # small reads: a dropped connection loses at most this much before a resume
RETRY_STATUSES = (429, 500, 502, 503, 504)
LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/v1"
USER_AGENT = "zoo-registry (+https://dvc.org; verified fetching)"


def mirror_url(url: str, mirror: str | None = None) -> str:
    """`https://HOST/PATH?Q` -> `$ZOO_MIRROR/HOST/PATH?Q`; unchanged when no mirror is set."""
    mirror = constants.mirror() if mirror is None else mirror
    if not mirror:
        return url
    parts = urlsplit(url)
    if parts.scheme != "https" or url.startswith(mirror + "/"):
        return url
    rewritten = f"{mirror}/{parts.netloc}{parts.path}"
    return f"{rewritten}?{parts.query}" if parts.query else rewritten


@dataclass
class _Progress:
    """What one download has so far: survives retries so a resume can append to it."""

    tmp: Path
    digest: "hashlib._Hash"
    received: int = 0
    head: bytes = b""
    etag: str | None = None
    total: int | None = None

    def reset(self) -> None:
        self.tmp.write_bytes(b"")
        self.digest, self.received, self.head = hashlib.sha256(), 0, b""


def http_session():
    """Retries GET and HEAD; a RETRY_STATUSES status that outlasts them is returned, for `_status_error`."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util import Retry

    retry = Retry(total=constants.http_retries(), backoff_factor=constants.retry_backoff(), raise_on_status=False,
                  status_forcelist=RETRY_STATUSES, allowed_methods=("GET", "HEAD"), respect_retry_after_header=True)
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    for scheme in ("https://", "http://"):
        session.mount(scheme, HTTPAdapter(max_retries=retry))
    return session


def describe(exc: Exception) -> str:
    """`Type: message` of the error behind requests' `Max retries exceeded` wrapper (ReadTimeoutError, ...)."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    exc = reason if isinstance(reason, Exception) else exc
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def open_url(session, url: str, headers: dict[str, str], hops: list[str] | None = None, method: str = "GET"):
    """`method` with redirects followed by hand, each hop mirrored; returns (response, final_url).

    `hops` receives each upstream Location followed (absolute, before mirroring).
    """
    current, upstream = mirror_url(url), url
    if hops is not None:
        hops.clear()
    for _ in range(MAX_REDIRECTS + 1):
        resp = session.request(method, current, headers=headers, stream=True, allow_redirects=False,
                               timeout=constants.http_timeout())
        if resp.status_code in (301, 302, 303, 307, 308) and "Location" in resp.headers:
            resp.close()
            upstream = urljoin(upstream, resp.headers["Location"])
            if hops is not None:
                hops.append(upstream)
            current = mirror_url(urljoin(current, resp.headers["Location"]))
            continue
        return resp, current
    raise FetchError(url, f"more than {MAX_REDIRECTS} redirects", fix="check the URL; the upstream may loop")


def _status_error(url: str, requested: str, status: int) -> HTTPStatusError:
    if status in (401, 403):
        problem = f"HTTP {status}: access denied (private or gated file, or a handle that migrated)"
        fix = "open the URL in a browser; if the model moved, pin its new URL and sha256 in the card"
    elif status in (404, 410):
        problem = f"HTTP {status}: the file is gone upstream"
        fix = ("restage from the copy kept in the DVC remote (`dvc pull` the card's registry/_raw/<name>), "
               "or pin the card to where the file lives now")
    else:
        problem = f"HTTP {status} after {constants.http_retries()} retries"
        fix = "the server is failing; try again later or set ZOO_MIRROR to a mirror"
    return HTTPStatusError(url, status, problem, fix=fix, requested=requested)


def _read_into(resp, state: _Progress, bar) -> None:
    try:
        with open(state.tmp, "ab") as fh:
            for chunk in resp.iter_content(NET_CHUNK):
                if not chunk:
                    continue
                if len(state.head) < 512:
                    state.head += chunk[: 512 - len(state.head)]
                fh.write(chunk)
                state.digest.update(chunk)
                state.received += len(chunk)
                bar.update(len(chunk))
    except OSError as exc:  # write() names no file: say which one the disk (or the size limit) refused
        if exc.errno in DISK_FULL_ERRNOS and exc.filename is None:
            exc.filename = str(state.tmp)
        raise


class _BodyBroken(Exception):
    """The body stopped short of its length (or a Range was refused): ask again for the rest."""


def _attempt(session, url: str, state: _Progress, bar, hops: list[str] | None = None) -> None:
    """One request (the session retries its failures): fresh, or a Range resume when we hold part of the body."""
    import requests

    headers = {"Accept-Encoding": "identity"}
    if state.received:
        headers["Range"] = f"bytes={state.received}-"
        if state.etag:
            headers["If-Range"] = state.etag
    resp, requested = open_url(session, url, headers, hops)
    with resp:
        status = resp.status_code
        if status == 416 and state.received:
            state.reset()
            raise _BodyBroken("range not satisfiable; restarting the download")
        if status >= 400:
            raise _status_error(url, requested, status)
        if status == 200 and state.received:
            log.info("%s: server ignored the Range request; restarting", url)
            state.reset()
            bar.reset()
        if status == 200:
            length = resp.headers.get("Content-Length")
            state.total = int(length) if length and length.isdigit() else None
            state.etag = resp.headers.get("ETag")
            bar.total = state.total
            bar.refresh()
        try:
            _read_into(resp, state, bar)
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            raise _BodyBroken(describe(exc)) from None
    if state.total is not None and state.received < state.total:
        raise _BodyBroken(f"body ended at {state.received} of {state.total} bytes")


def _not_the_file(url: str, requested: str, state: _Progress, expected: str | None) -> FetchError | None:
    """Name the common ways a server answers 200 with something else: an LFS pointer, an HTML page."""
    head = state.head
    if head.startswith(LFS_POINTER_PREFIX):
        oid = re.search(rb"oid sha256:([0-9a-f]{64})", head)
        names = " (the pointer names the pinned file)" if oid and oid.group(1).decode() == expected else ""
        return NotAModelError(
            url, f"served a Git LFS pointer ({state.received} bytes), not the file{names}",
            fix="use a URL that resolves LFS: github.com/<owner>/<repo>/raw/<commit>/<path> or the Hugging Face mirror",
            requested=requested)
    start = head.lstrip()[:15].lower()
    if start.startswith((b"<!doctype html", b"<html")):
        return NotAModelError(
            url, f"served an HTML page with status 200 ({state.received} bytes), not the file",
            fix="the server answered with a login, rate-limit or error page; open the URL in a browser and fix the pin",
            requested=requested)
    return None


def _md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _restore_partial(tmp: Path) -> _Progress:
    """Pick up the bytes an interrupted earlier run left, so the next request asks only for the rest."""
    state = _Progress(tmp=tmp, digest=hashlib.sha256())
    if tmp.exists():
        with open(tmp, "rb") as fh:
            while chunk := fh.read(1 << 20):
                if len(state.head) < 512:
                    state.head += chunk[: 512 - len(state.head)]
                state.digest.update(chunk)
                state.received += len(chunk)
    else:
        tmp.write_bytes(b"")
    return state


def download(url: str, dest: Path, sha256: str | None, *, session=None, desc: str | None = None,
             sha256_prefix: str | None = None, partial_dir: Path | None = None, md5: str | None = None,
             redirects: list[str] | None = None) -> tuple[int, str]:
    """Download `url` to `dest`, verified against `sha256`; returns (size, sha256). Atomic: all or nothing.

    `sha256_prefix` is torch.hub's weaker pin (a file name carrying the hash's first hex digits),
    checked the same way when no full sha256 is pinned. `md5` is checked too when given (Keras
    publishes md5s for most application weights). `redirects` receives the upstream URLs of the
    redirects followed, so a caller can say when a file has moved.

    `sha256=None` is for pinning only (`zoo pin`): the bytes are kept whatever they hash to, but an
    LFS pointer or an HTML page is still refused, so a pin is never taken from one.

    With `partial_dir` (the fetch stages pass `.dvc/tmp/zoo-partial`, which DVC does not clear), the
    bytes of a download cut short by the network are kept there under the pinned sha256, and the
    next run resumes them with a Range request: a half-downloaded 400 MB model is not started over.
    """
    import requests
    from tqdm.auto import tqdm

    session = session or http_session()
    dest.parent.mkdir(parents=True, exist_ok=True)
    resumable = partial_dir is not None and sha256 is not None
    if resumable:
        partial_dir.mkdir(parents=True, exist_ok=True)
        state = _restore_partial(partial_dir / f"{sha256}.part")
    else:
        state = _Progress(tmp=temp_sibling(dest), digest=hashlib.sha256())
        state.tmp.write_bytes(b"")
    retries, backoff = constants.http_retries(), constants.retry_backoff()
    requested = mirror_url(url)
    keep_partial = False
    try:
        with tqdm(desc=desc or dest.name, unit="B", unit_scale=True, unit_divisor=1024,
                  disable=constants.progress(), leave=False) as bar:
            for attempt in range(retries + 1):
                try:
                    _attempt(session, url, state, bar, redirects)
                    break
                except (requests.ConnectionError, requests.Timeout, _BodyBroken) as exc:
                    broken = isinstance(exc, _BodyBroken)  # else the request failed: the session has retried it
                    if attempt == retries or not broken:
                        keep_partial = resumable and state.received > 0
                        if state.total is not None and state.received < state.total:
                            raise TruncatedError(
                                url, f"body ended at {state.received} of {state.total} bytes after "
                                     f"{retries + 1} attempts", fix="the connection keeps dropping; try again later",
                                requested=requested) from None
                        raise FetchError(url, f"connection failed after {retries + 1} attempts: "
                                              f"{exc if broken else describe(exc)}",
                                         fix="check the network, proxy or ZOO_MIRROR", requested=requested) from None
                    log.warning("%s: %s; resuming", url, exc)
                time.sleep(backoff * (2 ** attempt))
        if state.digest.hexdigest() != sha256:
            problem = _not_the_file(url, requested, state, sha256)
            if problem is not None:
                raise problem
            if sha256 is not None:
                raise HashMismatchError(url, sha256, state.digest.hexdigest(), state.received, requested=requested)
        actual = state.digest.hexdigest()
        if sha256 is None and sha256_prefix and not actual.startswith(sha256_prefix):
            raise HashMismatchError(url, f"{sha256_prefix}...", actual, state.received, requested=requested)
        if md5 is not None:
            got = _md5_file(state.tmp)
            if got != md5:
                raise HashMismatchError(url, f"md5 {md5}", f"md5 {got} (sha256 {actual})", state.received,
                                        requested=requested)
        tmp = temp_sibling(dest)
        shutil.move(state.tmp, tmp)  # a partial may live on another file system: move, then rename
        os.replace(tmp, dest)
        return state.received, actual
    finally:
        if not keep_partial:
            state.tmp.unlink(missing_ok=True)


def download_hf(repo: str, revision: str, filename: str, dest: Path, sha256: str | None,
                git_sha1: str | None = None) -> tuple[int, str]:
    """Fetch one file from a Hugging Face repo at a pinned commit with huggingface_hub; returns (size, sha256).

    Verified against `sha256` (LFS files: the hub publishes it) or, for small files kept in git,
    against their git blob id `git_sha1`.
    """
    import shutil
    import tempfile

    from huggingface_hub import hf_hub_download

    from stages.files import sha256_file

    endpoint = constants.hf_endpoint()
    where = f"{endpoint}/{repo}/resolve/{revision}/{filename}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.hf-") as cache:
        with hub_errors(where, repo, revision, filename):
            path = Path(hf_hub_download(repo, filename, revision=revision, cache_dir=cache, endpoint=endpoint,
                                        etag_timeout=constants.http_timeout()[1]))
        actual = sha256_file(path)
        if sha256 is not None and actual != sha256:
            raise HashMismatchError(where, sha256, actual, path.stat().st_size)
        if git_sha1 is not None and git_blob_sha1(path) != git_sha1:
            raise HashMismatchError(where, f"git blob {git_sha1}", f"git blob {git_blob_sha1(path)}", path.stat().st_size)
        tmp = temp_sibling(dest)
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest.stat().st_size, actual


@contextlib.contextmanager
def hub_errors(where: str, repo: str, revision: str, filename: str | None = None):
    """huggingface_hub's errors (a file or the API) as the registry's one-line fetch errors."""
    import requests
    from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    try:
        yield
    except RepositoryNotFoundError:
        raise HTTPStatusError(where, 404, f"Hugging Face repo {repo!r} not found (or private/gated)",
                              fix="check `repo:` in the card; gated repos need HF_TOKEN") from None
    except RevisionNotFoundError:
        raise HTTPStatusError(where, 404, f"revision {revision} not found in {repo}",
                              fix="pin a commit that exists in the repo's history") from None
    except EntryNotFoundError:
        raise HTTPStatusError(where, 404, f"{filename!r} not found in {repo} at {revision}",
                              fix="check `file:` against the repo's file list at that commit") from None
    except HfHubHTTPError as exc:
        status = getattr(exc.response, "status_code", 0) or 0
        raise _status_error(where, where, status) from None
    except (requests.ConnectionError, requests.Timeout) as exc:  # the hub unreachable: a fetch problem, not a bug
        raise FetchError(where, f"connection failed: {describe(exc).split(':')[0]}",
                         fix="check the network, proxy or ZOO_MIRROR") from None


def git_blob_sha1(path: Path) -> str:
    """Git's object id of a file's content (`git hash-object`): how the hub pins non-LFS files."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def get_text(url: str, headers: dict[str, str] | None = None, limit: int = 1 << 20) -> str:
    """A small text answer (an API call made by `zoo pin`): mirrored, timed out, retried like downloads."""
    import requests

    try:
        resp, requested = open_url(http_session(), url, headers or {})
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise FetchError(url, f"connection failed after {constants.http_retries() + 1} attempts: "
                              f"{describe(exc).split(':')[0]}", fix="check the network, proxy or ZOO_MIRROR") from None
    with resp:
        if resp.status_code >= 400:
            raise _status_error(url, requested, resp.status_code)
        return resp.raw.read(limit, decode_content=True).decode("utf-8", errors="replace")
