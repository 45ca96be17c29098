"""DVC's cache and remote as content-addressed stores, opened from DVC's config alone.

No `dvc.repo.Repo` is built: its import and setup cost about a second per command, and collecting a
repository's stages grows with the zoo. The config is DVC's own (`dvc.config.Config`: .dvc/config,
config.local, the user's and the system's, plus overrides), the remote's filesystem is DVC's (the
dvc-s3 plugin for S3, `dvc.fs.get_cloud_fs`) and its objects are dvc-data's (`Remote.odb`: the
`files/md5/xx/yyyy` layout DVC 3 pushes), so credentials, endpoints and layout are DVC's.

Every object read here is hashed: `Store.fetch` writes a verified copy under a temp name and renames
it into place (a corrupted reply is retried, then named), `Store.digest` streams one for an audit.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from stages.errors import CorruptObject, FetchError, ZooError, disk_full_cause
from stages.files import hash_stream

ATTEMPTS = 3  # a reply whose bytes do not hash to their md5 is fetched again, this many times in all


class Store:
    """DVC's local cache or a remote, read as a content-addressed store (dvc-data's object DB)."""

    def __init__(self, odb, label: str):
        self.odb, self.label = odb, label

    @property
    def local(self) -> bool:
        return self.odb.fs.protocol == "local"

    def path(self, oid: str) -> str:
        return self.odb.oid_to_path(oid)

    def digest(self, oid: str) -> tuple[int, str, str]:
        """(size, md5, sha256) of the stored object, streamed; FileNotFoundError when absent."""
        with self.odb.fs.open(self.path(oid), mode="rb") as fh:
            return hash_stream(fh)

    def read(self, oid: str) -> bytes:
        with self.odb.fs.open(self.path(oid), mode="rb") as fh:
            return fh.read()

    def fetch(self, oid: str, dest: Path) -> tuple[int, str]:
        """Copy object `oid` to `dest` (a temp name beside it, renamed once its md5 checks): (size, sha256).

        FileNotFoundError when the store does not have it. A remote's reply that fails (after its
        client's own retries) or hashes wrong is read again, ATTEMPTS reads in all; then the last
        failure is raised, or CorruptObject when every read hashed wrong (the stored bytes are bad)."""
        from stages.files import temp_sibling

        want = oid.removesuffix(".dir")
        dest.parent.mkdir(parents=True, exist_ok=True)
        got, failure = "", None
        for _ in range(1 if self.local else ATTEMPTS):
            tmp = temp_sibling(dest)
            try:
                if self.local:
                    with open(self.path(oid), "rb") as src, open(tmp, "wb") as out:
                        size, got, sha = hash_stream(src, out)
                else:
                    self.odb.fs.get_file(self.path(oid), os.fspath(tmp))
                    with open(tmp, "rb") as fh:
                        size, got, sha = hash_stream(fh)
                if got == want:
                    os.replace(tmp, dest)
                    return size, sha
                failure = None
            except FileNotFoundError:
                raise
            except Exception as exc:  # the client gave up on this read: read again, then say it
                if self.local or disk_full_cause(exc):
                    raise
                failure = exc
            finally:
                tmp.unlink(missing_ok=True)
        if failure is not None:
            raise failure
        raise CorruptObject(self.label, oid, got)


def load_config(dvc_dir: Path, local_dvc_dir: Path | None = None, remote_config: dict[str, Any] | None = None):
    """DVC's merged config for the repository whose `.dvc` folder is `dvc_dir` (its config.local from
    `local_dvc_dir`, default the same folder), with `remote_config` merged into the default remote's."""
    from dvc.config import Config
    from dvc.exceptions import DvcException

    try:
        return Config(dvc_dir=os.fspath(dvc_dir), local_dvc_dir=os.fspath(local_dvc_dir or dvc_dir),
                      remote_config=remote_config)
    except DvcException as exc:
        raise ZooError(f"{dvc_dir}: DVC's config does not load: {' '.join(str(exc).split())[:300]}",
                       fix="fix it with `dvc config` / `dvc remote modify`, or restore .dvc/config from git") from None


def remote_name(config, name: str | None = None) -> str:
    name = name or config["core"].get("remote")
    if not name or name not in config["remote"]:
        raise ZooError(f"no DVC remote {name!r} in this registry's config" if name else
                       "this registry's DVC config names no default remote",
                       fix="`dvc remote list` shows them; set one with `dvc remote default <name>`")
    return name


def remote_store(config, name: str | None = None) -> Store:
    """The remote's object store, with DVC's filesystem for its URL (dvc-s3 for s3://)."""
    from dvc.data_cloud import Remote
    from dvc.exceptions import DvcException
    from dvc.fs import get_cloud_fs

    name = remote_name(config, name)
    try:
        cls, fs_config, fs_path = get_cloud_fs(config, name=name)
        remote = Remote(name, fs_path, cls(**fs_config), **fs_config)
        odb = remote.odb
    except DvcException as exc:
        raise ZooError(f"the DVC remote {name!r} cannot be opened: {' '.join(str(exc).split())[:300]}",
                       fix="check it with `dvc remote list`; set an endpoint with "
                           "`dvc remote modify --local zoo endpointurl ...`") from None
    return Store(odb, f"the remote ({odb.fs.unstrip_protocol(odb.path)})")


def cache_store(config, dvc_dir: Path) -> Store:
    """DVC's local cache (`cache.dir`, default .dvc/cache), files/md5/ as DVC 3 lays it out."""
    from dvc_data.hashfile.db import get_odb
    from dvc_objects.fs.local import LocalFileSystem

    root = config["cache"].get("dir") or os.path.join(dvc_dir, "cache")
    path = os.path.join(root, "files", "md5")
    return Store(get_odb(LocalFileSystem(), path, hash_name="md5"), f"the cache ({root})")


def check_reachable(config, name: str | None = None) -> None:
    """One TCP connection to the remote's endpoint (S3 or HTTP remotes), 5 s at most: DVC's clients retry an
    unreachable remote for about 35 s before they say so (measured, DVC 3.67.1)."""
    import socket
    from urllib.parse import urlsplit
    from urllib.request import getproxies, proxy_bypass

    name = name or config["core"].get("remote")
    conf = config["remote"].get(name or "", {})
    url = conf.get("endpointurl") or ("https://s3.amazonaws.com" if str(conf.get("url", "")).startswith("s3://")
                                      else conf.get("url", ""))
    parts = urlsplit(str(url))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    if parts.scheme in getproxies() and not proxy_bypass(parts.hostname):
        return  # through a proxy: reaching the proxy proves nothing, DVC will say what it meets
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:  # a malformed port: DVC's own error will name it
        return
    try:
        socket.create_connection((parts.hostname, port), 5).close()
    except OSError as exc:
        raise FetchError(f"the DVC remote {name!r} ({url})", f"unreachable ({exc.strerror or exc})",
                         fix="check that the remote is reachable and the credentials are set (`dvc remote list`, "
                             ".dvc/config.local or AWS_* variables), then run the command again") from None
