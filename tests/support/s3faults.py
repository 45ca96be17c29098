"""A fault-injecting HTTP proxy in front of the local S3 server, to test how the registry survives a bad remote.

Point any S3 client (DVC's dvc-s3 `endpointurl`, s3fs, boto3) at `S3FaultProxy.url`: every request is
forwarded to moto (`sandbox.S3Server`) and its reply relayed, unless a rule injects a fault:

    with S3Server() as s3, S3FaultProxy(s3.endpoint) as proxy:
        proxy.add("503", method="PUT", times=2)         # the first two uploads get SlowDown
        proxy.add("corrupt", key=r"/files/md5/")        # every download gets one byte flipped
        hold = proxy.add("hold", method="PUT", times=1)  # freeze the first upload:
        proxy.wait_held(1)                              # once it is held, kill the client,
        proxy.remove(hold)                              # then let go (a dead client's request is dropped)

Kinds: "500" (InternalError) and "503" (SlowDown) answer an S3 XML error; "reset" reads the request and
resets the connection without a reply; "truncate" relays moto's status and headers (its full Content-Length)
but half the body, then closes the connection; "corrupt" flips the middle byte of the body; "hold" blocks the
request until `release()`, `remove(rule)` or `clear()`, then forwards it unless its client has hung up
meanwhile; "delay" forwards after `delay` seconds (any rule sleeps `delay` before its fault). "truncate" and
"corrupt" apply to GETs only (the replies that carry data).

A rule matches a request by `method` and by `key`, a regex searched in the percent-decoded URL path (no
query). It fires on every match, or on every `every`-th, at most `times` times in all. The first rule that
fires wins. `down()`/`up()` close and reopen the listening socket (on the same port): meanwhile the remote
is unreachable (connection refused).

As s3fs (so DVC) sees faults: aiohttp itself re-sends an idempotent request (GET, HEAD, PUT, DELETE) once
after a "reset", so one reset goes unnoticed (use `times=2` or more); aiobotocore reports a reset as
EndpointConnectionError, as it does a proxy that is down; botocore checks the CRC32 that moto returns for a
GET of a whole single-part object, so "corrupt" is only silent on ranged GETs and multipart objects.
"""

from __future__ import annotations

import re
import select
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.client import HTTPConnection, HTTPResponse
from http.server import BaseHTTPRequestHandler
from urllib.parse import unquote, urlsplit

from tests.support.httpserver import TrackingHTTPServer

KINDS = ("500", "503", "reset", "truncate", "corrupt", "hold", "delay")
BODY_KINDS = ("truncate", "corrupt")
ERRORS = {"500": ("InternalError", "We encountered an internal error. Please try again."),
          "503": ("SlowDown", "Please reduce your request rate.")}
HOP_BY_HOP = ("connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade")
CHUNK = 1 << 16


@dataclass(eq=False)
class Rule:
    """One fault and the requests it applies to; `matched` counts matching requests, `hits` injected faults."""

    kind: str
    method: str | None = None
    key: re.Pattern[str] | None = None
    times: int | None = None
    every: int | None = None
    delay: float = 0.0
    matched: int = 0
    hits: int = 0

    def fires(self, method: str, path: str) -> bool:
        """Count the request if it matches; True if this rule injects its fault into it."""
        if (self.method not in (None, method) or (self.key is not None and not self.key.search(path))
                or (self.kind in BODY_KINDS and method != "GET")):
            return False
        self.matched += 1
        if (self.times is not None and self.hits >= self.times) or (self.every and self.matched % self.every):
            return False
        self.hits += 1
        return True


class S3FaultProxy:
    """The proxy; `injected` counts faults by kind, `requests` logs (method, path?query, status or kind)."""

    def __init__(self, upstream: str, host: str = "127.0.0.1", port: int = 0):
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port or 80)
        self.host, self.port = host, port
        self.rules: list[Rule] = []
        self.injected: Counter[str] = Counter()
        self.requests: list[tuple[str, str, int | str]] = []
        self.held = 0
        self._cond = threading.Condition()
        self._releases = 0  # bumped by release()/clear(): a held request waits for it to change
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def up(self) -> None:
        """Listen (again, on the same port)."""
        if self._server is None:
            self._server = _Server(self)
            self.port = self._server.server_address[1]
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                            name=f"s3faults:{self.port}", daemon=True)
            self._thread.start()

    def down(self) -> None:
        """Stop listening and cut every open connection: new connections are refused."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.close_connections()
            self._thread.join(timeout=5)
            self._server = self._thread = None

    def __enter__(self) -> S3FaultProxy:
        self.up()
        return self

    def __exit__(self, *exc) -> None:
        self.down()
        self.clear()

    def add(self, kind: str, *, method: str | None = None, key: str | None = None, times: int | None = None,
            every: int | None = None, delay: float = 0.0) -> Rule:
        if kind not in KINDS:
            raise ValueError(f"unknown fault {kind!r}: one of {', '.join(KINDS)}")
        method = method and method.upper()
        if kind in BODY_KINDS and method not in (None, "GET"):
            raise ValueError(f"{kind!r} alters a reply's body: it applies to GET only")
        rule = Rule(kind, method, re.compile(key) if key is not None else None, times, every, delay)
        with self._cond:
            self.rules.append(rule)
        return rule

    def remove(self, rule: Rule) -> None:
        """Drop a rule; the requests it holds go on."""
        with self._cond:
            self.rules.remove(rule)
            self._cond.notify_all()

    def release(self) -> None:
        """Let every request held now go on (a "hold" rule still holds the next ones)."""
        with self._cond:
            self._releases += 1
            self._cond.notify_all()

    def clear(self) -> None:
        """Drop every rule and let held requests go on."""
        with self._cond:
            self.rules.clear()
            self._releases += 1
            self._cond.notify_all()

    def wait_for(self, condition: Callable[[], bool] | int, timeout: float = 10.0) -> None:
        """Wait until `condition()` holds, or until `condition` requests have been answered (or failed)."""
        test = condition if callable(condition) else (lambda: len(self.requests) >= condition)
        deadline = time.monotonic() + timeout
        with self._cond:
            while not test():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"s3faults: condition not met within {timeout}s; requests: {self.requests}")
                self._cond.wait(min(left, 0.05))

    def wait_held(self, n: int = 1, timeout: float = 10.0) -> None:
        self.wait_for(lambda: self.held >= n, timeout)

    def _pick(self, method: str, path: str) -> Rule | None:
        with self._cond:
            rule = next((r for r in self.rules if r.fires(method, path)), None)
            if rule is not None:
                self.injected[rule.kind] += 1
            return rule

    def _hold(self, rule: Rule) -> None:
        with self._cond:
            self.held += 1
            self._cond.notify_all()
            mark = self._releases
            self._cond.wait_for(lambda: self._releases != mark or rule not in self.rules)
            self.held -= 1
            self._cond.notify_all()

    def _log(self, method: str, path: str, outcome: int | str) -> None:
        with self._cond:
            self.requests.append((method, path, outcome))
            self._cond.notify_all()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; an `Expect: 100-continue` is answered before do_*
    timeout = 30                   # idle keep-alive connections must not pin threads forever
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        self.server.track(self.connection, False)
        super().finish()

    def log_message(self, format, *args) -> None:  # noqa: A002 (stdlib signature)
        pass

    def do_GET(self) -> None:
        proxy = self.server.proxy
        body = self._read_body()
        rule = proxy._pick(self.command, unquote(urlsplit(self.path).path))
        kind = rule.kind if rule is not None else None
        if rule is not None:
            time.sleep(rule.delay)
        if kind == "hold":
            proxy._hold(rule)
        if kind == "reset":
            self._log(kind)
            self._reset()
        elif kind in ERRORS:
            self._log(kind)
            self._error(kind)
        elif kind == "hold" and self._client_gone():
            self._log(kind)
            self.close_connection = True  # a killed command's request must not land after all
        else:
            self._forward(body, kind)

    do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

    def _log(self, outcome: int | str) -> None:
        """Log the request before the client can see its reply: once the client has it, the log has it."""
        self.server.proxy._log(self.command, self.path, outcome)

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(parts)
        length = self.headers.get("Content-Length")
        return self.rfile.read(int(length)) if length is not None else None

    def _forward(self, body: bytes | None, kind: str | None) -> None:
        for name in (*HOP_BY_HOP, "expect", "content-length"):
            del self.headers[name]
        if body is not None:
            self.headers["Content-Length"] = str(len(body))
        upstream = HTTPConnection(*self.server.proxy.upstream, timeout=60)
        try:
            upstream.request(self.command, self.path, body, self.headers)  # the client's Host is kept
            reply = upstream.getresponse()
            self._log(kind or reply.status)
            self._relay(reply, kind)
        finally:
            upstream.close()

    def _relay(self, reply: HTTPResponse, kind: str | None) -> None:
        headers = [(k, v) for k, v in reply.getheaders() if k.lower() not in HOP_BY_HOP]
        chunks: Iterator[bytes]
        if reply.length is None:  # chunked or close-delimited: buffer it, so the client gets a length
            data = reply.read()
            chunks, size = iter([data]), len(data)
            headers.append(("Content-Length", str(size)))
        else:  # (HEAD and 204 replies have length 0, keeping moto's Content-Length header)
            chunks, size = iter(lambda: reply.read(CHUNK), b""), reply.length
        self.send_response_only(reply.status, reply.reason)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        send = size // 2 if kind == "truncate" else size
        flip = size // 2 if kind == "corrupt" else -1
        sent = 0
        for chunk in chunks:
            if sent <= flip < sent + len(chunk):
                at = flip - sent
                chunk = chunk[:at] + bytes([chunk[at] ^ 0xFF]) + chunk[at + 1:]
            self.wfile.write(chunk[:send - sent])
            sent += len(chunk)
            if sent >= send:
                break
        if kind == "truncate":
            self.close_connection = True

    def _error(self, kind: str) -> None:
        code, message = ERRORS[kind]
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
                f"<RequestId>s3faults</RequestId></Error>").encode()
        self.send_response_only(int(kind))
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _reset(self) -> None:
        """Close with an RST (SO_LINGER on, timeout 0), not a FIN: the client sees ECONNRESET."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()  # it holds a reference to the socket: close() below would not close it
        self.connection.close()
        self.close_connection = True

    def _client_gone(self) -> bool:
        """Has the client hung up (killed, timed out) while its request was held?"""
        try:
            readable = select.select([self.connection], [], [], 0)[0]
            return bool(readable) and not self.connection.recv(1, socket.MSG_PEEK)
        except OSError:
            return True


class _Server(TrackingHTTPServer):
    def __init__(self, proxy: S3FaultProxy):
        self.proxy = proxy
        super().__init__((proxy.host, proxy.port), _Handler)
