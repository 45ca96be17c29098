"""`zoo pull NAME... [--rev REV] [--raw] [--out DIR]`: one model out of the zoo, in time that does not grow with it.

`dvc pull registry/onnx/<name>` collects every stage of the repository before it pulls one folder
(6 s at 200 cards, measured); a stage address reads one shard but still builds DVC's whole repo
object (1 s). Here nothing scales with the zoo:

- the name is resolved from `registry/index.json` (its shard's `dvc.yaml` and the converter's stage),
  then that shard's `dvc.lock` gives the folder's `.dir` object, and the manifest its sha256s: two
  reads, from the work tree, or at `--rev` from git (one `git cat-file --batch` each);
- the objects come through DVC's own config, remote filesystem (dvc-s3) and object layout
  (stages.remote): the `.dir` listing, then each file not already in the cache, 8 at a time,
  each hashed before it is renamed into the cache (a reply that hashes wrong is read again);
- the folder is built beside its destination from the cache, every file hashed once more (while it
  is copied, or after), checked against the manifest (sha256, size, exactly its files), then
  swapped in whole.

What lands is what `dvc pull` would check out (the cache holds the objects, the folder copies of
them), so `dvc status` finds the folder as its lock records it. A folder already there is left alone when it matches; its
files are replaced only when the cache holds them (DVC's own rule), so local edits are never lost
without `--force`. A cache object that rotted is fetched again from the remote, and said.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from stages.errors import (CorruptObject, FetchError, IndexStaleError, IntegrityError, ManifestError, ModelNotFound,
                           ZooError, repair_fix)
from stages.files import loads_object

INDEX = "registry/index.json"
JOBS = 8


@dataclass(frozen=True)
class Target:
    name: str      # the card
    fmt: str       # onnx, tensorflow, keras; `_raw` for the raw upstream folder
    path: str      # registry/onnx/resnet50
    address: str   # registry/_pipeline/0003/dvc.yaml:stage-onnx-zoo@resnet50

    @property
    def raw(self) -> bool:
        return self.fmt == "_raw"

    @property
    def lock(self) -> str:
        """The lock file beside the stage's dvc.yaml."""
        return str(PurePosixPath(self.address.split(":", 1)[0]).with_name("dvc.lock"))

    @property
    def stage(self) -> str:
        return self.address.split(":", 1)[1]


@dataclass
class Located:
    """One target at one revision: its `.dir` object and (staged folders) its manifest."""

    target: Target
    md5: str
    manifest: dict[str, Any] | None
    listing: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Pulled:
    target: Target
    dest: Path
    files: int
    bytes: int
    fetched: int        # its objects read from the remote by this command (0: all were in the cache)
    unchanged: bool     # the destination already held exactly these files


class Revision:
    """The registry's files in a checkout's work tree (`commit` None) or at one commit of a git repository."""

    def __init__(self, git_dir: Path, commit: str | None, label: str, work_tree: Path | None = None):
        self.git_dir, self.commit, self.label, self.work_tree = git_dir, commit, label, work_tree

    @classmethod
    def of(cls, root: Path, rev: str | None) -> Revision:
        if rev is None:
            return cls(root, None, "the work tree", root)
        from stages import gitio
        from stages.errors import GitError

        try:
            commit = gitio.rev_parse(root, rev)
        except GitError:
            commit = ""
        if not commit:
            raise GitError(f"{rev}: no such revision in {root}",
                           fix="name a release tag (`git tag -l 'zoo-v*'`), a branch or a commit; "
                               "`git fetch --tags` gets the latest releases")
        return cls(root, commit, rev)

    def read(self, paths: list[str]) -> dict[str, bytes | None]:
        if self.commit is None:
            out: dict[str, bytes | None] = {}
            for path in paths:
                try:
                    out[path] = (self.work_tree / path).read_bytes()
                except FileNotFoundError:
                    out[path] = None
            return out
        from stages import gitio

        return gitio.read_paths(self.git_dir, self.commit, paths)


def targets(index: dict[str, Any], names: list[str], raw: bool = False) -> list[Target]:
    """Each name's folder and the stage address that outputs it (stages.shards.resolve)."""
    from stages.convert import CONVERTERS
    from stages.shards import FETCH, address, resolve

    out = []
    for spelling in names:
        name, fmt, converter = resolve(index, spelling)
        dvcfile = index["cards"][name].get("dvcfile") or "dvc.yaml"  # releases before the shards: the root's
        target = (Target(name, "_raw", f"registry/_raw/{name}", address(dvcfile, FETCH, name)) if raw else
                  Target(name, fmt, f"registry/{fmt}/{name}", address(dvcfile, CONVERTERS[converter].stage, name)))
        if target not in out:
            out.append(target)
    return out


def locate(revision: Revision, names: list[str], raw: bool = False) -> list[Located]:
    """Resolve names at a revision: its index, then the shards' lock entries and the manifests (two reads)."""
    from stages.yamlio import parse

    at = "" if revision.commit is None else f" at {revision.label}"
    blob = revision.read([INDEX])[INDEX]
    index = loads_object(blob)
    if index is None or not isinstance(index.get("cards"), dict) or not all(
            isinstance(entry, dict) for entry in index["cards"].values()):
        raise IndexStaleError(f"{INDEX}{at}: {'missing' if blob is None else 'not the index zoo index writes'}",
                              fix="run `zoo index` and commit it" if revision.commit is None else
                                  "that revision is not a registry; name a release tag (`git tag -l 'zoo-v*'`)")
    wanted = targets(index, names, raw)
    manifests = {f"{t.path}.manifest.json" for t in wanted if not t.raw}
    blobs = revision.read(sorted({t.lock for t in wanted} | manifests))
    parsed: dict[str, Any] = {}
    found = []
    for target in wanted:
        lock_path = target.lock
        if lock_path not in parsed:
            try:
                parsed[lock_path] = parse(blobs[lock_path]) if blobs[lock_path] is not None else {}
            except ValueError as exc:
                raise IndexStaleError(f"{lock_path}{at}: not a DVC lock file ({exc})",
                                      fix=f"restore it (`git checkout {revision.commit or 'HEAD'} -- {lock_path}`) "
                                          "or rerun `dvc repro` and commit") from None
        md5 = _out_md5(parsed[lock_path], target)
        if md5 is None:
            raise ModelNotFound(f"{target.path}: not staged{at} (no `dvc.lock` entry for {target.address})",
                                fix=f"stage it: `dvc repro {target.address}`, commit, `dvc push`; or pull a release "
                                    "that has it (`--rev zoo-v...`)")
        manifest = None
        if not target.raw:
            text = blobs[f"{target.path}.manifest.json"]
            manifest = loads_object(text)
            if manifest is None or not isinstance(manifest.get("files"), dict):
                raise ManifestError(f"{target.path}.manifest.json{at}: {'missing' if text is None else 'not a manifest'}",
                                    fix=f"restore it (`git checkout {revision.commit or 'HEAD'} -- "
                                        f"{target.path}.manifest.json`) or restage with `dvc repro -f -s {target.address}`")
        found.append(Located(target, md5, manifest))
    return found


def _out_md5(lock: Any, target: Target) -> str | None:
    """The `.dir` md5 that a stage's lock entry records for the target's folder (DVC 3's `hash: md5` layout)."""
    stages = lock.get("stages") if isinstance(lock, dict) else None
    entry = stages.get(target.stage) if isinstance(stages, dict) else None
    for out in (entry.get("outs") if isinstance(entry, dict) else None) or []:
        if isinstance(out, dict) and out.get("path") == target.path and str(out.get("md5", "")).endswith(".dir"):
            return str(out["md5"])
    return None


# --- getting the objects ------------------------------------------------------------------------------------------


class Objects:
    """The cache in front of the remote (opened on first need): every object hashed on its way in and out."""

    def __init__(self, config, cache, notes: Callable[[str], None]):
        self.config, self.cache, self.note = config, cache, notes
        self._remote = None
        self.fetched: set[str] = set()  # objects read from the remote by this command
        self.verified: set[str] = set()

    @property
    def remote(self):
        if self._remote is None:
            from stages.remote import check_reachable, remote_store

            check_reachable(self.config)
            self._remote = remote_store(self.config)
        return self._remote

    def into_cache(self, oid: str, path: str, address: str) -> None:
        """Make sure the cache holds a verified copy of `oid` (fetched from the remote when absent)."""
        if oid in self.verified or os.path.exists(self.cache.path(oid)):
            return
        try:
            self.remote.fetch(oid, Path(self.cache.path(oid)))
        except FileNotFoundError:
            raise IntegrityError(f"{path}: missing in {self.remote.label} (object {oid} is not there)",
                                 fix=repair_fix(address)) from None
        except CorruptObject as exc:
            raise IntegrityError(f"{path}: corrupted in {self.remote.label} (object {oid} hashes to md5 {exc.md5})",
                                 fix=repair_fix(address)) from None
        except ZooError:
            raise
        except Exception as exc:
            raise FetchError(path, f"the remote could not be read ({' '.join(f'{type(exc).__name__}: {exc}'.split())[:200]})",
                             fix="check that the remote is reachable and the credentials are set (`dvc remote list`, "
                                 ".dvc/config.local or AWS_* variables), then pull again") from None
        os.chmod(self.cache.path(oid), 0o444)
        self.fetched.add(oid)
        self.verified.add(oid)

    def copy(self, oid: str, dest: Path, path: str, address: str) -> str | None:
        """`oid` from the cache to `dest`, hashed on the way (a rotted cache object is fetched again): its
        sha256, or None for an object this command fetched and hashed already (copied as is)."""
        if oid in self.verified:
            shutil.copyfile(self.cache.path(oid), dest)
            return None
        try:
            sha = self.cache.fetch(oid, dest)[1]
        except CorruptObject as exc:
            self._fetch_again(oid, path, address, f"the cache's copy (object {oid}) was corrupted (it hashes to md5 "
                                                  f"{exc.md5})")
            shutil.copyfile(self.cache.path(oid), dest)
            return None
        self.verified.add(oid)
        return sha

    def _fetch_again(self, oid: str, path: str, address: str, why: str) -> None:
        self.note(f"zoo pull: {path}: {why}; fetching a verified copy from the remote")
        os.chmod(self.cache.path(oid), 0o644)
        os.unlink(self.cache.path(oid))
        self.verified.discard(oid)
        self.into_cache(oid, path, address)

    def listing(self, located: Located) -> list[dict[str, str]]:
        path, oid, address = located.target.path, located.md5, located.target.address
        self.into_cache(oid, path, address)
        data = Path(self.cache.path(oid)).read_bytes()
        if hashlib.md5(data).hexdigest() != oid.removesuffix(".dir"):
            self._fetch_again(oid, path, address, f"the cache's listing {oid} was corrupted")
            data = Path(self.cache.path(oid)).read_bytes()
        entries = json.loads(data)
        for entry in entries:
            rel = PurePosixPath(entry["relpath"])
            if rel.is_absolute() or ".." in rel.parts:
                raise IntegrityError(f"{path}: its DVC listing {oid} names {entry['relpath']!r}, outside the folder",
                                     fix=f"restage it: `dvc repro -f -s {address}` then `dvc push`")
        return entries


def pull(root: Path, names: list[str], *, rev: str | None = None, raw: bool = False, out: Path | None = None,
         force: bool = False, notes: Callable[[str], None] | None = None) -> list[Pulled]:
    """Each model's folder at `rev` (default: the work tree's lock files), placed where the registry keeps
    it or under `out` (`out/<format>/<name>`), every file checked: [Pulled]."""
    from stages.remote import cache_store, load_config

    root = Path(root)
    notes = notes or (lambda line: print(line, file=sys.stderr))
    located = locate(Revision.of(root, rev), names, raw)
    config = load_config(root / ".dvc")
    objects = Objects(config, cache_store(config, root / ".dvc"), notes)
    dests = [(out / PurePosixPath(item.target.path).relative_to("registry")) if out is not None else root / item.target.path
             for item in located]
    pulled = materialize(located, dests, objects, force=force)
    if rev is not None and out is None:
        _say_when_not_head(root, rev, names, raw, located, notes)
    return pulled


def _say_when_not_head(root: Path, rev: str, names: list[str], raw: bool, located: list[Located], notes) -> None:
    """A folder replaced by another revision's files differs from what the work tree's dvc.lock records: say so."""
    try:
        here = {item.target.path: item.md5 for item in locate(Revision.of(root, None), names, raw)}
    except ZooError:
        here = {}
    for item in located:
        if here.get(item.target.path) != item.md5:
            notes(f"zoo pull: {item.target.path} now holds {rev}'s files, not the ones this checkout's dvc.lock "
                  f"records (`dvc status` reports it changed); `zoo pull {item.target.name}` brings those back")


def materialize(located: list[Located], dests: list[Path], objects: Objects, *, force: bool = False) -> list[Pulled]:
    """The listings, then every object not in the cache (JOBS at a time), then each folder built and swapped in."""
    for item in located:
        item.listing = objects.listing(item)
    work = {(e["md5"], f"{item.target.path}/{e['relpath']}", item.target.address)
            for item in located for e in item.listing}
    by_oid: dict[str, tuple[str, str, str]] = {}
    for w in sorted(work):  # one fetch per object, named after its first file
        by_oid.setdefault(w[0], w)
    unique = [w for oid, w in by_oid.items() if not os.path.exists(objects.cache.path(oid))]
    if unique:
        with ThreadPoolExecutor(min(JOBS, len(unique))) as pool:
            list(pool.map(lambda w: objects.into_cache(*w), unique))
    return [_checkout(item, dest, objects, force) for item, dest in zip(located, dests)]


def _checkout(item: Located, dest: Path, objects: Objects, force: bool) -> Pulled:
    from stages.files import building_dir

    target = item.target
    wanted = {e["relpath"]: e["md5"] for e in item.listing}
    fetched = lambda: len(objects.fetched & {item.md5, *wanted.values()})  # noqa: E731
    if dest.is_dir():
        held = _holds(dest, wanted, objects, force)
        if held is not None:
            files, size = _check(dest, item, held)
            return Pulled(target, dest, files, size, fetched(), True)
    with building_dir(dest) as tmp:
        known = {}
        for rel, oid in sorted(wanted.items()):
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            if (sha := objects.copy(oid, tmp / rel, f"{target.path}/{rel}", target.address)) is not None:
                known[rel] = sha
        files, size = _check(tmp, item, known)
    return Pulled(target, dest, files, size, fetched(), False)


def _check(folder: Path, item: Located, known: dict[str, str]) -> tuple[int, int]:
    """The folder against the manifest (staged; sha256s in `known` are not read again) or the DVC listing (raw)."""
    from stages import manifest as manifests

    if item.manifest is not None:
        return manifests.check_files(folder, item.manifest, item.target.path, known)
    sizes = {p.relative_to(folder).as_posix(): p.stat().st_size for p in folder.rglob("*") if p.is_file()}
    if set(sizes) != {e["relpath"] for e in item.listing}:
        raise IntegrityError(f"{item.target.path}: its files differ from its DVC listing {item.md5}",
                             fix=f"remove it (`rm -r {item.target.path}`) and pull again")
    return len(sizes), sum(sizes.values())


def _holds(dest: Path, wanted: dict[str, str], objects: Objects, force: bool) -> dict[str, str] | None:
    """{relpath: sha256} when `dest` already holds exactly the wanted files (each read once, both hashes);
    otherwise None, once it is clear the folder may be replaced: every file it has is wanted or kept
    in the cache (DVC's rule), or `--force`."""
    from stages.files import hash_stream

    present = {p.relative_to(dest).as_posix(): p for p in dest.rglob("*") if p.is_file() or p.is_symlink()}
    hashes = {}
    for rel, path in present.items():
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as fh:
                hashes[rel] = hash_stream(fh)[1:]  # (md5, sha256)
    if set(present) == set(wanted) and all(hashes.get(rel, ("",))[0] == oid for rel, oid in wanted.items()):
        return {rel: sha for rel, (_, sha) in hashes.items()}
    if force:
        return None
    lost = sorted(rel for rel in present
                  if rel not in hashes or (hashes[rel][0] != wanted.get(rel)
                                           and not os.path.exists(objects.cache.path(hashes[rel][0]))))
    if lost:
        shown = ", ".join(lost[:3]) + (f" and {len(lost) - 3} more" if len(lost) > 3 else "")
        raise ZooError(f"{_shown(dest)}: holds files that are neither what the pull brings nor in the DVC cache ({shown}); "
                       "replacing the folder would lose them",
                       fix="move them elsewhere, or pass --force to replace the folder")
    return None


def _shown(path: Path) -> str:
    here = Path.cwd()
    return os.path.relpath(path, here) if path.is_relative_to(here) else str(path)
