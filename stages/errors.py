"""One exception root for the registry.

Every error also inherits the built-in a caller would naturally catch (ValueError, OSError,
AssertionError), carries its data (path, url, field) and ends its message with what to do next.
The CLI turns any `ZooError` into one line on stderr and an exit code; nothing else is caught.
"""

from __future__ import annotations

from pathlib import Path


class ZooError(Exception):
    """Root of every error the registry raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, fix: str | None = None):
        self.fix = fix
        super().__init__(f"{message}; {fix}" if fix else message)


class CardError(ZooError, ValueError):
    """A model card is malformed: names the file, the field and the fix."""

    exit_code = 2

    def __init__(self, path: Path | str, field: str | None, problem: str, fix: str):
        self.path, self.field, self.problem = str(path), field, problem
        where = f"{path}: {field}" if field else str(path)
        super().__init__(f"{where}: {problem}", fix=fix)


class IndexStaleError(ZooError):
    """registry/index.json (what dvc.yaml iterates over) does not match the cards."""

    exit_code = 2


class FetchError(ZooError, OSError):
    """A download failed; carries the upstream URL and the URL actually requested."""

    exit_code = 3

    def __init__(self, url: str, problem: str, *, fix: str | None = None, requested: str | None = None):
        self.url, self.requested = url, requested or url
        via = f" (via {self.requested})" if self.requested != url else ""
        super().__init__(f"{url}{via}: {problem}", fix=fix)


class HTTPStatusError(FetchError):
    """The server answered an error status (403, 404, 410, 5xx after retries)."""

    def __init__(self, url: str, status: int, problem: str, *, fix: str, requested: str | None = None):
        self.status = status
        super().__init__(url, problem, fix=fix, requested=requested)


class HashMismatchError(FetchError):
    """The bytes do not hash to the pinned sha256: nothing was kept."""

    def __init__(self, url: str, expected: str, actual: str, size: int, *, requested: str | None = None):
        self.expected, self.actual, self.size = expected, actual, size
        super().__init__(
            url,
            f"sha256 mismatch: pinned {expected}, got {actual} ({size} bytes)",
            fix="the upstream file changed or the pin is wrong: check the upstream and update the card's sha256",
            requested=requested,
        )


class NotAModelError(FetchError):
    """The server answered 200 with something that is not the file (LFS pointer, HTML page)."""


class TruncatedError(FetchError):
    """The body ended before Content-Length, and resuming did not complete it."""


class UnsafeArchiveError(ZooError, ValueError):
    """An archive entry would land outside its target folder (absolute path, '..', link out)."""

    exit_code = 4


class StagingError(ZooError, RuntimeError):
    """A model could not be staged: it fails the checker, does not run, or its raw files are bad."""

    exit_code = 4


class ParityError(ZooError, AssertionError):
    """The staged model's outputs differ from the reference beyond tolerance.

    `failures` holds one dict per failing output (name, case, max_abs, max_rel, atol, rtol, ...),
    collected over every case before raising, so one run shows every problem.
    """

    exit_code = 5

    def __init__(self, model: str, failures: list[dict], fix: str):
        self.failures = failures
        parts = [
            f"{f['output']}[{f['case']}]: {f['problem']}" if "problem" in f else
            f"{f['output']}[{f['case']}]: max abs {f['max_abs']:.3g} (atol {f['atol']:.3g}), "
            f"max rel {f['max_rel']:.3g} (rtol {f['rtol']:.3g}), {f['mismatched']} of {f['size']} values off"
            for f in failures
        ]
        super().__init__(f"{model}: outputs differ from the reference: " + "; ".join(parts), fix=fix)


class VersionMismatchError(ZooError):
    """An installed converter differs from its pin: staging would not be reproducible."""

    exit_code = 2


class VerifyError(ZooError):
    """A staged model disagrees with its golden data, or the data is missing (`zoo verify`)."""

    exit_code = 5


class ConfigError(ZooError, ValueError):
    """A setting is malformed: a ZOO_* environment variable or params.yaml; names it and the fix.

    Exit 2 like a bad card: the input is wrong, not the network or the model.
    """

    exit_code = 2


class ManifestError(ZooError, ValueError):
    """A manifest (`registry/<format>/<name>.manifest.json`) is missing, corrupt or not the registry's.

    Manifests are written by the pipeline and tracked by git, so the fix is restoring or restaging it.
    """

    exit_code = 2
