"""`zoo repro`: restage stale cards in parallel on Dask, merged back through DVC's run-cache.

DVC runs the stages of one `dvc repro` one after another. Here the coordinator (this process):

1. asks DVC which stages are stale for the targets (`Repo.status(with_deps=True)`: DVC's rules,
   not ours) and groups them per card; a card's stages (fetch, stage, tf2onnx) stay together and run
   in order, cards are independent and run in parallel, one task per card;
2. snapshots its working tree (every file git tracks or would track, committed or not, plus
   `.dvc/config.local` without credentials) and hands it to the workers once;
3. each task unpacks the snapshot into its own folder (never this checkout: no two DVC processes
   share a lock), then runs `dvc repro` of the card's stale stages there, so DVC records each run in
   its run-cache. With `--isolation cache` (the default with `--workers`) the task's DVC uses this
   checkout's cache directory; with `--isolation remote` (the default with `--scheduler`; workers
   see nothing of this disk) it pulls the card's inputs from the DVC remote (`dvc repro --pull`) and
   pushes its run-cache entries and every object they use back to it (`dvc push --run-cache`, plus
   the objects DVC's own push leaves out: see RECORD);
4. when all tasks are done, runs `dvc repro` here (after pulling the run-cache for remote
   isolation): DVC finds every stage in the run-cache ("is cached - skipping run, checking out
   outputs") and writes dvc.lock and .gitignore lines as a serial run would. Only what succeeded is
   reproduced; a failed card is left stale, for the table and the exit code.

The engine is Dask distributed: `--workers N` starts a LocalCluster of N single-threaded worker
processes; `--scheduler tcp://HOST:PORT` uses a running cluster. A worker that dies mid-task (killed,
out of memory) has its card retried once on another worker (`allowed-failures`); a card that fails
is never retried and never stops the others unless `--fail-fast`.
"""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

from stages.errors import StagingError

# Keys of a remote's settings that are secrets: never shipped to workers (they take theirs from
# their own environment or config, as any DVC user does).
SECRET_KEYS = ("access_key_id", "secret_access_key", "session_token", "password", "credentialpath",
               "gdrive_client_secret", "account_key", "sas_token", "connection_string", "client_secret")
POLL_S = 0.2
# Rough seconds per stage of each kind, from `make bench` (an ONNX-zoo stage 0.3 s, a PyTorch one 6 to
# 7 s, a TensorFlow one 3 to 11 s): the heaviest cards are submitted first (Dask `priority`), so a
# long card does not start last and leave the other workers idle at the end.
COST = {"fetch": 0.5, "stage-onnx-zoo": 0.5, "stage-torch": 7.0, "stage-tensorflow": 8.0, "stage-tf2onnx": 8.0}


@dataclasses.dataclass
class Result:
    card: str
    stages: list[str]
    status: str              # ok, failed, worker-died, cancelled
    seconds: float = 0.0
    error: str = ""
    peak_mb: float = 0.0     # the largest resident set of the task's process tree (DVC and the stage)
    log: str = ""


# --- the coordinator -----------------------------------------------------------------------------------------------

def stale(root: Path, targets: list[str]) -> dict[str, list[str]]:
    """{card: [its stale stages' DVC addresses, in pipeline order]} and, under "", stale stages that are
    not a card's (the registry's own root stages), as DVC's status reports them."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    from stages.shards import stage_names

    try:
        with Repo(os.fspath(root)) as repo:
            status = repo.status(targets=targets or None, with_deps=True)
    except DvcException as exc:  # not a DVC repository, an unknown stage address: the user's to fix
        line = " ".join(str(exc).split())[:300]
        raise StagingError(f"{root}: DVC cannot tell what is stale: {line}",
                           fix="run zoo repro in the registry's checkout, with card names or stage addresses "
                               "that exist (`dvc stage list --all`)") from None
    order = {name: i for i, name in enumerate(["fetch", *sorted(stage_names() - {"fetch"})])}
    groups: dict[str, list[str]] = {}
    for address in status:
        stage, at, card = address.rpartition(":")[2].partition("@")
        key = card if at and stage in order else ""
        groups.setdefault(key, []).append(address)
    for key, addresses in groups.items():
        if key:
            addresses.sort(key=lambda a: (order[a.rpartition(":")[2].partition("@")[0]], a))
    return groups


def resolve_targets(root: Path, targets: list[str]) -> list[str]:
    """Model names become their stages' addresses, from registry/index.json alone (stages.shards.resolve): a
    card's own name (`resnet50`, `onnx/resnet50`) all its stages, fetch first; a target (`<name>-onnx`) that
    target's stage. Anything with a `:`, an `@` or ending in `dvc.yaml` is a DVC target and passes as it is."""
    if not targets:
        return []
    from stages.convert import CONVERTERS
    from stages.indexfile import read
    from stages.shards import FETCH, address, resolve

    index = read(root)
    out = []
    for target in targets:
        if ":" in target or target.endswith("dvc.yaml") or "@" in target:
            out.append(target)
            continue
        name, fmt, converter = resolve(index, target)
        dvcfile = index["cards"][name]["dvcfile"]
        if fmt != index["cards"][name]["format"]:
            out.append(address(dvcfile, CONVERTERS[converter].stage, name))
            continue
        out.append(address(dvcfile, FETCH, name))
        out += [address(dvcfile, CONVERTERS[conv].stage, name)
                for conv, entries in sorted(index.get("converters", {}).items()) if name in entries]
    return out


def snapshot(root: Path) -> bytes:
    """The working tree as a gzipped tar: every file git tracks or would add (`git ls-files -co
    --exclude-standard`: committed or not, untracked cards included; outputs are ignored, so DVC
    data stays out), and `.dvc/config.local` without its secrets."""
    proc = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=root, capture_output=True)
    if proc.returncode != 0:
        raise StagingError(f"{root}: not a git checkout ({proc.stderr.decode(errors='replace').strip()[:200]})",
                           fix="run zoo repro in the registry's git checkout")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for rel in sorted(set(proc.stdout.decode().split("\0")) - {""}):
            path = root / rel
            if path.is_file() and not path.is_symlink():
                tar.add(path, arcname=rel, recursive=False)
        local = root / ".dvc" / "config.local"
        if local.is_file():
            data = _without_secrets(local.read_text(encoding="utf-8")).encode()
            info = tarfile.TarInfo(".dvc/config.local")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _without_secrets(text: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True)
                   if line.split("=", 1)[0].strip().lower() not in SECRET_KEYS)


def _client(workers: int | None, scheduler: str | None, memory_limit: str | None):
    import logging

    import dask
    from distributed import Client, LocalCluster

    for name in ("distributed", "bokeh", "tornado"):  # their INFO lines are Dask's business, not the user's
        logging.getLogger(name).setLevel(logging.ERROR)

    if scheduler:
        try:
            return Client(scheduler, timeout="20s"), None
        except (OSError, TimeoutError, ValueError) as exc:  # ValueError: not an address
            raise StagingError(f"{scheduler}: no Dask scheduler reached within 20 s ({type(exc).__name__}: "
                               f"{' '.join(str(exc).split())[:120]})",
                               fix="start one (`dask scheduler`, then `dask worker <address>` on each machine) "
                                   "or check the address; `--workers N` starts a local cluster instead") from None
    # One retry of a card whose worker died (killed, out of memory), then the card fails as such.
    # worker-saturation 1.0: a worker holds only the task it runs, the rest wait at the scheduler and go,
    # heaviest first, to whichever worker frees up first (with Dask's default 1.1, a short card could
    # wait behind a long one on a busy worker while another sat idle).
    dask.config.set({"distributed.scheduler.allowed-failures": 1, "distributed.worker.daemon": False,
                     "distributed.scheduler.worker-saturation": 1.0,
                     "distributed.admin.system-monitor.gil.enabled": False})
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           memory_limit=memory_limit or "auto", dashboard_address=":0", silence_logs=40)
    return Client(cluster), cluster


def repro(root: Path, targets: list[str], *, workers: int | None = None, scheduler: str | None = None,
          isolation: str | None = None, keep_going: bool = True, memory_limit: str | None = None,
          out=sys.stdout) -> tuple[list[Result], str | None]:
    """Stage what is stale for `targets` on Dask; returns one Result per card (empty: nothing stale)
    and, when the final `dvc repro` here failed, its error (the caller reports the cards first)."""
    import dask
    from dask import delayed
    from distributed import wait  # raises the built-in TimeoutError when nothing finished in time

    isolation = isolation or ("remote" if scheduler else "cache")
    limit_bytes = _parse_size(memory_limit) if memory_limit else None  # a bad flag fails even with nothing to do
    addresses = resolve_targets(root, targets)
    groups = stale(root, addresses)
    own = groups.pop("", [])
    if not groups and not own:
        print("Data and pipelines are up to date.", file=out)
        return [], None
    run_id = uuid.uuid4().hex[:12]
    logs = root / ".dvc" / "tmp" / "zoo-repro" / run_id
    results: list[Result] = []
    if groups:
        cache_dir = _cache_dir(root) if isolation == "cache" else None
        client, cluster = _client(workers, scheduler, memory_limit)
        try:
            where = f"a local cluster of {workers} worker(s)" if cluster else f"the cluster at {scheduler}"
            link = getattr(client, "dashboard_link", None)
            print(f"zoo repro: {len(groups)} card(s) to stage on {where} ({isolation} isolation); "
                  f"Dask dashboard: {link or 'not available'}", file=out, flush=True)
            tree = _share(client, snapshot(root))
            # One graph, one task group (`zoo-card`, Dask's key_split of these keys): the scheduler sees
            # every card at once, and tasks without dependencies in a group this size wait at the
            # scheduler (worker-saturation, see _client) and leave it by priority, heaviest first.
            order = sorted(groups.items(), key=lambda kv: (-_cost(kv[1]), kv[0]))
            tasks = []
            for i, (card, stages) in enumerate(order):
                with dask.annotate(priority=len(order) - i, retries=0):  # the rank: ties broken by name
                    tasks.append(delayed(run_card, pure=False)(card, stages, tree, isolation, cache_dir, limit_bytes,
                                                               dask_key_name=f"zoo-card-{run_id}-{i}"))
            futures = dict(zip(client.compute(tasks), order))
            progress = Progress(len(futures), out, {fut.key: card for fut, (card, _) in futures.items()})
            pending = set(futures)
            while pending:
                try:
                    done, pending = wait(pending, timeout=1.0, return_when="FIRST_COMPLETED")
                except TimeoutError:
                    progress.tick(client)
                    continue
                for fut in done:
                    card, stages = futures[fut]
                    result = _outcome(fut, card, stages)
                    results.append(result)
                    progress.finished(result, client)
                if not keep_going and any(r.status != "ok" for r in results):
                    for other in pending:
                        other.cancel()
                    break
            done = {r.card for r in results}
            results += [Result(card, stages, "cancelled") for fut, (card, stages) in futures.items()
                        if card not in done]
            progress.close()
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
        _write_logs(logs, results, out)
    ok = [a for r in results if r.status == "ok" for a in r.stages]
    final, error = ok + own, None
    if final:
        if isolation == "remote" and ok:
            _pull_run_cache(root)
        error = _merge(root, final if any(r.status != "ok" for r in results) or targets else [], isolation, out)
    return sorted(results, key=lambda r: r.card), error


def _share(client, data: bytes) -> str:
    """Hand the snapshot to every worker, present and future (a worker plugin), and return its name.

    Not as a scattered future passed to the tasks: a task with a data dependency is placed on a worker
    when it is submitted, so a short card could wait behind a long one while another worker idles;
    tasks without dependencies wait at the scheduler and go to whichever worker frees up first."""
    import hashlib

    from stages.snapshot_plugin import Snapshot

    digest = hashlib.sha256(data).hexdigest()[:16]
    client.register_plugin(Snapshot(data, digest), name=f"zoo-snapshot-{digest}")
    return digest


def _load_snapshot(digest: str) -> bytes:
    from distributed import get_worker

    from stages.snapshot_plugin import path_in

    return path_in(get_worker().local_directory, digest).read_bytes()


def _cost(stages: list[str]) -> float:
    return sum(COST.get(a.rpartition(":")[2].partition("@")[0], 1.0) for a in stages)


def _outcome(fut, card: str, stages: list[str]) -> Result:
    from distributed import KilledWorker

    try:
        return fut.result()
    except KilledWorker:
        return Result(card, stages, "worker-died", error="its worker died twice (killed, or out of memory): "
                      "retried once on another worker, then given up")
    except Exception as exc:  # the task itself raised (not a failing stage: those return a Result)
        line = " ".join(str(exc).split())[:300]
        return Result(card, stages, "failed", error=f"{type(exc).__name__}: {line}")


def _cache_dir(root: Path) -> str:
    from dvc.repo import Repo

    with Repo(os.fspath(root)) as repo:
        return os.fspath(repo.cache.local_cache_dir)


def _pull_run_cache(root: Path) -> None:
    """The run-cache entries the workers pushed: DVC's own transfer from the default remote."""
    from dvc.repo import Repo

    with Repo(os.fspath(root)) as repo:
        repo.stage_cache.pull(None)


def _merge(root: Path, targets: list[str], isolation: str, out) -> str | None:
    """`dvc repro` here: every stage the workers ran is restored from the run-cache. Returns the
    error's one line when it fails (a registry's own stage of yours failing, say), else None."""
    cmd = [sys.executable, "-m", "dvc", "repro", *(["--pull"] if isolation == "remote" else []), *targets]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=_env())
    cached = proc.stdout.count("is cached - skipping run")
    reran = proc.stdout.count("Running stage")
    print(f"zoo repro: dvc repro here restored {cached} stage(s) from the run-cache"
          f"{f' and ran {reran} itself' if reran else ''}", file=out, flush=True)
    if proc.returncode != 0:
        return _one_line(proc.stdout + "\n" + proc.stderr, proc.returncode)
    return None


def _write_logs(folder: Path, results: list[Result], out) -> None:
    """The full DVC output of every failed card, one file each (the table shows one line)."""
    failed = [r for r in results if r.log and r.status != "ok"]
    if failed:
        folder.mkdir(parents=True, exist_ok=True)
        for r in failed:
            (folder / f"{r.card}.log").write_text(r.log, encoding="utf-8")
        print(f"zoo repro: the failed cards' logs are in {folder}/", file=out, flush=True)


def _parse_size(text: str) -> int:
    from dask.utils import parse_bytes

    try:
        return int(parse_bytes(text))
    except (ValueError, TypeError):
        from stages.errors import ConfigError

        raise ConfigError(f"--memory-limit {text!r}: not a size", fix="give one like 4GB, 2500MiB or 8e9") from None


def table(results: list[Result]) -> str:
    """The end-of-run table: card, stages, status, seconds, peak memory, the error's one line."""
    rows = [("card", "stages", "status", "seconds", "peak MB", "error")]
    for r in results:
        stages = ", ".join(a.rpartition(":")[2].partition("@")[0] for a in r.stages)
        rows.append((r.card, stages, r.status, f"{r.seconds:.1f}", f"{r.peak_mb:.0f}" if r.peak_mb else "",
                     r.error))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths)) + ("  " + row[5] if row[5] else "")
             for row in rows]
    return "\n".join(line.rstrip() for line in lines) + "\n"


class Progress:
    """A live bar on a terminal (done, failed, running, the slowest running card); else one line per card."""

    def __init__(self, total: int, out, names: dict):
        self.total, self.out, self.done, self.failed, self.names = total, out, 0, 0, names
        self.started = time.monotonic()
        self.seen: dict[str, float] = {}
        self.bar = None
        if hasattr(out, "isatty") and out.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="card", file=out, dynamic_ncols=True)

    def finished(self, result: Result, client) -> None:
        self.done += 1
        self.failed += result.status != "ok"
        if self.bar is None:
            note = f": {result.error}" if result.error else ""
            print(f"[{self.done}/{self.total}] {result.card} {result.status} in {result.seconds:.1f} s{note}",
                  file=self.out, flush=True)
            return
        self.bar.update(1)
        self.tick(client)

    def tick(self, client) -> None:
        """Refresh the bar's running cards (every second while waiting)."""
        if self.bar is None:
            return
        running = self._running(client)
        slowest = min(running, key=running.get, default=None)
        self.bar.set_postfix_str(f"failed {self.failed}, running {len(running)}"
                                 + (f", slowest {slowest}" if slowest else ""))

    def _running(self, client) -> dict[str, float]:
        try:
            keys = {k for ks in client.processing().values() for k in ks}
        except Exception:  # the scheduler is busy or gone: the bar is cosmetic
            return {}
        now = time.monotonic()
        cards = {self.names[k] for k in keys if k in self.names}
        self.seen = {c: self.seen.get(c, now) for c in cards}
        return self.seen

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# --- a task, on a worker -------------------------------------------------------------------------------------------

def _env() -> dict[str, str]:
    """The environment DVC and the stages run in: this interpreter's bin first (the registry's venv)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    env.setdefault("DVC_NO_ANALYTICS", "1")
    return env


def run_card(card: str, stages: list[str], tree: str, isolation: str, cache_dir: str | None,
             memory_limit: int | None) -> Result:
    """Stage one card in a folder of its own: unpack the snapshot, run DVC, clean up."""
    started = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix=f"zoo-task-{card}-", dir=_scratch()))
    result = Result(card, stages, "ok")
    try:
        ws = base / "registry"
        _unpack(_load_snapshot(tree), ws)
        if isolation == "cache":
            _set_cache_dir(ws, cache_dir)
        rc, output, peak = _watched(_command(stages, push=isolation == "remote"), ws, memory_limit)
        result.peak_mb = peak / 2**20
        result.log = output
        if rc != 0:
            result.status = "failed"
            result.error = _one_line(output, rc)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        result.seconds = time.monotonic() - started
    return result


def _scratch() -> str | None:
    """The Dask worker's own folder: a task's folder left by a killed worker goes with it (Dask purges
    the folders of dead workers); None outside a worker."""
    try:
        from distributed import get_worker

        return get_worker().local_directory
    except (ImportError, ValueError):
        return None


def _unpack(tree: bytes, ws: Path) -> None:
    ws.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(tree), mode="r:gz") as tar:
        tar.extractall(ws, filter="data")
    subprocess.run(["git", "init", "-q"], cwd=ws, check=True, capture_output=True)


def _command(stages: list[str], push: bool) -> list[str]:
    """One process per task: `dvc repro` of the card's stages (DVC's own command line, `--pull` for
    remote isolation), then RECORD; one DVC start-up instead of two."""
    return [sys.executable, "-c", RECORD, *(["--push"] if push else []), *stages]


# What a task runs in its folder, argv = [--push] <the card's stage addresses>:
# 1. `dvc repro <stages>` (with `--pull` under --push), through DVC's own command line (`dvc.cli.main`);
# 2. records the stages in DVC's run-cache, through DVC's own StageCache. DVC 3.67 keeps no run-cache
#    entry for a stage with an uncached output (`Stage.run` passes `run_cache=not no_cache_outs`), and
#    every converter stage has one: the manifest, which git holds. StageCache itself supports them (it
#    commits such outputs to the cache with the entry and restores them as plain files), so the entry
#    is saved from the lock entry the repro just wrote, exactly as DVC saves any other;
# 3. with --push (remote isolation): pushes the run-cache (what `dvc push --run-cache` does) and every
#    object its entries use (DVC 3.67's push sends the index's objects only, and an uncached output,
#    the manifest, is in none).
RECORD = """
import sys
from dvc.cli import main
from dvc.repo import Repo
push = "--push" in sys.argv
targets = [a for a in sys.argv[1:] if a != "--push"]
code = main(["repro", *(["--pull"] if push else []), *targets])
if code:
    sys.exit(code)
with Repo(".") as repo:
    for target in targets:
        for stage in repo.stage.collect(target):
            repo.stage_cache.save(stage)
    if push:
        entries = repo.stage_cache.push(None)
        for odb, objs in repo.stage_cache.get_used_objs(entries).items():
            failed = repo.cloud.push(objs).failed
            if failed:
                sys.exit(f"ERROR: {len(failed)} object(s) of the run failed to push to the DVC remote")
"""


def _set_cache_dir(ws: Path, cache_dir: str | None) -> None:
    """The task's DVC shares the coordinator's cache directory (and so its run-cache)."""
    from configobj import ConfigObj

    local = ws / ".dvc" / "config.local"
    conf = ConfigObj(os.fspath(local)) if local.exists() else ConfigObj()
    conf.filename = os.fspath(local)
    conf["cache"] = dict(conf.get("cache", {}), dir=cache_dir)
    conf.write()


def _watched(cmd: list[str], cwd: Path, memory_limit: int | None) -> tuple[int, str, int]:
    """Run cmd in its own process group; returns (exit code, output, peak resident bytes of its tree).
    Over `memory_limit` the whole tree is killed (Dask's limit watches the worker process only)."""
    import signal

    import psutil

    with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as logf:
        proc = subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=logf, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=_die_with_parent)
        peak, killed = 0, False
        try:
            top = psutil.Process(proc.pid)
            while proc.poll() is None:
                try:
                    tree = [top, *top.children(recursive=True)]
                    rss = sum(p.memory_info().rss for p in tree if p.is_running())
                except psutil.Error:
                    rss = 0
                peak = max(peak, rss)
                if memory_limit and rss > memory_limit and not killed:
                    os.killpg(proc.pid, signal.SIGKILL)
                    killed = True
                time.sleep(POLL_S)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        logf.seek(0)
        output = logf.read()
    if killed:
        output += f"\nzoo: error: killed: its processes used {peak / 2**20:.0f} MB, over --memory-limit\n"
    return proc.returncode, output, peak


def _die_with_parent() -> None:
    """Linux: DVC is killed when its worker dies (SIGKILL, out of memory), not left running alone."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _one_line(output: str, rc: int) -> str:
    """The error a person needs: the stage's own `zoo: error:` line, else DVC's ERROR line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for prefix in ("zoo: error:", "zoo: internal error:", "ERROR:"):
        found = [line for line in lines if line.startswith(prefix)]
        if found:
            return found[-1][:300]
    return (lines[-1][:300] if lines else f"exit {rc}")


def summary(results: list[Result]) -> tuple[int, int]:
    failed = sum(r.status != "ok" for r in results)
    return len(results) - failed, failed
