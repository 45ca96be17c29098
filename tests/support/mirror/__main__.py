"""`python -m tests.support.mirror --root DIR [--host H] [--port P] [--port-file F]`: serve until signalled.

The port is written to F atomically (temp file, then rename) so a launcher polling for F never
reads a half-written number; the banner line is flushed so a parent reading stdout sees it at once.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from tests.support.mirror.server import MirrorServer


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.support.mirror", description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="fixture directory laid out as ROOT/HOST/PATH")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--port-file", help="write the bound port here once serving")
    return parser.parse_args(argv)


def _write_port(path: Path, port: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    root = Path(args.root)
    if not root.is_dir():
        print(f"mirror: --root {root} is not a directory", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server = MirrorServer(root, args.host, args.port).start()
    try:
        if args.port_file:
            _write_port(Path(args.port_file), server.port)
        print(f"mirror serving {root} at {server.url}", flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
