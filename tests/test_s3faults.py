"""The fault-injecting S3 proxy (tests/support/s3faults.py): transparent for S3 clients, faults as clients see them."""

from __future__ import annotations

import http.client
import os
import socket
import threading
import time

import boto3
import pytest
import s3fs
from botocore.config import Config
from botocore.exceptions import (ClientError, ConnectionClosedError, EndpointConnectionError,
                                 FlexibleChecksumError, ResponseStreamingError)

from tests.support import sandbox
from tests.support.s3faults import S3FaultProxy

BUCKET = "faults-proxy"
DATA = os.urandom(1 << 20)


@pytest.fixture(scope="module")
def s3():
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {**sandbox.AWS_ENV, "NO_PROXY": "127.0.0.1"}.items():
            mp.setenv(name, value)
        with sandbox.S3Server(bucket=BUCKET) as server:
            boto3.client("s3", endpoint_url=server.endpoint).put_object(Bucket=BUCKET, Key="data.bin", Body=DATA)
            yield server


@pytest.fixture
def proxy(s3):
    with S3FaultProxy(s3.endpoint) as proxy:
        yield proxy


def client(proxy: S3FaultProxy, **config):
    """boto3 without retries (total_max_attempts counts the first attempt; max_attempts would not)."""
    return boto3.client("s3", endpoint_url=proxy.url, config=Config(
        retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=10, **config))


def error_code(call) -> str:
    with pytest.raises(ClientError) as info:
        call()
    return info.value.response["Error"]["Code"]


def raw_get(proxy: S3FaultProxy, key: str) -> http.client.HTTPResponse:
    """GET through http.client, which shows exactly what came over the wire (moto wants a signed GET)."""
    url = client(proxy).generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": key})
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    conn.request("GET", url.removeprefix(proxy.url))
    return conn.getresponse()


def test_boto3_round_trip_with_multipart(proxy):
    c = client(proxy)
    c.put_object(Bucket=BUCKET, Key="rt/one.bin", Body=DATA)
    assert c.get_object(Bucket=BUCKET, Key="rt/one.bin")["Body"].read() == DATA
    assert c.head_object(Bucket=BUCKET, Key="rt/one.bin")["ContentLength"] == len(DATA)
    parts, upload = [os.urandom(5 << 20), b"tail"], c.create_multipart_upload(Bucket=BUCKET, Key="rt/multi.bin")
    etags = [c.upload_part(Bucket=BUCKET, Key="rt/multi.bin", UploadId=upload["UploadId"], PartNumber=n,
                           Body=part)["ETag"] for n, part in enumerate(parts, 1)]
    c.complete_multipart_upload(Bucket=BUCKET, Key="rt/multi.bin", UploadId=upload["UploadId"], MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": etag} for n, etag in enumerate(etags, 1)]})
    assert c.get_object(Bucket=BUCKET, Key="rt/multi.bin")["Body"].read() == b"".join(parts)
    listed = c.list_objects_v2(Bucket=BUCKET, Prefix="rt/")["Contents"]
    assert {o["Key"]: o["Size"] for o in listed} == {"rt/one.bin": len(DATA), "rt/multi.bin": (5 << 20) + 4}
    c.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": "rt/one.bin"}, {"Key": "rt/multi.bin"}]})
    assert error_code(lambda: c.head_object(Bucket=BUCKET, Key="rt/one.bin")) == "404"
    assert {m for m, _, _ in proxy.requests} == {"GET", "HEAD", "PUT", "POST"}
    assert not proxy.injected and not any(isinstance(outcome, str) for _, _, outcome in proxy.requests)


def test_s3fs_round_trip(proxy, tmp_path):
    """The client dvc-s3 uses (aiobotocore on aiohttp; its PUTs carry `Expect: 100-continue`)."""
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": proxy.url}, skip_instance_cache=True)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom((10 << 20) + 1))  # s3fs goes multipart from 2 chunks up
    fs.pipe(f"{BUCKET}/fs/one.bin", DATA)
    fs.put_file(str(big), f"{BUCKET}/fs/big.bin", chunksize=5 << 20)
    assert fs.cat(f"{BUCKET}/fs/one.bin") == DATA and fs.cat(f"{BUCKET}/fs/big.bin") == big.read_bytes()
    assert sorted(fs.ls(f"{BUCKET}/fs", refresh=True)) == [f"{BUCKET}/fs/big.bin", f"{BUCKET}/fs/one.bin"]
    fs.rm(f"{BUCKET}/fs", recursive=True)
    assert any(m == "POST" and p.endswith("?uploads") for m, p, _ in proxy.requests)  # multipart went through
    assert {outcome for _, _, outcome in proxy.requests} <= {200, 204, 404}


def test_chunked_and_expect_100_continue(proxy):
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    conn.request("PUT", f"/{BUCKET}/chunked.bin", body=iter([DATA[:1000], DATA[1000:]]), encode_chunked=True)
    assert conn.getresponse().read() == b""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(f"PUT /{BUCKET}/expect.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                     f"Expect: 100-continue\r\n\r\n".encode())
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"hello")
        assert sock.recv(1000).startswith(b"HTTP/1.1 200 ")
    c = client(proxy)
    assert c.get_object(Bucket=BUCKET, Key="chunked.bin")["Body"].read() == DATA
    assert c.get_object(Bucket=BUCKET, Key="expect.bin")["Body"].read() == b"hello"


@pytest.mark.parametrize("kind, code", [("500", "InternalError"), ("503", "SlowDown")])
def test_error_replies(proxy, kind, code):
    proxy.add(kind)
    c = client(proxy)
    assert error_code(lambda: c.get_object(Bucket=BUCKET, Key="data.bin")) == code
    assert error_code(lambda: c.head_object(Bucket=BUCKET, Key="data.bin")) == kind  # HEAD: no body, no code
    assert proxy.injected == {kind: 2} and [o for _, _, o in proxy.requests] == [kind, kind]


def test_reset_is_an_rst_after_reading_the_request(proxy):
    proxy.add("reset", method="PUT")
    with pytest.raises(ConnectionClosedError):
        client(proxy).put_object(Bucket=BUCKET, Key="reset.bin", Body=DATA)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(f"PUT /{BUCKET}/reset.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc".encode())
        with pytest.raises(ConnectionResetError):  # an RST, not a FIN (which would read as b"")
            sock.recv(100)
    assert proxy.injected == {"reset": 2}
    assert error_code(lambda: client(proxy).head_object(Bucket=BUCKET, Key="reset.bin")) == "404"


def test_truncate_announces_the_full_length(proxy):
    proxy.add("truncate")
    reply = raw_get(proxy, "data.bin")
    assert reply.status == 200 and int(reply.getheader("Content-Length")) == len(DATA)
    with pytest.raises(http.client.IncompleteRead) as info:
        reply.read()
    assert info.value.partial == DATA[:len(DATA) // 2]
    with pytest.raises(ResponseStreamingError, match="IncompleteRead"):
        client(proxy).get_object(Bucket=BUCKET, Key="data.bin")["Body"].read()


def test_corrupt_flips_one_byte(proxy):
    proxy.add("corrupt")
    got = client(proxy, response_checksum_validation="when_required").get_object(
        Bucket=BUCKET, Key="data.bin")["Body"].read()
    assert len(got) == len(DATA) and [i for i in range(len(DATA)) if got[i] != DATA[i]] == [len(DATA) // 2]
    with pytest.raises(FlexibleChecksumError):  # botocore checks a single-part object's CRC32 by default
        client(proxy).get_object(Bucket=BUCKET, Key="data.bin")["Body"].read()


def test_times_fails_the_first_n_then_passes(proxy):
    rule = proxy.add("500", method="GET", key=r"/data\.bin$", times=2)
    c = client(proxy)
    assert [error_code(lambda: c.get_object(Bucket=BUCKET, Key="data.bin")) for _ in range(2)] == ["InternalError"] * 2
    assert c.get_object(Bucket=BUCKET, Key="data.bin")["Body"].read() == DATA
    c.head_object(Bucket=BUCKET, Key="data.bin")  # another method: not matched
    assert (rule.matched, rule.hits, proxy.injected["500"]) == (3, 2, 2)
    assert [o for _, _, o in proxy.requests] == ["500", "500", 200, 200]


def test_every_nth(proxy):
    rule = proxy.add("503", key="data", every=3)
    c = client(proxy)
    outcomes = []
    for _ in range(7):
        try:
            c.head_object(Bucket=BUCKET, Key="data.bin")
            outcomes.append("ok")
        except ClientError:
            outcomes.append("503")
    assert outcomes == ["ok", "ok", "503", "ok", "ok", "503", "ok"] and rule.hits == 2


def test_first_rule_that_fires_wins(proxy):
    proxy.add("500", times=1)
    proxy.add("503")
    c = client(proxy)
    assert [error_code(lambda: c.head_object(Bucket=BUCKET, Key="data.bin")) for _ in range(2)] == ["500", "503"]


def test_hold_until_release(proxy):
    rule = proxy.add("hold", method="GET")
    got: list[bytes] = []
    thread = threading.Thread(target=lambda: got.append(
        client(proxy).get_object(Bucket=BUCKET, Key="data.bin")["Body"].read()), daemon=True)
    thread.start()
    proxy.wait_held(1, timeout=5)
    time.sleep(0.1)
    assert thread.is_alive() and not proxy.requests
    proxy.release()
    thread.join(5)
    assert got == [DATA] and proxy.requests == [("GET", f"/{BUCKET}/data.bin", "hold")] and rule.hits == 1
    assert proxy.held == 0
    proxy.add("hold", method="HEAD")
    threads = [threading.Thread(target=lambda: client(proxy).head_object(Bucket=BUCKET, Key="data.bin"), daemon=True)
               for _ in range(2)]
    for thread in threads:
        thread.start()
    proxy.wait_held(2, timeout=5)
    proxy.clear()
    for thread in threads:
        thread.join(5)
    proxy.wait_for(3, timeout=5)
    assert proxy.held == 0 and proxy.injected == {"hold": 3}


def test_hold_drops_the_request_of_a_client_gone_meanwhile(proxy):
    """A command killed while its upload is held leaves nothing behind on the remote."""
    rule = proxy.add("hold", method="PUT")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(f"PUT /{BUCKET}/killed.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc".encode())
        proxy.wait_held(1, timeout=5)
    proxy.remove(rule)
    proxy.wait_for(1, timeout=5)
    assert error_code(lambda: client(proxy).head_object(Bucket=BUCKET, Key="killed.bin")) == "404"


def test_delay(proxy):
    proxy.add("delay", method="HEAD", delay=0.3)
    start = time.monotonic()
    client(proxy).head_object(Bucket=BUCKET, Key="data.bin")
    assert time.monotonic() - start >= 0.3 and proxy.requests[-1][2] == "delay"


def test_down_and_up(proxy):
    c = client(proxy)
    c.head_object(Bucket=BUCKET, Key="data.bin")  # a keep-alive connection the client will try first
    proxy.down()
    with pytest.raises(EndpointConnectionError):
        c.head_object(Bucket=BUCKET, Key="data.bin")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=5).close()
    proxy.up()
    assert c.head_object(Bucket=BUCKET, Key="data.bin")["ContentLength"] == len(DATA)


def test_bad_rules(proxy):
    with pytest.raises(ValueError, match="unknown fault"):
        proxy.add("404")
    with pytest.raises(ValueError, match="GET only"):
        proxy.add("corrupt", method="PUT")
    with pytest.raises(TimeoutError):
        proxy.wait_held(1, timeout=0.1)
