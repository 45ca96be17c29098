"""The local servers' common base: a threading HTTP server that can cut its open connections.

Both the hub mirror and the S3 fault proxy must look down when stopped, even to a client holding a
keep-alive connection, and both see clients hang up on purpose (faults provoke it): that is quiet.
"""

from __future__ import annotations

import socket
import sys
import threading
from http.server import ThreadingHTTPServer


class TrackingHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer (daemon threads) that tracks its connections; handlers call `track`."""

    def server_activate(self) -> None:
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().server_activate()

    def track(self, conn: socket.socket, is_open: bool) -> None:
        with self._open_lock:
            (self._open.add if is_open else self._open.discard)(conn)

    def close_connections(self) -> None:
        with self._open_lock:
            conns, self._open = list(self._open), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)
