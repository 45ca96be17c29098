"""Every setting the registry reads from the environment, in one place.

Read at call time (not import time) so a test or a DVC stage subprocess sees the environment it
was started with. Defaults are the production values; tests and the demo override them by env.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

HF_DEFAULT_ENDPOINT = "https://huggingface.co"
SHA256_HEX_LEN = 64
COMMIT_HEX_LEN = 40


def _str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or default


def _float(name: str, default: float) -> float:
    raw = _str(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not a number; unset it or give a number") from None


def _int(name: str, default: int) -> int:
    return int(_float(name, default))


def _bool(name: str, default: bool | None) -> bool | None:
    raw = _str(name)
    if raw is None:
        return default
    return raw.lower() in {"1", "true", "yes", "on"}


def mirror() -> str | None:
    """ZOO_MIRROR: base URL that replaces every upstream `https://HOST/PATH` by `$ZOO_MIRROR/HOST/PATH`."""
    base = _str("ZOO_MIRROR")
    if base is None:
        return None
    parts = urlsplit(base)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError(f"ZOO_MIRROR={base!r} is not an http(s) base URL; set it like http://proxy:8080/zoo or unset it")
    return base.rstrip("/")


def hf_endpoint() -> str:
    """The Hugging Face endpoint: the mirror's `huggingface.co` folder when a mirror is set."""
    base = mirror()
    if base:
        return f"{base}/huggingface.co"
    return _str("HF_ENDPOINT", HF_DEFAULT_ENDPOINT).rstrip("/")


def http_timeout() -> tuple[float, float]:
    """(connect, read) timeouts in seconds for every request: ZOO_CONNECT_TIMEOUT, ZOO_READ_TIMEOUT."""
    return _float("ZOO_CONNECT_TIMEOUT", 10.0), _float("ZOO_READ_TIMEOUT", 60.0)


def http_retries() -> int:
    """ZOO_HTTP_RETRIES: attempts after the first on connection errors, 5xx and 429."""
    return _int("ZOO_HTTP_RETRIES", 4)


def retry_backoff() -> float:
    """ZOO_RETRY_BACKOFF: first backoff in seconds, doubled at each retry."""
    return _float("ZOO_RETRY_BACKOFF", 1.0)


def progress() -> bool | None:
    """ZOO_PROGRESS: 1 forces progress bars, 0 hides them; unset shows them only on a TTY."""
    forced = _bool("ZOO_PROGRESS", None)
    return None if forced is None else not forced  # tqdm's `disable`: None = auto (TTY only)


def root() -> Path:
    """ZOO_ROOT: the registry checkout (defaults to the current directory, where DVC runs stages)."""
    return Path(_str("ZOO_ROOT", ".")).resolve()


def timings_file() -> Path | None:
    """ZOO_TIMINGS: append one JSON line per command with its in-process work time (for `make bench`)."""
    raw = _str("ZOO_TIMINGS")
    return Path(raw) if raw else None
