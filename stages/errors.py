"""One exception root for the registry, and one exit code per family of errors.

Every exception class the registry raises on purpose is defined here (tests/test_errors.py checks
it). Every error also inherits the built-in a caller would naturally catch (ValueError, OSError,
AssertionError, LookupError), carries its data (path, url, field) and ends its message with what to
do next. The CLI turns any `ZooError` into one line on stderr and its class's `exit_code`, the code
of its family (`ExitCode`); nothing else is caught.
"""

from __future__ import annotations

import enum
from pathlib import Path


class ExitCode(enum.IntEnum):
    """`zoo`'s exit codes: one per family of errors, so a script or CI job can tell them apart.

    Each `ZooError` subclass takes its family's code as its `exit_code` class attribute. The README's
    "Errors and exit codes" section lists them with what a user does for each.

    - OTHER (1): any other ZooError (the base class itself, a DVC command failing under `zoo gc`,
      downloaded files differing from a release's manifest in stages.api).
    - USAGE (2): the command line is wrong: argparse's own errors (unknown command or option,
      missing argument), an unknown model name or a path that is not a staged model
      (ModelNotFound), bad inputs given to `zoo run` (RunError).
    - CARD (3): a file in the registry written by people or the pipeline is wrong: a card
      (CardError), a setting in params.yaml or a ZOO_* variable (ConfigError), registry/index.json
      or dvc.yaml (IndexStaleError), a manifest (ManifestError).
    - FETCH (4): upstream bytes and archives: FetchError and its subclasses, UnsafeArchiveError.
    - STAGING (5): a model could not be staged (StagingError), or an installed converter differs from
      its pin (VersionMismatchError).
    - VALIDATION (6): a model's outputs differ from the reference (ParityError) or from its golden
      data (VerifyError).
    - RELEASE (7): a release or gc is refused (ReleaseRefused), or git fails on the repository or a
      revision (GitError).
    - INTEGRITY (8): bytes differ from what git records for them (IntegrityError): a staged file, a
      cache object or a remote object whose sha256, md5 or size is not the manifest's or the lock's,
      or one that is missing (`zoo verify`, `zoo audit`, `zoo pull`).
    - NO_SPACE (74): the disk filled up, or a file-size limit was reached, while writing (DiskFullError;
      EX_IOERR in sysexits.h); nothing half-written is left under a final name.
    - INTERNAL (70): not a ZooError: a bug in the registry (EX_SOFTWARE in sysexits.h); the CLI
      prints one line, and the traceback with -v.
    """

    OTHER = 1
    USAGE = 2
    CARD = 3
    FETCH = 4
    STAGING = 5
    VALIDATION = 6
    RELEASE = 7
    INTEGRITY = 8
    INTERNAL = 70
    NO_SPACE = 74


class ZooError(Exception):
    """Root of every error the registry raises on purpose."""

    exit_code = ExitCode.OTHER

    def __init__(self, message: str, *, fix: str | None = None):
        self.fix = fix
        super().__init__(f"{message}; {fix}" if fix else message)


class CardError(ZooError, ValueError):
    """A model card is malformed: names the file, the field and the fix."""

    exit_code = ExitCode.CARD

    def __init__(self, path: Path | str, field: str | None, problem: str, fix: str, *, line: int | None = None):
        self.path, self.field, self.problem, self.line = str(path), field, problem, line
        where = ": ".join(part for part in (str(path), f"line {line}" if line else "", field or "") if part)
        super().__init__(f"{where}: {problem}", fix=fix)


class IndexStaleError(ZooError):
    """registry/index.json (what dvc.yaml iterates over) does not match the cards."""

    exit_code = ExitCode.CARD


class FetchError(ZooError, OSError):
    """A download failed; carries the upstream URL and the URL actually requested."""

    exit_code = ExitCode.FETCH

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

    exit_code = ExitCode.FETCH


class StagingError(ZooError, RuntimeError):
    """A model could not be staged: it fails the checker, does not run, or its raw files are bad."""

    exit_code = ExitCode.STAGING


class ParityError(ZooError, AssertionError):
    """The staged model's outputs differ from the reference beyond tolerance.

    `failures` holds one dict per failing output (name, case, max_abs, max_rel, atol, rtol, ...),
    collected over every case before raising, so one run shows every problem.
    """

    exit_code = ExitCode.VALIDATION

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

    exit_code = ExitCode.STAGING


class VerifyError(ZooError):
    """A staged model disagrees with its golden data, or the data is missing (`zoo verify`)."""

    exit_code = ExitCode.VALIDATION


class ConfigError(ZooError, ValueError):
    """A setting is malformed: a ZOO_* environment variable or params.yaml; names it and the fix.

    Exit 3 like a bad card: a file or setting people wrote is wrong, not the network or the model.
    """

    exit_code = ExitCode.CARD


class ManifestError(ZooError, ValueError):
    """A manifest (`registry/<format>/<name>.manifest.json`) is missing, corrupt or not the registry's.

    Manifests are written by the pipeline and tracked by git, so the fix is restoring or restaging it.
    A manifest that is not there at all is a ModelNotFound: the path given is not a staged model.
    """

    exit_code = ExitCode.CARD


class ModelNotFound(ZooError, LookupError):
    """No staged model by that name or path: at a release (stages.api), on the command line (`zoo
    run`, `zoo verify`, `zoo remove`, `zoo upstream`)."""

    exit_code = ExitCode.USAGE


class RunError(ZooError):
    """`zoo run` cannot prepare or run an input."""

    exit_code = ExitCode.USAGE


class GitError(ZooError):
    """A git command failed in the registry's repository (a revision that does not exist, not a repository)."""

    exit_code = ExitCode.RELEASE


class ReleaseRefused(ZooError):
    """`zoo release` or `zoo gc` refuses: the registry is not what a consumer would get, or the
    version or confirmation is wrong; the message says what to do first."""

    exit_code = ExitCode.RELEASE


class IntegrityError(ZooError):
    """Bytes differ from what git records for them (a manifest's sha256 and size, a DVC object's md5),
    or are missing: in a staged folder, the DVC cache or the remote. Names the model and the file."""

    exit_code = ExitCode.INTEGRITY


def repair_fix(address: str | None) -> str:
    """How to mend an object that is missing or corrupted where it is kept: the one wording of it."""
    restage = f"restage it: `dvc repro -f -s {address}` then `dvc push`" if address else "restage it and `dvc push`"
    return f"repair it with `zoo audit --remote --repair` from a checkout whose cache holds a good copy, or {restage}"


class CorruptObject(IntegrityError):
    """A stored DVC object whose bytes do not hash to its md5 (DVC's address for it), read after read."""

    def __init__(self, store: str, oid: str, md5: str):
        self.store, self.oid, self.md5 = store, oid, md5
        super().__init__(f"object {oid}: corrupted in {store} (it hashes to md5 {md5})", fix=repair_fix(None))


class DiskFullError(ZooError, OSError):
    """Writing failed for lack of space (ENOSPC, EDQUOT) or past a file-size limit (EFBIG): the step
    stopped, its temp files were removed, nothing is under a final name."""

    exit_code = ExitCode.NO_SPACE


DISK_FULL_ERRNOS = (28, 27, 122)  # ENOSPC, EFBIG, EDQUOT (Linux numbering)


def disk_full_cause(exc: BaseException | None) -> OSError | None:
    """The ENOSPC/EFBIG/EDQUOT OSError behind `exc` (itself, or in its __cause__/__context__ chain)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and not isinstance(exc, ZooError) and exc.errno in DISK_FULL_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


class DuplicateKey(Exception):
    """Not an error of its own: the YAML loader's signal (stages.yamlio) that one mapping holds a key
    twice; `load_yaml` turns it into one CardError (or ConfigError) line naming both lines."""

    def __init__(self, key, first: int, second: int):
        self.key, self.first, self.second = key, first, second
        super().__init__(f"key {key!r} on lines {first} and {second}")
