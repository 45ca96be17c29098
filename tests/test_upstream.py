"""`zoo upstream` against the offline mirror: ok, moved, changed and gone, each found the cheap way."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.mirror import fixtures
from tests.conftest import make_root


def card(name: str, url: str, sha: str) -> str:
    return fixtures.onnx_card(name, url, sha)


def zoo(root, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stages", "--root", str(root), "upstream", *args],
                          capture_output=True, text=True)


def test_each_status_is_reported_and_the_exit_code_says_so(mirror, mirror_root, tmp_path, monkeypatch):
    base = "https://example.org/upstream-watch"
    shas = {n: fixtures.publish(mirror_root, f"{base}/{n}.onnx", fixtures.mnist8_model(seed=40 + i).SerializeToString())
            for i, n in enumerate(("same", "moved", "changed", "gone", "rehash"))}
    root = make_root(tmp_path, {f"onnx/u-{n}": card(f"u-{n}", f"{base}/{n}.onnx", sha) for n, sha in shas.items()})
    # moved: a redirect to the same bytes elsewhere; changed: new bytes at the pinned URL; gone: 404
    moved_to = f"{base}/new-home/moved.onnx"
    fixtures.publish(mirror_root, moved_to, (mirror_root / "example.org/upstream-watch/moved.onnx").read_bytes())
    mirror.redirect("/example.org/upstream-watch/moved.onnx", moved_to)
    fixtures.publish(mirror_root, f"{base}/changed.onnx", fixtures.mnist8_model(seed=99).SerializeToString())
    mirror.set_status("/example.org/upstream-watch/gone.onnx", 404)
    # rehash: the server's ETag is no digest, so only downloading and hashing can settle it
    mirror.fault("/example.org/upstream-watch/rehash.onnx", opaque_etag=True)
    monkeypatch.setenv("ZOO_MIRROR", mirror.url)
    out = zoo(root, "--json")
    assert out.returncode == 1, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert {n: r["status"] for n, r in rows.items()} == {
        "u-same": "ok", "u-moved": "moved", "u-changed": "changed", "u-gone": "gone", "u-rehash": "ok"}
    checked = {n: r["files"][0]["checked_by"] for n, r in rows.items()}
    assert checked == {"u-same": "etag", "u-moved": "etag", "u-changed": "etag", "u-gone": "head", "u-rehash": "hash"}
    assert rows["u-moved"]["detail"].endswith(f"redirects to {moved_to}")
    assert "HTTP 404" in rows["u-gone"]["detail"]
    table = zoo(root)
    assert table.returncode == 1 and "u-changed" in table.stdout and "1 ok" not in table.stdout
    assert "2 ok, 1 moved, 1 changed, 1 gone" in table.stdout
    assert zoo(root, "u-same", "u-rehash").returncode == 0


def test_a_changed_size_is_caught_without_a_digest(mirror, mirror_root, tmp_path, monkeypatch):
    """With the size recorded at fetch time, a different Content-Length settles it: no download."""
    from stages.pipeline import fetch_card

    base = "https://example.org/upstream-size"
    sha = fixtures.publish(mirror_root, f"{base}/m.onnx", fixtures.mnist8_model(seed=50).SerializeToString())
    root = make_root(tmp_path, {"onnx/u-size": card("u-size", f"{base}/m.onnx", sha)})
    fetch_card(root, root.joinpath("registry/onnx/u-size.yaml").relative_to(root))
    fixtures.publish(mirror_root, f"{base}/m.onnx", fixtures.mnist8_model(seed=50).SerializeToString() + b"\0")
    mirror.fault("/example.org/upstream-size/m.onnx", opaque_etag=True)
    out = zoo(root, "--json")
    (row,) = json.loads(out.stdout)
    assert (row["status"], row["files"][0]["checked_by"]) == ("changed", "size")


def test_a_hugging_face_repo_is_settled_by_the_hubs_own_digests(mirror, mirror_root, tmp_path, monkeypatch):
    """Hub files answer HEAD with X-Linked-Etag (sha256, LFS files) or ETag (git blob id): no download."""
    from tests.support.mirror import torch_fixtures

    text = torch_fixtures.build_tiny_bert(mirror_root).card
    root = make_root(tmp_path, {"onnx/tiny-bert": text})
    monkeypatch.setenv("ZOO_MIRROR", mirror.url)
    out = zoo(root, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    (row,) = json.loads(out.stdout)
    assert row["status"] == "ok" and len(row["files"]) >= 4
    assert {f["checked_by"] for f in row["files"]} == {"etag"}


def test_head_is_retried_by_the_shared_session(mirror, mirror_root, monkeypatch):
    """A 5xx on HEAD is retried like a download's GET; past the retries the file reads as gone."""
    from types import SimpleNamespace

    from stages.fetch import http_session
    from stages.upstream import check_file

    url = "https://example.org/upstream-retry/m.onnx"
    sha = fixtures.publish(mirror_root, url, b"some model bytes")
    remote = SimpleNamespace(url=url, filename="m.onnx", sha256=sha, git_sha1=None, md5=None)
    mirror.fault("/example.org/upstream-retry/m.onnx", fail_first=2, fail_status=503)
    assert check_file(http_session(), remote, {}).status == "ok"
    assert [(m, p) for m, p, _ in mirror.requests_log].count(("HEAD", "/example.org/upstream-retry/m.onnx")) == 3
    monkeypatch.setenv("ZOO_HTTP_RETRIES", "1")
    mirror.fault("/example.org/upstream-retry/m.onnx", fail_first=100, fail_status=503)
    assert check_file(http_session(), remote, {}).detail == "HTTP 503"
