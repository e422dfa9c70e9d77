"""Harness for the reliability tests: real manager subprocesses, a raw-HTTP Shaman client,
generated projects, and checkers that verify the store and checkouts byte for byte.

Everything here talks to the manager the way a real client does (HTTP on 127.0.0.1) and
inspects the storage directory the way a farm worker would (through the symlinks), so the
tests prove what the outside world sees, not what the server believes about itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests
import yaml

URL_RE = re.compile(r"(http://127\.0\.0\.1:\d+/)")
# One request line in an access log: method, path and status; works for aiohttp's default
# format ("POST /path HTTP/1.1" 204) and for plain "POST /path -> 204" styles.
UPLOAD_LOG_RE = re.compile(
    r"POST /api/v3/shaman/files/([0-9a-f]{64})/(\d+)\S*(?: HTTP/1\.[01]\")?\D{0,8}?\b(\d{3})\b"
)
STARTUP_TIMEOUT = 30.0


# ---------------------------------------------------------------------------------------------
# Manager subprocess


@dataclass
class ManagerProcess:
    """One `shaman-manager serve` subprocess on a storage directory."""

    storage: Path
    port: int = 0
    gc_period: str = "0"
    gc_max_age: str = "744h"
    extra_config: dict[str, object] = field(default_factory=dict)
    preexec_fn: Callable[[], None] | None = None  # run in the child before exec (rlimits)
    proc: subprocess.Popen[str] | None = None
    url: str = ""
    lines: list[str] = field(default_factory=list)
    _readers: list[threading.Thread] = field(default_factory=list)

    @property
    def jobs(self) -> Path:
        return self.storage / "jobs"

    @property
    def store(self) -> Path:
        return self.storage / "file-store"

    def _write_config(self) -> Path:
        config: dict[str, object] = {
            "listen": f"127.0.0.1:{self.port}",
            "shared_storage_path": str(self.storage),
            "shaman": {
                "enabled": True,
                "garbageCollect": {"period": self.gc_period, "maxAge": self.gc_max_age},
            },
        }
        config.update(self.extra_config)
        # One config file per port, so two managers on one storage never share it.
        path = self.storage.parent / f"flamenco-manager-{os.getpid()}-{id(self)}.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path

    def start(self) -> ManagerProcess:
        """Start the server and wait for its URL line; keeps the port across restarts."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.storage.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        cmd = [
            sys.executable,
            "-m",
            "manager_plugin",
            "serve",
            "--config",
            str(config),
            "--storage",
            str(self.storage),
            "--listen",
            f"127.0.0.1:{self.port}",
        ]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            self.proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                errors="replace",
                env=env,
                preexec_fn=self.preexec_fn,
            )
            url_found = threading.Event()
            self._readers = [
                threading.Thread(target=self._drain, args=(s, url_found), daemon=True)
                for s in (self.proc.stdout, self.proc.stderr)
            ]
            for t in self._readers:
                t.start()
            while not url_found.is_set() and self.proc.poll() is None:
                url_found.wait(0.05)
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError("manager did not print its URL:\n" + self.log_text())
            if url_found.is_set():
                break
            # Exited before listening. Restarting on a fixed port right after kill -9 can
            # briefly find the port busy; anything else is a real failure.
            for t in self._readers:
                t.join(5)
            if self.port and time.monotonic() < deadline and "in use" in self.log_text():
                time.sleep(0.2)
                continue
            raise RuntimeError("manager exited at startup:\n" + self.log_text())
        m = URL_RE.search(self.url)
        assert m, self.url
        self.url = m.group(1)
        self.port = int(self.url.rsplit(":", 1)[1].strip("/"))
        return self

    def _drain(self, stream: object, url_found: threading.Event) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.append(line.rstrip("\n"))
            if not url_found.is_set() and URL_RE.search(line):
                self.url = line
                url_found.set()

    def log_text(self) -> str:
        return "\n".join(self.lines[-200:])

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """kill -9: no cleanup, no flush, exactly what a power cut leaves behind."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        for t in self._readers:
            t.join(5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for t in self._readers:
            t.join(5)

    def upload_statuses(self) -> list[tuple[str, int, int]]:
        """(sha, size, status) for every upload request this process logged."""
        out = []
        for line in self.lines:
            m = UPLOAD_LOG_RE.search(line)
            if m:
                out.append((m.group(1), int(m.group(2)), int(m.group(3))))
        return out


@contextlib.contextmanager
def running_manager(storage: Path, **kwargs: object) -> Iterator[ManagerProcess]:
    mgr = ManagerProcess(storage, **kwargs)  # type: ignore[arg-type]
    mgr.start()
    try:
        yield mgr
    finally:
        mgr.stop()


# ---------------------------------------------------------------------------------------------
# Generated projects


@dataclass(frozen=True)
class SourceFile:
    """A file of a generated project: where it lives on disk and its Shaman identity."""

    rel: str
    disk: Path
    sha: str
    size: int


def _sha_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def make_project(
    root: Path,
    name: str,
    rng: random.Random,
    shared: Iterable[tuple[str, bytes]] = (),
    unique_files: int = 6,
    max_size: int = 64 * 1024,
    large_files: int = 0,
    large_size: int = 1 << 20,
    alias_paths: int = 0,
) -> list[SourceFile]:
    """Write a project: the shared files (same bytes in every project) plus unique ones.

    One unique file's bytes are also stored under a second path, so a checkout must link
    two paths to one blob; `alias_paths` more paths repeat the shared files' bytes, which
    makes checkouts slow to build without adding anything to upload.
    """
    proj = root / name
    shared = list(shared)
    files: list[tuple[str, bytes]] = list(shared)
    for i in range(unique_files):
        size = rng.randint(1, max_size)
        files.append((f"unique/{name}/f{i:03d}.bin", rng.randbytes(size)))
    for i in range(large_files):
        files.append((f"large/{name}-{i}.bin", rng.randbytes(large_size + rng.randint(0, 4096))))
    if unique_files:
        files.append((f"copies/{name}/same-as-f000.bin", files[len(shared)][1]))
    for i in range(alias_paths if shared else 0):
        files.append((f"aliases/d{i % 10}/a{i:04d}.bin", shared[i % len(shared)][1]))
    out = []
    for rel, data in files:
        disk = proj / rel
        write_file(disk, data)
        out.append(SourceFile(rel, disk, hashlib.sha256(data).hexdigest(), len(data)))
    return out


def shared_files(rng: random.Random, count: int = 8, max_size: int = 64 * 1024) -> list:
    return [(f"shared/s{i:03d}.bin", rng.randbytes(rng.randint(1, max_size))) for i in range(count)]


def files_from_dir(root: Path) -> list[SourceFile]:
    out = []
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out.append(
                SourceFile(p.relative_to(root).as_posix(), p, _sha_file(p), p.stat().st_size)
            )
    return out


# ---------------------------------------------------------------------------------------------
# Raw-HTTP client


class SubmitFailed(Exception):
    """The raw client gave up; the message says at which step."""


@dataclass
class ClientStats:
    statuses: list[tuple[str, int, int]] = field(default_factory=list)  # sha, size, status
    requests: int = 0


class RawShamanClient:
    """requirements -> upload -> checkout over plain `requests`, like Flamenco's add-on.

    `on_response(kind)` is called after every HTTP answer, kind being "files" (an upload),
    "checkout/requirements" or "checkout/create"; the crash test uses it to pick the
    moment to kill the server.
    """

    def __init__(
        self,
        url: str,
        on_response: Callable[[str], None] | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/") + "/api/v3/shaman/"
        self.session = requests.Session()
        self.on_response = on_response or (lambda kind: None)
        self.timeout = timeout
        self.stats = ClientStats()

    def close(self) -> None:
        self.session.close()

    def _post(self, path: str, **kw: object) -> requests.Response:
        r = self.session.post(self.url + path, timeout=self.timeout, **kw)  # type: ignore[arg-type]
        self.stats.requests += 1
        self.on_response("files" if path.startswith("files/") else path)
        return r

    @staticmethod
    def _defs(files: Iterable[SourceFile]) -> list[dict[str, object]]:
        return [{"sha": f.sha, "size": f.size, "path": f.rel} for f in files]

    def requirements(self, files: list[SourceFile]) -> list[dict[str, object]]:
        r = self._post("checkout/requirements", json={"files": self._defs(files)})
        if r.status_code != 200:
            raise SubmitFailed(f"requirements: {r.status_code} {r.text[:200]}")
        return r.json()["files"]

    def upload(self, f: SourceFile, can_defer: bool) -> int:
        """Upload one file; returns the status. A connection closed mid-upload -> 0 (ask again)."""
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Shaman-Original-Filename": f.rel,
        }
        if can_defer:
            headers["X-Shaman-Can-Defer-Upload"] = "True"
        try:
            with f.disk.open("rb") as body:
                r = self._post(f"files/{f.sha}/{f.size}", data=body, headers=headers)
        except requests.ConnectionError:
            # The protocol allows the server to close the connection once another upload of
            # the same file finished; the next requirements round tells us what happened.
            return 0
        self.stats.statuses.append((f.sha, f.size, r.status_code))
        if r.status_code not in (204, 208, 425):
            raise SubmitFailed(f"upload {f.rel}: {r.status_code} {r.text[:200]}")
        return r.status_code

    def create_checkout(self, files: list[SourceFile], checkout_path: str) -> requests.Response:
        return self._post(
            "checkout/create",
            json={"files": self._defs(files), "checkoutPath": checkout_path},
        )

    def submit(self, files: list[SourceFile], checkout_path: str, rounds: int = 8) -> str:
        """The whole submission; returns the checkout path the server used."""
        by_key = {(f.sha, f.size): f for f in files}
        for _ in range(rounds):
            needed = self.requirements(files)
            unknown = [x for x in needed if x["status"] == "unknown"]
            uploading = [x for x in needed if x["status"] == "uploading"]
            # Unknown files first, deferring anything someone else is busy with; then the
            # ones others were uploading, without deferring (by then they are usually done).
            deferred = []
            for x in unknown:
                f = by_key[(x["sha"], x["size"])]  # type: ignore[index]
                if self.upload(f, can_defer=True) == 425:
                    deferred.append(f)
            for x in uploading:
                deferred.append(by_key[(x["sha"], x["size"])])  # type: ignore[index]
            for f in deferred:
                self.upload(f, can_defer=False)
            r = self.create_checkout(files, checkout_path)
            if r.status_code == 200:
                return r.json()["checkoutPath"]
            if r.status_code != 424:
                raise SubmitFailed(f"checkout: {r.status_code} {r.text[:200]}")
            # 424: a blob vanished between upload and checkout (GC, a closed connection);
            # negotiate again, exactly like a real client must.
        raise SubmitFailed(f"checkout {checkout_path!r} still missing files after {rounds} rounds")


# ---------------------------------------------------------------------------------------------
# Checkers


def stored_dir(store: Path) -> Path:
    return store / "stored"


def verify_store(store: Path) -> list[str]:
    """Re-hash every blob, durable (`.blob`) or not synced yet (`.pending`); every
    problem as one line (empty list = healthy store).

    A stand-in for `shaman-manager fsck` that the tests also use to cross-check it.
    """
    problems: list[str] = []
    root = stored_dir(store)
    if not root.exists():
        return problems
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            p = Path(dirpath) / name
            rel = p.relative_to(root).parts
            stem, dot, suffix = name.partition(".")
            if len(rel) != 3 or not dot or suffix not in ("blob", "pending"):
                problems.append(f"unexpected file in stored/: {p}")
                continue
            sha = rel[0] + rel[1]
            try:
                size = int(stem)
            except ValueError:
                problems.append(f"bad blob name: {p}")
                continue
            actual_size = p.stat().st_size
            if actual_size != size:
                problems.append(f"size {actual_size} != {size}: {p}")
            elif _sha_file(p) != sha:
                problems.append(f"checksum mismatch: {p}")
    return problems


def uploading_temps(store: Path) -> list[Path]:
    root = store / "uploading"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def hidden_job_entries(jobs: Path) -> list[Path]:
    """Hidden names anywhere in jobs/ (where half-built checkouts are built)."""
    if not jobs.exists():
        return []
    out = []
    for dirpath, dirs, names in os.walk(jobs):
        for n in dirs + names:
            if n.startswith("."):
                out.append(Path(dirpath) / n)
    return out


def verify_checkout(
    jobs: Path, store: Path, checkout_path: str, files: Iterable[SourceFile]
) -> list[str]:
    """Every expected path is a symlink into file-store/stored whose bytes equal the source,
    and nothing else is in the checkout."""
    problems: list[str] = []
    root = jobs / checkout_path
    stored = stored_dir(store).resolve()
    expected = {f.rel: f for f in files}
    if not root.is_dir():
        return [f"checkout missing: {root}"]
    for rel, f in expected.items():
        p = root / rel
        if not p.is_symlink():
            problems.append(f"not a symlink: {p}")
            continue
        target = p.resolve()
        if not target.is_relative_to(stored):
            problems.append(f"points outside the store: {p} -> {target}")
            continue
        if target.suffix != ".blob":
            problems.append(f"links a blob that is not durable: {p} -> {target}")
            continue
        if not target.exists():
            problems.append(f"dangling: {p} -> {os.readlink(p)}")
            continue
        if target.read_bytes() != f.disk.read_bytes():
            problems.append(f"bytes differ: {p}")
    present = {
        (Path(d) / n).relative_to(root).as_posix()
        for d, _dirs, names in os.walk(root)
        for n in names
    }
    # os.walk lists symlinks to files under names; symlinked dirs would show in _dirs.
    extra = present - set(expected)
    if extra:
        problems.append(f"unexpected entries in {root}: {sorted(extra)[:5]}")
    return problems


def dangling_links(root: Path) -> list[Path]:
    out = []
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            if p.is_symlink() and not p.exists():
                out.append(p)
    return out


def run_fsck(storage: Path) -> subprocess.CompletedProcess[str]:
    """`shaman-manager fsck` on a storage dir (check only; exit 0 = clean)."""
    return subprocess.run(
        [sys.executable, "-m", "manager_plugin", "fsck", "--storage", str(storage)],
        capture_output=True,
        text=True,
        timeout=120,
    )


# ---------------------------------------------------------------------------------------------
# Submitting while garbage collection runs


@dataclass
class FireResult:
    completed: int = 0
    gave_up: int = 0
    problems: list[str] = field(default_factory=list)
    kept: list[tuple[str, list[SourceFile]]] = field(default_factory=list)


def wide_project(root: Path, name: str, rng: random.Random, blobs: int, paths: int) -> list:
    """Many paths over few blobs: cheap to upload, slow to link, so GC sweeps overlap the
    checkout build."""
    contents = [rng.randbytes(rng.randint(1, 4096)) for _ in range(blobs)]
    files = []
    for i in range(paths):
        data = contents[i % blobs]
        rel = f"wide/d{i % 17:02d}/f{i:05d}.bin"
        disk = root / name / rel
        write_file(disk, data)
        files.append(SourceFile(rel, disk, hashlib.sha256(data).hexdigest(), len(data)))
    return files


def submit_while_collecting(
    urls: list[str],
    jobs: Path,
    store: Path,
    projects: list[list[SourceFile]],
    *,
    workers: int,
    submissions: int,
    seed: int,
    keep_every: int = 3,
) -> FireResult:
    """`workers` clients each submit `submissions` random projects, spread over `urls`.

    Each checkout the server answered 200 for is verified at once; most are then
    deleted (as a farm does with finished jobs) so their blobs become garbage again and
    the collector keeps racing the next submissions for them. The kept ones are verified
    again at the end, after many more sweeps.
    """
    result = FireResult()
    lock = threading.Lock()

    def worker(wid: int) -> None:
        rng = random.Random(seed * 1000 + wid)
        clients = [RawShamanClient(u) for u in urls]
        try:
            for k in range(submissions):
                files = rng.choice(projects)
                client = clients[(wid + k) % len(clients)]
                try:
                    used = client.submit(files, f"fire/w{wid:02d}/s{k:02d}", rounds=12)
                except SubmitFailed:
                    with lock:
                        result.gave_up += 1
                    continue
                problems = verify_checkout(jobs, store, used, files)
                with lock:
                    result.completed += 1
                    result.problems += problems
                    if k % keep_every == 0:
                        result.kept.append((used, files))
                        continue
                shutil.rmtree(jobs / used)
        finally:
            for c in clients:
                c.close()

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for used, files in result.kept:
        result.problems += verify_checkout(jobs, store, used, files)
    return result


class GcLoop:
    """Sweeps with maxAge 0 from this process, against a storage a server is using."""

    def __init__(self, storage: Path, seed: int) -> None:
        from datetime import timedelta

        from manager_plugin.gc import GarbageCollector
        from manager_plugin.locking import StorageLock
        from manager_plugin.store import FileStore

        store = FileStore(storage)
        self.collector = GarbageCollector(
            store, storage / "jobs", StorageLock(store.root / ".lock"), max_age=timedelta(0)
        )
        self.rng = random.Random(seed)
        self.sweeps = 0
        self.deleted = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                stats = self.collector.sweep()
                self.sweeps += 1
                self.deleted += stats.files_deleted
                # Pauses between sweeps, so submissions finish between them too; within a
                # sweep nothing pauses, so builds and deletions still meet.
                self._stop.wait(self.rng.uniform(0.0, 0.15))
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def __enter__(self) -> GcLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)
        if self.error is not None:
            raise self.error


# ---------------------------------------------------------------------------------------------
# Crashes


class KillSwitch:
    """Counts HTTP answers of one kind across all clients; kills the manager after the
    chosen one (plus a small delay), so the kill lands amid that kind of work."""

    def __init__(
        self, mgr: ManagerProcess, kind: str, after_answers: int, extra_delay: float
    ) -> None:
        self.mgr = mgr
        self.kind = kind
        self.after = after_answers
        self.extra_delay = extra_delay
        self.count = 0
        self.lock = threading.Lock()
        self.reached = threading.Event()
        self.done = threading.Event()
        self.killed_mid_work = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def on_response(self, kind: str) -> None:
        if kind != self.kind:
            return
        with self.lock:
            self.count += 1
            if self.count >= self.after:
                self.reached.set()

    def _run(self) -> None:
        while not self.reached.wait(0.01):
            if self.done.is_set():
                break
        self.killed_mid_work = self.reached.is_set() and not self.done.is_set()
        if self.reached.is_set():
            time.sleep(self.extra_delay)
        self.mgr.kill()

    def finish(self) -> None:
        self.done.set()
        self.thread.join(30)


def checkouts_of(jobs: Path, requested: str) -> list[Path]:
    """The requested directory and any `-xxxx` variant the server may have used instead."""
    wanted = jobs / requested
    if not wanted.parent.is_dir():
        return []
    return [
        p
        for p in wanted.parent.iterdir()
        if p.name == wanted.name or p.name.startswith(wanted.name + "-")
    ]


def problems_after_crash(
    storage: Path,
    projects: list[list[SourceFile]],
    results: dict[int, str | BaseException],
    requested: Callable[[int], str],
) -> list[str]:
    """Everything that must hold once a killed manager is back (and clients are idle):

    no corrupt or partial blob, no upload temp left, every checkout answered 200 complete,
    and any checkout whose answer was lost complete as well (it may or may not exist).
    """
    store, jobs = storage / "file-store", storage / "jobs"
    fsck = run_fsck(storage)
    problems = [] if fsck.returncode == 0 else [f"fsck: {fsck.stdout}{fsck.stderr}"]
    problems += verify_store(store)  # independent of fsck: re-hashes with its own code
    problems += [f"temp file left: {p}" for p in uploading_temps(store)]
    for i, outcome in results.items():
        if isinstance(outcome, str):
            problems += verify_checkout(jobs, store, outcome, projects[i])
            continue
        for path in checkouts_of(jobs, requested(i)):
            used = path.relative_to(jobs).as_posix()
            problems += verify_checkout(jobs, store, used, projects[i])
    return problems


def sweep_once(storage: Path) -> None:
    """One GC sweep with Flamenco's default maxAge (deletes no blob in these tests): the
    collector's cleanup of what crashed checkouts and uploads left behind."""
    from datetime import timedelta

    from manager_plugin.gc import GarbageCollector
    from manager_plugin.locking import StorageLock
    from manager_plugin.store import FileStore

    store = FileStore(storage)
    lock = StorageLock(store.root / ".lock")
    GarbageCollector(store, storage / "jobs", lock, max_age=timedelta(hours=744)).sweep()


def submit_all(
    urls: list[str],
    projects: list[list[SourceFile]],
    requested: Callable[[int], str],
    on_response: Callable[[str], None] | None = None,
) -> dict[int, str | BaseException]:
    """Submit every project at once (one thread each), spread over `urls`; the checkout
    path used or the exception per project. Exceptions are expected when a server dies."""

    def one(i: int) -> str | BaseException:
        client = RawShamanClient(urls[i % len(urls)], on_response=on_response, timeout=60)
        try:
            return client.submit(projects[i], requested(i))
        except Exception as exc:  # the server was killed: any failure is fine here
            return exc
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=max(1, len(projects))) as pool:
        return dict(enumerate(pool.map(one, range(len(projects)))))


def resubmit_interrupted(
    url: str,
    storage: Path,
    projects: list[list[SourceFile]],
    results: dict[int, str | BaseException],
    requested: Callable[[int], str],
) -> list[str]:
    """Submit again (all at once) every project whose submission the crash interrupted;
    problems if any fails or its checkout is not complete."""
    todo = [i for i, outcome in results.items() if not isinstance(outcome, str)]
    again = submit_all([url], [projects[i] for i in todo], lambda k: requested(todo[k]))
    problems = []
    for k, outcome in again.items():
        if not isinstance(outcome, str):
            problems.append(f"resubmitting {requested(todo[k])} failed: {outcome!r}")
            continue
        jobs, store = storage / "jobs", storage / "file-store"
        problems += verify_checkout(jobs, store, outcome, projects[todo[k]])
    return problems
