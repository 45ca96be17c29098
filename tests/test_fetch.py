"""Verified fetching against the offline mirror: real requests, real sockets, real huggingface_hub."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from pathlib import Path

import pytest

from stages.errors import FetchError, HashMismatchError, HTTPStatusError, NotAModelError, TruncatedError
from stages.fetch import download, download_hf, mirror_url
from tests.support.mirror.fixtures import GITHUB_RAW, RAW_LFS, publish
from tests.support.mirror.server import add_hf_repo

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, several chunks
SHA = hashlib.sha256(PAYLOAD).hexdigest()


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def url(mirror, mirror_root, request):
    """A fresh upstream URL per test, served by the mirror."""
    upstream = f"https://example.org/models/{request.node.name}/model.bin"
    publish(mirror_root, upstream, PAYLOAD)
    return upstream


def test_mirror_url_rewrites_every_upstream_host():
    assert mirror_url("https://github.com/o/r/raw/abc/f.onnx?x=1", "http://proxy:8080/zoo") == \
        "http://proxy:8080/zoo/github.com/o/r/raw/abc/f.onnx?x=1"
    assert mirror_url("https://example.org/a", None) == "https://example.org/a" or os.environ.get("ZOO_MIRROR")
    assert mirror_url("http://proxy:8080/zoo/example.org/a", "http://proxy:8080/zoo") == \
        "http://proxy:8080/zoo/example.org/a"


def test_download_verifies_and_places_atomically(url, tmp_path, mirror):
    dest = tmp_path / "out" / "model.bin"
    assert download(url, dest, SHA) == (len(PAYLOAD), SHA)
    assert dest.read_bytes() == PAYLOAD
    assert files_in(dest.parent) == ["model.bin"]
    assert any(path.endswith("/example.org/models/test_download_verifies_and_places_atomically0/model.bin")
               or "model.bin" in path for _, path, _ in mirror.requests_log)


def test_sha256_prefix_pin_is_checked(url, tmp_path):
    """torch.hub's convention: the file name carries a sha256 prefix; a wrong one keeps nothing."""
    assert download(url, tmp_path / "a.bin", None, sha256_prefix=SHA[:8]) == (len(PAYLOAD), SHA)
    with pytest.raises(HashMismatchError, match=r"pinned 00000000\.\.\., got " + SHA):
        download(url, tmp_path / "b.bin", None, sha256_prefix="00000000")
    assert files_in(tmp_path) == ["a.bin"]


def test_github_lfs_redirect_is_followed_through_the_mirror(mirror, demo_fixtures, tmp_path):
    """github.com/<o>/<r>/raw/<commit>/... redirects to media.githubusercontent.com: that hop is mirrored too."""
    rel = "vision/classification/mnist/model/mnist-8.onnx"
    sha = next(iter(demo_fixtures["mnist"].files.values()))
    dest = tmp_path / "mnist-8.onnx"
    download(f"https://{GITHUB_RAW}/{rel}", dest, sha)
    paths = [path for _, path, _ in mirror.requests_log]
    assert f"/{GITHUB_RAW}/{rel}" in paths and any(p.startswith("/media.githubusercontent.com/") for p in paths)


def test_hash_mismatch_keeps_nothing(url, tmp_path):
    dest = tmp_path / "model.bin"
    with pytest.raises(HashMismatchError) as info:
        download(url, dest, "0" * 64)
    message = str(info.value)
    assert f"pinned {'0' * 64}, got {SHA} ({len(PAYLOAD)} bytes)" in message
    assert "update the card's sha256" in message and url in message
    assert files_in(tmp_path) == []


def test_lfs_pointer_is_named_as_such(mirror, demo_fixtures, tmp_path):
    rel = "vision/classification/mnist/model/mnist-8.onnx"
    sha = next(iter(demo_fixtures["mnist"].files.values()))
    with pytest.raises(NotAModelError, match=r"Git LFS pointer \(\d+ bytes\), not the file \(the pointer names the pinned file\)"):
        download(f"https://{RAW_LFS}/{rel}", tmp_path / "m.onnx", sha)
    assert files_in(tmp_path) == []


def test_html_page_with_200_is_named_as_such(url, mirror, tmp_path):
    mirror.fault("/" + url[len("https://"):], html_200=True)
    with pytest.raises(NotAModelError, match="served an HTML page with status 200"):
        download(url, tmp_path / "m.bin", SHA)
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("status,problem,fix", [
    (403, "HTTP 403: access denied", "pin its new URL"),
    (404, "HTTP 404: the file is gone upstream", "restage from the copy kept in the DVC remote"),
    (410, "HTTP 410: the file is gone upstream", "registry/_raw/<name>"),
])
def test_error_statuses_are_plain(url, mirror, tmp_path, status, problem, fix):
    mirror.set_status("/" + url[len("https://"):], status)
    with pytest.raises(HTTPStatusError) as info:
        download(url, tmp_path / "m.bin", SHA)
    assert info.value.status == status and problem in str(info.value) and fix in str(info.value)
    assert files_in(tmp_path) == []


def test_5xx_is_retried_with_backoff(url, mirror, tmp_path):
    path = "/" + url[len("https://"):]
    mirror.fault(path, fail_first=2, fail_status=503)
    download(url, tmp_path / "m.bin", SHA)
    assert [p for _, p, _ in mirror.requests_log].count(path) == 3


def test_5xx_gives_up_after_the_retries(url, mirror, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_HTTP_RETRIES", "2")
    path = "/" + url[len("https://"):]
    mirror.fault(path, fail_first=100, fail_status=502)
    with pytest.raises(HTTPStatusError, match="HTTP 502 after 2 retries"):
        download(url, tmp_path / "m.bin", SHA)
    assert [p for _, p, _ in mirror.requests_log].count(path) == 3
    assert files_in(tmp_path) == []


def test_interrupted_body_resumes_with_range(url, mirror, tmp_path):
    path = "/" + url[len("https://"):]
    mirror.fault(path, drop_after=300_000, drop_times=1)
    download(url, tmp_path / "m.bin", SHA)
    assert (tmp_path / "m.bin").read_bytes() == PAYLOAD
    ranges = [r for _, p, r in mirror.requests_log if p == path]
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")
    assert int(ranges[1].split("=")[1].rstrip("-")) >= 1  # resumed from where the body stopped


def test_interrupted_body_restarts_when_range_is_not_supported(url, mirror, tmp_path):
    path = "/" + url[len("https://"):]
    mirror.fault(path, drop_after=300_000, drop_times=1, no_range=True)
    download(url, tmp_path / "m.bin", SHA)
    assert (tmp_path / "m.bin").read_bytes() == PAYLOAD


def test_download_cut_short_resumes_in_the_next_run(url, mirror, tmp_path, monkeypatch):
    """The network gives up mid-file: the bytes are kept under the pin, and the next run asks only for the rest."""
    monkeypatch.setenv("ZOO_HTTP_RETRIES", "0")
    path = "/" + url[len("https://"):]
    partial = tmp_path / "partial"
    mirror.fault(path, drop_after=400_000, drop_times=1)
    with pytest.raises(TruncatedError):
        download(url, tmp_path / "out" / "m.bin", SHA, partial_dir=partial)
    kept = (partial / f"{SHA}.part").stat().st_size
    assert 0 < kept <= 400_000 and not (tmp_path / "out" / "m.bin").exists()
    download(url, tmp_path / "out" / "m.bin", SHA, partial_dir=partial)
    assert (tmp_path / "out" / "m.bin").read_bytes() == PAYLOAD
    ranges = [r for _, p, r in mirror.requests_log if p == path]
    assert ranges[-1] == f"bytes={kept}-"  # the second run resumed where the first stopped
    assert list(partial.iterdir()) == [] and files_in(tmp_path / "out") == ["m.bin"]


def test_stale_partial_that_hashes_wrong_is_discarded(url, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / f"{SHA}.part").write_bytes(b"garbage from another file" * 100)
    with pytest.raises(HashMismatchError):
        download(url, tmp_path / "m.bin", SHA, partial_dir=partial)
    assert list(partial.iterdir()) == []  # not kept: the next run starts clean
    download(url, tmp_path / "m.bin", SHA, partial_dir=partial)
    assert (tmp_path / "m.bin").read_bytes() == PAYLOAD


def test_body_that_always_breaks_is_truncated_error(url, mirror, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_HTTP_RETRIES", "1")
    path = "/" + url[len("https://"):]
    mirror.fault(path, drop_after=1000, drop_times=100, no_range=True)
    with pytest.raises(TruncatedError, match=rf"body ended at \d+ of {len(PAYLOAD)} bytes after 2 attempts"):
        download(url, tmp_path / "m.bin", SHA)
    assert files_in(tmp_path) == []


def test_every_request_has_a_timeout(tmp_path, monkeypatch):
    """A server that accepts but never answers: the read timeout fires, retried, then a clear error."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    monkeypatch.setenv("ZOO_MIRROR", f"http://127.0.0.1:{listener.getsockname()[1]}")
    monkeypatch.setenv("ZOO_READ_TIMEOUT", "0.3")
    monkeypatch.setenv("ZOO_HTTP_RETRIES", "1")
    monkeypatch.setenv("ZOO_RETRY_BACKOFF", "0.01")
    try:
        with pytest.raises(FetchError, match="connection failed after 2 attempts: .*Timeout"):
            download("https://example.org/slow.bin", tmp_path / "slow.bin", SHA)
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()
    assert files_in(tmp_path) == []


def test_hugging_face_download_pinned_and_verified(mirror, mirror_root, tmp_path):
    commit = add_hf_repo(mirror_root, "onnxmodelzoo/fetch-test", {"model.onnx": PAYLOAD})
    dest = tmp_path / "raw" / "model.onnx"
    assert download_hf("onnxmodelzoo/fetch-test", commit, "model.onnx", dest, SHA) == (len(PAYLOAD), SHA)
    assert dest.read_bytes() == PAYLOAD and files_in(dest.parent) == ["model.onnx"]
    with pytest.raises(HashMismatchError):
        download_hf("onnxmodelzoo/fetch-test", commit, "model.onnx", tmp_path / "x" / "m.onnx", "1" * 64)
    assert files_in(tmp_path / "x") == []
    text = b"# small file in git\n"
    readme = add_hf_repo(mirror_root, "onnxmodelzoo/fetch-test-small", {"README.md": text})
    blob = hashlib.sha1(b"blob %d\0" % len(text) + text).hexdigest()  # what `git hash-object` prints
    size, _ = download_hf("onnxmodelzoo/fetch-test-small", readme, "README.md", tmp_path / "z" / "R.md", None, blob)
    assert size == len(text)
    with pytest.raises(HashMismatchError, match="git blob"):
        download_hf("onnxmodelzoo/fetch-test-small", readme, "README.md", tmp_path / "w" / "R.md", None, "0" * 40)
    with pytest.raises(HTTPStatusError, match=f"revision {'c' * 40} not found in onnxmodelzoo/fetch-test"):
        download_hf("onnxmodelzoo/fetch-test", "c" * 40, "model.onnx", tmp_path / "y" / "m.onnx", SHA)
    with pytest.raises(HTTPStatusError, match="'nope.onnx' not found in onnxmodelzoo/fetch-test"):
        download_hf("onnxmodelzoo/fetch-test", commit, "nope.onnx", tmp_path / "y" / "m.onnx", SHA)
    with pytest.raises(HTTPStatusError, match="repo 'onnxmodelzoo/missing' not found"):
        download_hf("onnxmodelzoo/missing", commit, "model.onnx", tmp_path / "y" / "m.onnx", SHA)


def test_a_redirect_loop_is_cut_after_the_max_hops(url, mirror, tmp_path):
    path = "/" + url[len("https://"):]
    mirror.redirect(path, url)  # redirects to itself, forever
    with pytest.raises(FetchError, match="more than 10 redirects"):
        download(url, tmp_path / "m.bin", SHA)
    assert [p for _, p, _ in mirror.requests_log].count(path) == 11 and files_in(tmp_path) == []


def test_an_unreachable_hub_api_is_a_fetch_error_not_a_crash(monkeypatch):
    """The Hub's API down (here: nothing listens on the port) is exit 4 with the network hint, not `internal error`."""
    from stages.errors import FetchError
    from stages.sources import hub

    monkeypatch.setenv("ZOO_MIRROR", "http://127.0.0.1:9")
    with pytest.raises(FetchError) as info:
        hub.repo_files("zoo-fixtures/tiny-bert", "c" * 40)
    assert "connection failed" in str(info.value) and "ZOO_MIRROR" in str(info.value)
