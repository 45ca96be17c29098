"""The offline hub mirror, over real sockets on 127.0.0.1 (and the real huggingface_hub client)."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.support.mirror import MirrorServer, add_hf_repo, hf_commit_id
from tests.support.mirror.server import RATE_LIMIT_HTML

REPO_ROOT = Path(__file__).resolve().parents[1]
BLOB = bytes(range(256)) * 40  # 10240 binary bytes
BLOB_SHA = hashlib.sha256(BLOB).hexdigest()
BLOB_PATH = "/example.com/models/net.onnx"


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    fixture = tmp_path / "mirror"
    (fixture / "example.com" / "models").mkdir(parents=True)
    (fixture / "example.com" / "models" / "net.onnx").write_bytes(BLOB)
    (fixture / "example.com" / "meta.json").write_text('{"a": 1}')
    (tmp_path / "secret.txt").write_text("outside the mirror")
    return fixture


@pytest.fixture()
def mirror(root: Path):
    with MirrorServer(root) as server:
        yield server


def get(server: MirrorServer, path: str, **kwargs) -> requests.Response:
    return requests.get(server.url + path, timeout=5, **kwargs)


def raw_request(server: MirrorServer, path: str) -> tuple[int, bytes]:
    """http.client keeps the path as written: requests/urllib3 would normalise `..` away."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


# ----------------------------------------------------------------------------- static files

def test_get_serves_file_with_headers(mirror):
    resp = get(mirror, BLOB_PATH + "?download=true")
    assert resp.status_code == 200
    assert resp.content == BLOB
    assert resp.headers["Content-Length"] == str(len(BLOB))
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert resp.headers["ETag"] == f'"{BLOB_SHA}"'
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert resp.headers["Last-Modified"].endswith("GMT")
    assert get(mirror, "/example.com/meta.json").headers["Content-Type"] == "application/json"


def test_head_has_length_but_no_body(mirror):
    resp = requests.head(mirror.url + BLOB_PATH, timeout=5)
    assert resp.status_code == 200
    assert resp.headers["Content-Length"] == str(len(BLOB))
    assert resp.headers["ETag"] == f'"{BLOB_SHA}"'
    assert resp.content == b""


def test_etag_follows_content_change(mirror, root):
    first = get(mirror, "/example.com/meta.json").headers["ETag"]
    (root / "example.com" / "meta.json").write_text('{"a": 2, "b": 3}')
    resp = get(mirror, "/example.com/meta.json")
    assert resp.headers["ETag"] != first
    assert resp.headers["ETag"] == f'"{hashlib.sha256(resp.content).hexdigest()}"'


@pytest.mark.parametrize("header, start, end", [
    ("bytes=100-199", 100, 199), ("bytes=10000-", 10000, len(BLOB) - 1), ("bytes=-40", len(BLOB) - 40, len(BLOB) - 1),
    ("bytes=10200-99999", 10200, len(BLOB) - 1)])
def test_range_gives_206(mirror, header, start, end):
    resp = get(mirror, BLOB_PATH, headers={"Range": header})
    assert resp.status_code == 206
    assert resp.content == BLOB[start:end + 1]
    assert resp.headers["Content-Range"] == f"bytes {start}-{end}/{len(BLOB)}"
    assert resp.headers["Content-Length"] == str(end - start + 1)


def test_unsatisfiable_range_gives_416(mirror):
    resp = get(mirror, BLOB_PATH, headers={"Range": f"bytes={len(BLOB)}-"})
    assert resp.status_code == 416
    assert resp.headers["Content-Range"] == f"bytes */{len(BLOB)}"


def test_if_range_with_stale_etag_sends_whole_file(mirror):
    stale = get(mirror, BLOB_PATH, headers={"Range": "bytes=5-", "If-Range": '"0000"'})
    assert stale.status_code == 200 and stale.content == BLOB
    fresh = get(mirror, BLOB_PATH, headers={"Range": "bytes=5-", "If-Range": f'"{BLOB_SHA}"'})
    assert fresh.status_code == 206 and fresh.content == BLOB[5:]


@pytest.mark.parametrize("path", ["/example.com/nothing.bin", "/example.com/models", "/", "/example.com/models/"])
def test_missing_and_directories_are_404(mirror, path):
    resp = get(mirror, path)
    assert resp.status_code == 404
    assert b"not in mirror" in resp.content


@pytest.mark.parametrize("path", ["/example.com/../../secret.txt", "/example.com/%2e%2e/%2E%2E/secret.txt",
                                  "/..%2f..%2fsecret.txt"])
def test_path_traversal_refused(mirror, path):
    status, body = raw_request(mirror, path)
    assert status == 400
    assert b"outside" not in body


def test_requests_log_records_method_path_and_range(mirror):
    get(mirror, BLOB_PATH + "?x=1", headers={"Range": "bytes=0-0"})
    requests.head(mirror.url + "/example.com/meta.json", timeout=5)
    assert mirror.requests_log == [("GET", BLOB_PATH + "?x=1", "bytes=0-0"), ("HEAD", "/example.com/meta.json", None)]


# ----------------------------------------------------------------------------- routes and faults

def test_redirect_answers_with_absolute_upstream_location(mirror):
    upstream = "https://media.githubusercontent.com/media/o/r/abc/f.onnx"
    mirror.redirect("/github.com/o/r/raw/abc/f.onnx", upstream)
    mirror.redirect("/github.com/o/r/raw/abc/g.onnx", upstream, status=301)
    resp = get(mirror, "/github.com/o/r/raw/abc/f.onnx?raw=1", allow_redirects=False)
    assert resp.status_code == 302
    assert resp.headers["Location"] == upstream
    assert get(mirror, "/github.com/o/r/raw/abc/g.onnx", allow_redirects=False).status_code == 301


def test_set_status(mirror):
    mirror.set_status(BLOB_PATH, 403, b"forbidden here")
    resp = get(mirror, BLOB_PATH)
    assert resp.status_code == 403
    assert resp.content == b"forbidden here"
    mirror.set_status("/example.com/gone.onnx", 410)
    assert get(mirror, "/example.com/gone.onnx").status_code == 410


def test_fail_first_then_success(mirror):
    mirror.fault(BLOB_PATH, fail_first=2, fail_status=503)
    assert [get(mirror, BLOB_PATH).status_code for _ in range(3)] == [503, 503, 200]
    mirror.fault(BLOB_PATH, fail_first=1, fail_status=429)
    first, second = get(mirror, BLOB_PATH), get(mirror, BLOB_PATH)
    assert (first.status_code, second.status_code, second.content) == (429, 200, BLOB)


def _read_cut_body(server: MirrorServer, path: str, headers: dict[str, str] | None = None):
    """(status, Content-Length, bytes received); http.client hands over what came before the cut."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        try:
            body = resp.read()
        except http.client.IncompleteRead as exc:
            body = exc.partial
        return resp.status, int(resp.headers["Content-Length"]), body
    finally:
        conn.close()


def test_drop_after_cuts_body_then_heals(mirror):
    mirror.fault(BLOB_PATH, drop_after=1000, drop_times=2)
    for _ in range(2):
        status, length, body = _read_cut_body(mirror, BLOB_PATH)
        assert (status, length) == (200, len(BLOB))
        assert body == BLOB[:1000]
    assert get(mirror, BLOB_PATH).content == BLOB


def test_drop_after_through_requests_is_a_broken_body(mirror):
    mirror.fault(BLOB_PATH, drop_after=1000)
    received = 0
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        with get(mirror, BLOB_PATH, stream=True) as resp:
            assert resp.headers["Content-Length"] == str(len(BLOB))
            for chunk in resp.iter_content(100):
                received += len(chunk)
    assert received == 1000 < len(BLOB)


def test_drop_after_applies_to_range_resume(mirror):
    mirror.fault(BLOB_PATH, drop_after=10)
    status, length, body = _read_cut_body(mirror, BLOB_PATH, {"Range": "bytes=5000-"})
    assert (status, length, body) == (206, len(BLOB) - 5000, BLOB[5000:5010])


def test_no_range_ignores_range(mirror):
    mirror.fault(BLOB_PATH, no_range=True)
    resp = get(mirror, BLOB_PATH, headers={"Range": "bytes=100-"})
    assert resp.status_code == 200
    assert resp.content == BLOB
    assert "Content-Range" not in resp.headers


def test_html_200_and_clear_faults(mirror):
    mirror.fault(BLOB_PATH, html_200=True)
    resp = get(mirror, BLOB_PATH)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/html")
    assert resp.content == RATE_LIMIT_HTML == b"<!DOCTYPE html><html><body>Rate limit exceeded</body></html>"
    mirror.clear_faults()
    assert get(mirror, BLOB_PATH).content == BLOB


def test_routes_json_is_loaded_at_start(root):
    upstream = "https://media.githubusercontent.com/media/o/r/sha/w.onnx"
    (root / "_routes.json").write_text(json.dumps({
        "redirects": {"/github.com/o/r/raw/sha/w.onnx": upstream},
        "status": {"/example.com/private.onnx": 403, "/example.com/gone.onnx": {"status": 410, "body": "gone"}},
        "faults": {BLOB_PATH: {"fail_first": 1}},
    }))
    with MirrorServer(root) as server:
        resp = get(server, "/github.com/o/r/raw/sha/w.onnx", allow_redirects=False)
        assert (resp.status_code, resp.headers["Location"]) == (302, upstream)
        assert get(server, "/example.com/private.onnx").status_code == 403
        gone = get(server, "/example.com/gone.onnx")
        assert (gone.status_code, gone.content) == (410, b"gone")
        assert [get(server, BLOB_PATH).status_code for _ in range(2)] == [503, 200]


def test_routes_json_reloaded_when_it_changes(mirror, root):
    assert get(mirror, "/example.com/late.onnx").status_code == 404
    (root / "_routes.json").write_text(json.dumps({"status": {"/example.com/late.onnx": 451}}))
    assert get(mirror, "/example.com/late.onnx").status_code == 451
    mirror.set_status("/example.com/late.onnx", 404, b"code wins")
    assert get(mirror, "/example.com/late.onnx").content == b"code wins"


def test_stop_closes_keep_alive_connections(root):
    server = MirrorServer(root).start()
    with requests.Session() as session:
        assert session.get(server.url + BLOB_PATH, timeout=5).content == BLOB
        server.stop()
        with pytest.raises(requests.exceptions.ConnectionError):
            session.get(server.url + BLOB_PATH, timeout=5)


# ----------------------------------------------------------------------------- Hugging Face

HF_REPO = "acme/tiny-net"
CONFIG = b'{"hidden": 4}\n'
WEIGHTS = os.urandom(3000)


@pytest.fixture()
def hub(root: Path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    files = {"config.json": CONFIG, "onnx/model.onnx": WEIGHTS, "README.md": b"# tiny\n"}
    commit = add_hf_repo(root, HF_REPO, files)
    with MirrorServer(root) as server:
        yield server, commit


def endpoint(server: MirrorServer) -> str:
    return server.url + "/huggingface.co"


def test_commit_id_is_deterministic(tmp_path):
    files = {"b.txt": b"2", "a.txt": b"1"}
    assert add_hf_repo(tmp_path, "x/y", files) == hf_commit_id(dict(reversed(files.items())))
    assert hf_commit_id(files) != hf_commit_id({"a.txt": b"1"})
    assert len(hf_commit_id(files)) == 40


def test_hf_hub_download_by_commit_and_ref(hub, tmp_path):
    from huggingface_hub import hf_hub_download

    server, commit = hub
    for revision in (commit, "main"):
        cache = tmp_path / f"cache-{revision}"
        weights = hf_hub_download(HF_REPO, "onnx/model.onnx", revision=revision, endpoint=endpoint(server),
                                  cache_dir=cache, token=False)
        config = hf_hub_download(HF_REPO, "config.json", revision=revision, endpoint=endpoint(server),
                                 cache_dir=cache, token=False)
        assert Path(weights).read_bytes() == WEIGHTS
        assert Path(config).read_bytes() == CONFIG
        assert f"snapshots/{commit}/" in Path(weights).as_posix()
    # LFS blobs are cached under their sha256, regular files under their git blob id
    blobs = {p.name for p in (tmp_path / f"cache-{commit}").rglob("blobs/*")}
    git_id = hashlib.sha1(b"blob %d\0" % len(CONFIG) + CONFIG).hexdigest()
    assert blobs == {hashlib.sha256(WEIGHTS).hexdigest(), git_id}


def test_resolve_headers_match_the_hub(hub):
    server, commit = hub
    url = f"{endpoint(server)}/{HF_REPO}/resolve/{commit}/onnx/model.onnx"
    head = requests.head(url, timeout=5)
    assert head.status_code == 200
    assert head.headers["X-Repo-Commit"] == commit
    assert head.headers["X-Linked-Etag"] == f'"{hashlib.sha256(WEIGHTS).hexdigest()}"'
    assert head.headers["X-Linked-Size"] == str(len(WEIGHTS))
    assert not [h for h in head.headers if h.lower().startswith("x-xet")]
    part = requests.get(url, headers={"Range": "bytes=10-19"}, timeout=5)
    assert (part.status_code, part.content) == (206, WEIGHTS[10:20])
    small = requests.head(f"{endpoint(server)}/{HF_REPO}/resolve/main/config.json", timeout=5)
    assert "X-Linked-Etag" not in small.headers
    git_id = hashlib.sha1(b"blob %d\0" % len(CONFIG) + CONFIG).hexdigest()
    assert small.headers["ETag"] == f'"{git_id}"'


def test_model_info_with_files_metadata(hub):
    from huggingface_hub import HfApi

    server, commit = hub
    info = HfApi(endpoint=endpoint(server), token=False).model_info(HF_REPO, revision=commit, files_metadata=True)
    assert info.id == HF_REPO and info.sha == commit and info.private is False
    by_name = {s.rfilename: s for s in info.siblings}
    assert sorted(by_name) == ["README.md", "config.json", "onnx/model.onnx"]
    weights = by_name["onnx/model.onnx"]
    assert weights.size == len(WEIGHTS)
    assert weights.lfs.sha256 == hashlib.sha256(WEIGHTS).hexdigest() and weights.lfs.size == len(WEIGHTS)
    assert by_name["config.json"].lfs is None and by_name["config.json"].size == len(CONFIG)
    plain = HfApi(endpoint=endpoint(server), token=False).model_info(HF_REPO)
    assert plain.sha == commit and plain.siblings[0].size is None


def test_list_repo_files_and_tree(hub):
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile, RepoFolder

    server, commit = hub
    api = HfApi(endpoint=endpoint(server), token=False)
    assert sorted(api.list_repo_files(HF_REPO, revision=commit)) == ["README.md", "config.json", "onnx/model.onnx"]
    top = {e.path: e for e in api.list_repo_tree(HF_REPO, revision="main")}
    assert isinstance(top["onnx"], RepoFolder) and isinstance(top["config.json"], RepoFile)
    assert "onnx/model.onnx" not in top
    sub = list(api.list_repo_tree(HF_REPO, "onnx", revision=commit, expand=True))
    assert [e.path for e in sub] == ["onnx/model.onnx"]
    assert sub[0].lfs.sha256 == hashlib.sha256(WEIGHTS).hexdigest() and sub[0].last_commit.oid == commit


def test_hf_errors_map_to_client_exceptions(hub, tmp_path):
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    server, commit = hub
    common = dict(endpoint=endpoint(server), cache_dir=tmp_path / "cache", token=False)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(HF_REPO, "config.json", revision="0" * 40, **common)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(HF_REPO, "missing.bin", revision=commit, **common)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("acme/nope", "config.json", revision=commit, **common)
    api = HfApi(endpoint=endpoint(server), token=False)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("acme/nope")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(HF_REPO, revision="v9")
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(HF_REPO, "nowhere", revision=commit))


def test_second_commit_keeps_first_and_moves_refs(hub, root, tmp_path):
    from huggingface_hub import HfApi, hf_hub_download

    server, first = hub
    second = add_hf_repo(root, HF_REPO, {"config.json": b'{"hidden": 8}\n'}, refs={"main": "", "refs/pr/1": first})
    assert second != first
    common = dict(endpoint=endpoint(server), token=False)
    old = hf_hub_download(HF_REPO, "config.json", revision=first, cache_dir=tmp_path / "a", **common)
    new = hf_hub_download(HF_REPO, "config.json", revision="main", cache_dir=tmp_path / "b", **common)
    assert (Path(old).read_bytes(), Path(new).read_bytes()) == (CONFIG, b'{"hidden": 8}\n')
    assert HfApi(**common).model_info(HF_REPO, revision="refs/pr/1").sha == first  # sent as refs%2Fpr%2F1
    with pytest.raises(ValueError):
        add_hf_repo(root, HF_REPO, {"x": b"1"}, refs={"main": "f" * 40})


# ----------------------------------------------------------------------------- CLI

def test_cli_serves_until_terminated(root, tmp_path):
    port_file = tmp_path / "port"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.mirror", "--root", str(root), "--port-file",
                             str(port_file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        banner = proc.stdout.readline()
        port = int(port_file.read_text())
        assert banner.strip() == f"mirror serving {root} at http://127.0.0.1:{port}"
        assert requests.get(f"http://127.0.0.1:{port}{BLOB_PATH}", timeout=5).content == BLOB
    finally:
        proc.terminate()
        deadline = time.monotonic() + 5
        code = proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
    assert code == 0
    assert proc.stderr.read() == ""
