"""Every setting the registry reads from the environment, in one place.

Read at call time (not import time) so a test or a DVC stage subprocess sees the environment it
was started with. Defaults are the production values; tests and the demo override them by env.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from urllib.parse import urlsplit

from stages.errors import ConfigError

HF_DEFAULT_ENDPOINT = "https://huggingface.co"
SHA256_HEX_LEN = 64
COMMIT_HEX_LEN = 40
TRUE, FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or default


def _float(name: str, default: float, *, above: float | None = None, minimum: float = 0.0) -> float:
    """A finite number from the environment, at least `minimum` (or strictly above `above`).

    Checked here, where the name is known, rather than failing later as a requests ValueError or
    an OverflowError (`inf` retries) deep in a download.
    """
    raw = _str(name)
    if raw is None:
        return default
    bound = f"above {above:g}" if above is not None else f"at least {minimum:g}"
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ConfigError(f"environment variable {name}={raw!r} is not a number",
                          fix=f"unset it or give a number {bound} (default {default:g})")
    if (above is not None and value <= above) or value < minimum:
        raise ConfigError(f"environment variable {name}={raw!r} must be {bound}",
                          fix=f"unset it or give a number {bound} (default {default:g})")
    return value


def _int(name: str, default: int) -> int:
    value = _float(name, default)
    if value != int(value):
        raise ConfigError(f"environment variable {name}={_str(name)!r} is not a whole number",
                          fix=f"unset it or give a whole number, at least 0 (default {default})")
    return int(value)


def _bool(name: str, default: bool | None) -> bool | None:
    raw = _str(name)
    if raw is None:
        return default
    if raw.lower() in TRUE:
        return True
    if raw.lower() in FALSE:
        return False
    raise ConfigError(f"environment variable {name}={raw!r} is not 1 or 0", fix="unset it, or set it to 1 or 0")


def mirror() -> str | None:
    """ZOO_MIRROR: base URL that replaces every upstream `https://HOST/PATH` by `$ZOO_MIRROR/HOST/PATH`."""
    base = _str("ZOO_MIRROR")
    if base is None:
        return None
    parts = urlsplit(base)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ConfigError(f"environment variable ZOO_MIRROR={base!r} is not an http(s) base URL",
                          fix="set it like http://proxy:8080/zoo or unset it")
    return base.rstrip("/")


def hf_endpoint() -> str:
    """The Hugging Face endpoint: the mirror's `huggingface.co` folder when a mirror is set."""
    base = mirror()
    if base:
        return f"{base}/huggingface.co"
    return _str("HF_ENDPOINT", HF_DEFAULT_ENDPOINT).rstrip("/")


def http_timeout() -> tuple[float, float]:
    """(connect, read) timeouts in seconds for every request: ZOO_CONNECT_TIMEOUT, ZOO_READ_TIMEOUT."""
    return _float("ZOO_CONNECT_TIMEOUT", 10.0, above=0), _float("ZOO_READ_TIMEOUT", 60.0, above=0)


def http_retries() -> int:
    """ZOO_HTTP_RETRIES: attempts after the first on connection errors, 5xx and 429."""
    return _int("ZOO_HTTP_RETRIES", 4)


def retry_backoff() -> float:
    """ZOO_RETRY_BACKOFF: the backoff factor in seconds. Requests (urllib3's Retry) retry the first
    time at once, then wait 2x, 4x, 8x it (a Retry-After header wins); resuming a body cut short waits
    1x, 2x, 4x it."""
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
