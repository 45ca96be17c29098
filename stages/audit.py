"""`zoo audit [REV] [--remote] [--repair]`: every byte a release promises, checked where it is kept.

DVC addresses objects by md5 and trusts them once stored: a flipped bit in the cache or the remote
is handed out silently (`verify = true` in the committed remote config makes `dvc pull` refuse a
remote object whose md5 is wrong, but nothing rereads what is already stored). An audit reads, at
one revision and from git alone, every DVC-tracked folder of the registry (each `dvc.lock` entry:
staged models `registry/<format>/<name>` and raw downloads `registry/_raw/<name>`) and each staged
folder's manifest, then streams every object from the local cache or the remote (`--remote`:
nothing is written to the work tree or the cache) and checks it:

- the folder's `.dir` listing hashes to its own md5;
- every file's object hashes to its md5 (DVC's address);
- a staged file has the size and sha256 its manifest records, and the listing names exactly the
  manifest's files.

A problem is `missing`, `corrupted` or `unreadable` (the store failed after its own retries: not a
verdict on the bytes). `--repair` puts verified copies back: into the remote from a local cache
object whose md5 checks, into the cache from a remote object whose md5 checks (and deletes a
corrupted cache object that has no good copy, so DVC stops handing it out).
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

from stages import gitio
from stages.errors import IndexStaleError, IntegrityError, ZooError, repair_fix
from stages.files import human_size, loads_object
from stages.remote import Store

STAGED_RE = ("onnx", "tensorflow", "keras")


@dataclass(frozen=True)
class Output:
    """One DVC-tracked folder at a revision, as its `dvc.lock` entry records it."""

    path: str                 # registry/onnx/mnist, registry/_raw/mnist
    md5: str                  # its `.dir` object
    stage: str                # the lock entry's stage, e.g. stage-onnx-zoo@mnist
    dvcfile: str              # the dvc.yaml beside the lock holding it
    manifest: dict[str, Any] | None = field(default=None, compare=False, hash=False)

    @property
    def model(self) -> str:
        parts = PurePosixPath(self.path).parts
        return parts[2] if parts[1] == "_raw" else f"{parts[1]}/{parts[2]}"

    @property
    def address(self) -> str:
        return f"{self.dvcfile}:{self.stage}"


@dataclass
class Problem:
    model: str
    path: str          # the file (or folder) in work-tree terms
    status: str        # missing | corrupted | unreadable
    detail: str
    oid: str           # the DVC object (md5, `.dir` for a listing)
    stage: str = ""    # the DVC address that produces it
    repaired: bool = False


@dataclass
class Report:
    rev: str
    where: str
    outputs: int = 0
    files: int = 0
    bytes: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(p.repaired for p in self.problems)

    def as_json(self) -> dict[str, Any]:
        return {"rev": self.rev, "where": self.where, "outputs": self.outputs, "files": self.files,
                "bytes": self.bytes, "ok": self.ok, "problems": [asdict(p) for p in self.problems]}


# --- what a revision promises -----------------------------------------------------------------------------------


def _is_lock(path: str) -> bool:
    return path == "dvc.lock" or (path.startswith("registry/_pipeline/") and path.endswith("/dvc.lock"))


def _is_tracked_folder(path: str) -> bool:
    parts = PurePosixPath(path).parts
    return len(parts) == 3 and parts[0] == "registry" and (parts[1] == "_raw" or parts[1] in STAGED_RE)


def outputs(root: Path, rev: str | None) -> list[Output]:
    """Every DVC-tracked folder at `rev` (None: the work tree's lock files and manifests). A lock file
    that does not parse is one error naming it; a manifest that does not only loses its sha256 checks
    (its objects are still checked against their md5)."""
    from stages.yamlio import parse

    if rev is None:
        from stages.shards import lock_files

        blobs = {p.relative_to(root).as_posix(): p.read_bytes() for p in lock_files(root)}
        read_manifest = _manifest_from_disk(root)
    else:
        commit = gitio.rev_parse(root, rev)
        blobs = gitio.read_tree(root, commit, lambda p: _is_lock(p) or p.endswith(".manifest.json"),
                                under=("registry", "dvc.lock"))
        manifests = {p: b for p, b in blobs.items() if p.endswith(".manifest.json")}
        blobs = {p: b for p, b in blobs.items() if _is_lock(p)}

        def read_manifest(path: str) -> dict | None:
            return loads_object(manifests.get(f"{path}.manifest.json"))
    found = []
    for lock_path, data in sorted(blobs.items()):
        try:
            lock = parse(data) or {}
        except ValueError as exc:
            raise IndexStaleError(f"{lock_path}{f' at {rev}' if rev else ''}: not a DVC lock file ({exc})",
                                  fix=f"restore it (`git checkout {rev or 'HEAD'} -- {lock_path}`) or rerun "
                                      "`dvc repro` and commit") from None
        stages = lock.get("stages") if isinstance(lock, dict) else None
        dvcfile = str(PurePosixPath(lock_path).with_name("dvc.yaml"))
        for stage, entry in sorted((stages if isinstance(stages, dict) else {}).items()):
            for out in (entry.get("outs") if isinstance(entry, dict) else None) or []:
                md5 = str(out.get("md5") or "") if isinstance(out, dict) else ""
                if md5.endswith(".dir") and _is_tracked_folder(str(out.get("path", ""))):
                    manifest = None if "/_raw/" in out["path"] else read_manifest(out["path"])
                    found.append(Output(out["path"], md5, stage, dvcfile, manifest))
    return found


def _manifest_from_disk(root: Path):
    def read(path: str) -> dict | None:
        try:
            return loads_object((root / f"{path}.manifest.json").read_bytes())
        except OSError:
            return None
    return read


def default_rev(root: Path) -> str:
    """The latest `zoo-v*` release, or HEAD when there is none yet."""
    tags = gitio.release_tags(root)
    return tags[-1] if tags else "HEAD"


# --- where the bytes are kept -----------------------------------------------------------------------------------


def stores(root: Path, remote: bool, remote_name: str | None = None) -> tuple[Store, Store | None]:
    """(the store to audit, the other one for repairs): the cache and the remote, in that order or reversed."""
    from stages.remote import cache_store, check_reachable, load_config, remote_store

    config = load_config(root / ".dvc")
    cache = cache_store(config, root / ".dvc")
    if remote:
        check_reachable(config, remote_name)
        return remote_store(config, remote_name), cache
    try:
        cloud = remote_store(config, remote_name)
    except ZooError:
        cloud = None
    return cache, cloud


# --- the audit --------------------------------------------------------------------------------------------------


def _short(value: str) -> str:
    return value[:12]


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:200]


def _check_file(store: Store, out: Output, relpath: str, oid: str, expected: dict | None, seen: dict) -> Problem | None:
    path = f"{out.path}/{relpath}"
    if oid not in seen:
        try:
            seen[oid] = store.digest(oid)
        except FileNotFoundError:
            seen[oid] = None
        except Exception as exc:  # the store failed (after its own retries): no verdict on the bytes
            seen[oid] = exc
    got = seen[oid]
    problem = lambda status, detail: Problem(out.model, path, status, detail, oid, out.address)  # noqa: E731
    if got is None:
        return problem("missing", f"object {oid} is not in {store.label}")
    if isinstance(got, Exception):
        return problem("unreadable", f"object {oid} could not be read: {_one_line(got)}")
    size, md5, sha = got
    if md5 != oid:
        return problem("corrupted", f"object {oid} hashes to md5 {md5}")
    if expected is not None and (size != expected.get("size") or sha != expected.get("sha256")):
        return problem("corrupted", f"size {size}, sha256 {_short(sha)}; the manifest records size "
                                    f"{expected.get('size')}, sha256 {_short(str(expected.get('sha256')))}")
    return None


def _listing(store: Store, out: Output) -> tuple[list[dict] | None, Problem | None]:
    problem = lambda status, detail: Problem(out.model, out.path, status, detail, out.md5, out.address)  # noqa: E731
    try:
        data = store.read(out.md5)
    except FileNotFoundError:
        return None, problem("missing", f"its listing {out.md5} is not in {store.label}")
    except Exception as exc:
        return None, problem("unreadable", f"its listing {out.md5} could not be read: {_one_line(exc)}")
    if hashlib.md5(data).hexdigest() != out.md5.removesuffix(".dir"):
        return None, problem("corrupted", f"its listing {out.md5} hashes to md5 {hashlib.md5(data).hexdigest()}")
    return json.loads(data), None


def audit(root: Path, rev: str | None, *, remote: bool = False, paths: Iterable[str] | None = None,
          repair: bool = False, jobs: int = 8, progress: bool | None = None) -> Report:
    """Check every object of the tracked folders at `rev` (or only `paths`) in the cache or the remote."""
    from tqdm import tqdm

    from stages.constants import progress as progress_setting

    found = outputs(root, rev)
    if paths is not None:
        wanted = set(paths)
        found = [o for o in found if o.path in wanted]
    store, other = stores(root, remote)
    report = Report(rev=rev or "the work tree", where=store.label, outputs=len(found))
    listings: list[tuple[Output, list[dict]]] = []
    with ThreadPoolExecutor(jobs) as pool:
        for out, (entries, problem) in zip(found, pool.map(lambda o: _listing(store, o), found)):
            if problem:
                report.problems.append(problem)
                continue
            listings.append((out, entries))
            report.problems += _manifest_mismatch(out, entries)
        work = [(out, e["relpath"], e["md5"], _recorded(out, e["relpath"])) for out, entries in listings for e in entries]
        seen: dict[str, Any] = {}
        disable = progress_setting() if progress is None else not progress
        with tqdm(total=len(work), unit="file", desc="audit", disable=disable) as bar:
            def one(item):
                try:
                    return _check_file(store, *item, seen)
                finally:
                    bar.update()
            for problem in pool.map(one, work):
                if problem:
                    report.problems.append(problem)
    report.files = len(work)
    report.bytes = sum(got[0] for got in seen.values() if isinstance(got, tuple))
    if repair and other is not None:
        for problem in report.problems:
            if problem.status != "unreadable":
                problem.repaired = _repair(store, other, problem.oid)
    report.problems.sort(key=lambda p: (p.path, p.status))
    return report


def _recorded(out: Output, relpath: str) -> dict | None:
    """The manifest's {sha256, size} of one staged file, when the manifest has a usable record of it."""
    files = (out.manifest or {}).get("files")
    record = files.get(relpath) if isinstance(files, dict) else None
    return record if isinstance(record, dict) else None


def _manifest_mismatch(out: Output, entries: list[dict]) -> list[Problem]:
    if not out.manifest or not isinstance(out.manifest.get("files"), dict):
        return []
    listed, recorded = {e["relpath"] for e in entries}, set(out.manifest["files"])
    return [Problem(out.model, f"{out.path}/{rel}", "missing" if rel in recorded else "corrupted",
                    "in the manifest but not in the DVC listing" if rel in recorded
                    else "in the DVC listing but not in the manifest", out.md5, out.address)
            for rel in sorted(listed ^ recorded)]


def _repair(broken: Store, good: Store, oid: str) -> bool:
    """Copy `oid` from `good` into `broken` when `good`'s copy hashes right; a corrupted cache object
    with no good copy anywhere is deleted, so DVC stops handing it out. True when `broken` is now right."""
    try:
        md5 = good.digest(oid)[1]
    except Exception:
        md5 = None
    if md5 != oid.removesuffix(".dir"):
        if broken.local:
            Path(broken.path(oid)).unlink(missing_ok=True)
        return False
    if good.local:
        broken.odb.fs.put_file(good.path(oid), broken.path(oid))
    else:  # into the cache: verified under a temp name beside the object, then one rename
        try:
            good.fetch(oid, Path(broken.path(oid)))
        except (IntegrityError, OSError):
            return False
        os.chmod(broken.path(oid), 0o444)
    try:
        return broken.digest(oid)[1] == oid.removesuffix(".dir")
    except Exception:
        return False


def render(report: Report) -> str:
    lines = []
    if report.problems:
        width = max(len(p.path) for p in report.problems)
        for p in report.problems:
            lines.append(f"{p.status + (' (repaired)' if p.repaired else ''):<22} {p.path:<{width}}  {p.detail}")
    verdict = "every object matches" if not report.problems else (
        "every problem repaired" if report.ok else
        f"{sum(not p.repaired for p in report.problems)} problem(s)")
    lines.append(f"zoo audit: {report.rev} in {report.where}: {report.outputs} folders, {report.files} files, "
                 f"{human_size(report.bytes)} read: {verdict}")
    return "\n".join(lines) + "\n"


def first_problem(report: Report) -> IntegrityError:
    """One line for the first unrepaired problem: the model, the file, the hashes and the repair."""
    p = next(p for p in report.problems if not p.repaired)
    return IntegrityError(f"{p.path}: {p.status} in {report.where} ({p.detail})", fix=repair_fix(p.stage))

