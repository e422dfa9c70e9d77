"""GC never deletes what it could not check: a sweep that could not see every link
deletes nothing, says why, and `shaman-manager gc` exits 1.

Each case builds real checkouts with the real checkout builder, makes one place where
links live unreadable the way the attack did (no permission, an unmounted extra
path, out of descriptors, /proc), runs the real collector or the real command with
maxAge 0 (every blob is old enough to go), and checks that every linked blob is
still there.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from helpers import put_blob, stored_files

from manager_plugin.checkout import CheckoutBuilder
from manager_plugin.gc import GarbageCollector
from manager_plugin.locking import StorageLock
from manager_plugin.models import FileSpec
from manager_plugin.store import FileStore

OLD = time.time() - 40 * 24 * 3600


def age_all(store: FileStore) -> None:
    for path in stored_files(store.root):
        os.utime(path, (OLD, OLD))


class Farm:
    """A storage with two checkouts (job-a, job-b) and one old unlinked blob."""

    def __init__(self, storage: Path) -> None:
        self.storage = storage
        self.store = FileStore(storage)
        self.store.ensure_dirs()
        self.jobs = storage / "jobs"
        self.lock = StorageLock(self.store.root / ".lock")
        self.builder = CheckoutBuilder(self.store, self.jobs, self.lock)
        self.linked: dict[str, FileSpec] = {}
        for job in ("job-a", "job-b"):
            blob = put_blob(self.store, f"the scene of {job}".encode())
            self.builder.create(f"proj/{job}", [FileSpec(blob.sha, blob.size, "scene.blend")])
            self.linked[job] = blob
        self.unlinked = put_blob(self.store, b"nobody links to me")
        age_all(self.store)

    def path(self, blob: FileSpec) -> Path:
        return self.store.blob_path(blob.sha, blob.size)

    def collector(
        self, extra: list[Path] | None = None, *, scan_in_child: bool = True
    ) -> GarbageCollector:
        return GarbageCollector(
            self.store,
            self.jobs,
            self.lock,
            max_age=timedelta(0),
            extra_checkout_paths=extra or [],
            scan_in_child=scan_in_child,
        )

    def assert_nothing_deleted(self) -> None:
        for blob in (*self.linked.values(), self.unlinked):
            assert self.path(blob).is_file(), f"{self.path(blob)} was deleted"


@pytest.fixture
def farm(tmp_path: Path) -> Farm:
    return Farm(tmp_path / "storage")


def failing_scandir(monkeypatch: pytest.MonkeyPatch, bad: Path, err: int) -> None:
    """os.scandir raising `err` for `bad` only (the unit-level stand-in for a dir the
    kernel refuses; the command-level tests below make the kernel refuse for real)."""
    real = os.scandir

    def scandir(path: str | os.PathLike[str] = ".") -> Iterator[os.DirEntry[str]]:
        if str(path) == str(bad):
            raise OSError(err, os.strerror(err), str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def run_gc(storage: Path, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "manager_plugin", "gc", "--storage", str(storage), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        **kwargs,  # type: ignore[arg-type]
    )


def assert_aborted(result: subprocess.CompletedProcess[str], names: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "gc aborted" in result.stdout and "nothing deleted" in result.stdout
    assert names in result.stdout
    assert "Traceback" not in result.stderr
    assert "sweep aborted, nothing deleted" in result.stderr  # the log line says why


# ---- the collector itself ---------------------------------------------------------


@pytest.mark.parametrize("err", [errno.EACCES, errno.EMFILE, errno.ENFILE, errno.EIO])
def test_a_job_dir_that_cannot_be_listed_aborts_the_sweep(farm, monkeypatch, caplog, err):
    bad = farm.jobs / "proj/job-b"
    failing_scandir(monkeypatch, bad, err)
    with caplog.at_level("ERROR", logger="manager_plugin.gc"):
        stats = farm.collector().sweep()
    assert stats.aborted
    assert stats.files_deleted == 0 and stats.deleted == []
    assert len(stats.walk_errors) == 1 and stats.walk_errors[0].startswith(f"{bad}: ")
    assert f"errno {err}" in stats.walk_errors[0]
    farm.assert_nothing_deleted()
    lines = [r.getMessage() for r in caplog.records if r.name == "manager_plugin.gc"]
    assert len(lines) == 1 and str(bad) in lines[0] and "nothing deleted" in lines[0]
    assert "ABORTED" in stats.summary()


def test_a_job_dir_that_vanishes_during_the_walk_is_no_reason_to_stop(farm, monkeypatch):
    """A checkout erased while the sweep walks: its dir was listed by its parent, then
    it is gone (a real ENOENT). Its blob is free now; the other checkout's is kept."""
    erased = farm.jobs / "proj/job-b"
    real = os.scandir

    def scandir(path: str | os.PathLike[str] = ".") -> Iterator[os.DirEntry[str]]:
        if str(path) == str(erased):
            shutil.rmtree(erased)
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    stats = farm.collector().sweep()
    assert not stats.aborted and not erased.exists()
    assert sorted(stats.deleted) == sorted(
        str(farm.path(b)) for b in (farm.unlinked, farm.linked["job-b"])
    )
    assert farm.path(farm.linked["job-a"]).is_file()


def test_a_jobs_dir_that_is_not_there_holds_no_links(farm):
    """Flamenco Manager removes jobs/ itself when it deletes its last job (the
    checkout's empty parent): then no checkout exists, and old blobs may go."""
    shutil.rmtree(farm.jobs)
    stats = farm.collector().sweep()
    assert not stats.aborted
    assert farm.path(farm.unlinked) in [Path(p) for p in stats.deleted]


def test_a_jobs_dir_linked_to_a_place_that_is_gone_aborts_the_sweep(farm, tmp_path):
    """jobs/ as a symlink to a share that is not mounted: its links are unknown."""
    shutil.rmtree(farm.jobs)
    farm.jobs.symlink_to(tmp_path / "unmounted-share" / "jobs")
    stats = farm.collector().sweep()
    assert stats.aborted and "No such file" in stats.walk_errors[0]
    farm.assert_nothing_deleted()


def test_a_listing_that_fails_partway_aborts_the_sweep(farm, monkeypatch):
    """/proc/1/map_files lists fine, then fails while reading: the case that gave a
    traceback with `extraCheckoutPaths: [/proc]`."""
    real = os.scandir
    bad = str(farm.jobs / "proj")

    class Failing:
        def __init__(self, it: object) -> None:
            self.it = it

        def __enter__(self) -> Failing:
            return self

        def __exit__(self, *exc: object) -> None:
            self.it.close()  # type: ignore[attr-defined]

        def __iter__(self) -> Failing:
            return self

        def __next__(self) -> os.DirEntry[str]:
            raise PermissionError(errno.EACCES, "Permission denied", bad)

    def scandir(path: str | os.PathLike[str] = ".") -> object:
        it = real(path)
        return Failing(it) if str(path) == bad else it

    monkeypatch.setattr(os, "scandir", scandir)
    stats = farm.collector().sweep()
    assert stats.aborted and stats.walk_errors[0].startswith(f"{bad}: Permission denied")
    farm.assert_nothing_deleted()


def test_a_link_that_cannot_be_read_aborts_but_a_vanished_one_does_not(farm, monkeypatch):
    link = str(farm.jobs / "proj/job-a/scene.blend")
    real = os.readlink
    failure = {"err": errno.EIO}

    def readlink(path: str, *args: object, **kwargs: object) -> str:
        if str(path) == link:
            raise OSError(failure["err"], os.strerror(failure["err"]), path)
        return real(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "readlink", readlink)
    stats = farm.collector().sweep(dry_run=True)
    assert stats.aborted and stats.walk_errors[0].startswith(f"{link}: ")
    assert stats.deleted == []

    failure["err"] = errno.ENOENT  # removed between the listing and readlink
    stats = farm.collector().sweep(dry_run=True)
    assert not stats.aborted
    assert str(farm.path(farm.unlinked)) in stats.deleted


def test_a_link_that_cannot_be_followed_aborts_but_a_dangling_one_does_not(farm, monkeypatch):
    # A link into the store through another path (a worker's mount) is followed with stat.
    alias = farm.storage.parent / "mounted-elsewhere"
    alias.symlink_to(farm.storage)
    blob = put_blob(farm.store, b"reached through the alias")
    age_all(farm.store)
    link = farm.jobs / "proj/job-c/f"
    link.parent.mkdir(parents=True)
    link.symlink_to(alias / "file-store/stored" / blob.sha[:2] / blob.sha[2:] / f"{blob.size}.blob")
    real = os.stat
    failure = {"err": errno.EACCES}

    def stat(path: object, *args: object, **kwargs: object) -> os.stat_result:
        if str(path) == str(link) and kwargs.get("follow_symlinks", True):  # type: ignore[call-overload]
            raise OSError(failure["err"], os.strerror(failure["err"]), str(link))
        return real(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", stat)
    stats = farm.collector().sweep()
    assert stats.aborted and stats.walk_errors[0].startswith(f"{link}: Permission denied")
    assert farm.store.blob_path(blob.sha, blob.size).is_file()
    farm.assert_nothing_deleted()

    failure["err"] = errno.ELOOP  # a link loop reaches no blob
    stats = farm.collector().sweep(dry_run=True)
    assert not stats.aborted


def test_an_unreadable_store_dir_only_keeps_its_own_blobs(farm, monkeypatch, caplog):
    """An error in the walk of stored/ is safe (its blobs are no candidates): the sweep
    goes on, deletes the rest, and says what it could not cover. (Scanned in this
    process, where the stand-in reaches; the command test below has the kernel refuse
    the child process that scans stored/ by default.)"""
    hidden = put_blob(farm.store, b"in a blob dir that cannot be listed")
    age_all(farm.store)
    hidden_dir = farm.path(hidden).parent
    failing_scandir(monkeypatch, hidden_dir, errno.EACCES)
    with caplog.at_level("WARNING", logger="manager_plugin.gc"):
        stats = farm.collector(scan_in_child=False).sweep()
    assert not stats.aborted
    assert stats.deleted == [str(farm.path(farm.unlinked))]
    assert farm.path(hidden).is_file()
    assert stats.store_errors == [f"{hidden_dir}: Permission denied (errno {errno.EACCES})"]
    assert "unreadable store dirs=1" in stats.summary()
    assert any(str(hidden_dir) in r.getMessage() for r in caplog.records)


def test_a_storage_lock_that_cannot_be_taken_to_delete_stops_the_sweep(farm, monkeypatch):
    """Out of descriptors just when a batch is to be deleted: the batch is not touched,
    the sweep ends early, counted and without an exception."""
    gc = farm.collector()
    real = gc.lock.exclusive
    calls = []

    def exclusive():  # the first is the start barrier, the second a batch's
        calls.append(1)
        if len(calls) > 1:
            raise OSError(errno.EMFILE, "Too many open files", str(gc.lock.path))
        return real()

    monkeypatch.setattr(gc.lock, "exclusive", exclusive)
    stats = gc.sweep()
    assert stats.aborted and stats.deleted == []
    assert "Too many open files" in stats.walk_errors[0]
    farm.assert_nothing_deleted()


def test_the_periodic_gc_of_the_server_keeps_blobs_it_could_not_check(
    manager_factory, tmp_path, caplog
):
    """The server's own sweeps with an extra checkout path that is not there (an
    unmounted share): no blob goes, sweep after sweep, and each says why."""
    share = tmp_path / "share"
    with caplog.at_level("ERROR", logger="manager_plugin.gc"):
        manager = manager_factory(gc_period=0.1, gc_max_age=0, gc_extra_checkout_paths=[share])
        store = manager.service.store
        blob = put_blob(store, b"linked from the share only")
        age_all(store)

        def aborted() -> list[str]:
            return [r.getMessage() for r in caplog.records if "sweep aborted" in r.getMessage()]

        deadline = time.monotonic() + 20
        while len(aborted()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert len(aborted()) >= 3
    assert f"{share}: No such file or directory" in aborted()[0]
    assert store.blob_path(blob.sha, blob.size).is_file()


# ---- the command, with the kernel refusing for real ----------------------------------


def test_gc_command_with_a_missing_extra_checkout_path_deletes_nothing(tmp_path):
    """An extra checkout path on a share that is unmounted for a while."""
    farm = Farm(tmp_path / "storage")
    share = tmp_path / "share"
    share_blob = put_blob(farm.store, b"only the share links to this")
    age_all(farm.store)
    (share / "render").mkdir(parents=True)
    (share / "render/f").symlink_to(farm.path(share_blob))
    config = tmp_path / "flamenco-manager.yaml"
    config.write_text(
        textwrap.dedent(f"""\
            shared_storage_path: {farm.storage}
            shaman:
              garbageCollect:
                maxAge: 0
                extraCheckoutPaths: [{share}]
            """)
    )
    unmounted = tmp_path / "share-while-unmounted"
    share.rename(unmounted)

    for args in (["--dry-run"], []):
        result = run_gc(farm.storage, "--config", str(config), *args)
        assert_aborted(result, f"cannot read: {share}: No such file or directory")
        assert "would delete" not in result.stdout.split("gc aborted")[0]
        farm.assert_nothing_deleted()
        assert farm.path(share_blob).is_file()

    unmounted.rename(share)  # mounted again: a full sweep, which keeps what the share links to
    result = run_gc(farm.storage, "--config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        f"deleted {farm.path(farm.unlinked)}",
        *result.stdout.splitlines()[1:],
    ]
    assert farm.path(share_blob).is_file()
    assert not farm.path(farm.unlinked).exists()


def test_gc_command_with_proc_as_extra_checkout_path_neither_crashes_nor_deletes(tmp_path):
    farm = Farm(tmp_path / "storage")
    config = tmp_path / "flamenco-manager.yaml"
    config.write_text(
        f"shared_storage_path: {farm.storage}\n"
        "shaman:\n  garbageCollect:\n    maxAge: 0\n    extraCheckoutPaths: [/proc]\n"
    )
    result = run_gc(farm.storage, "--config", str(config))
    assert_aborted(result, "cannot read: /proc/")
    farm.assert_nothing_deleted()


def _without_permission_override() -> None:
    """In the child, before exec: drop root's power to read what permissions deny
    (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) from the bounding set, so the command runs
    as root but meets permission bits as any other user does."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE = 1
_CAP_DAC_READ_SEARCH = 2


def test_gc_command_run_by_a_user_who_cannot_read_a_job_dir_deletes_nothing(tmp_path):
    """A job dir the manager's user cannot read (chmod 000). Root reads it anyway, so
    as root the command runs without root's permission override, and the kernel
    refuses it; then, as plain root, the same storage is swept completely and both
    checkouts' blobs are kept."""
    farm = Farm(tmp_path / "storage")
    hidden = farm.jobs / "proj/job-b"
    hidden.chmod(0o000)
    as_root = os.geteuid() == 0
    try:
        for args in (["--dry-run"], []):
            result = run_gc(
                farm.storage, *args, preexec_fn=_without_permission_override if as_root else None
            )
            assert_aborted(result, f"cannot read: {hidden}: Permission denied")
            farm.assert_nothing_deleted()
        if as_root:
            result = run_gc(farm.storage)
            assert result.returncode == 0, result.stdout + result.stderr
            assert result.stdout.startswith(f"deleted {farm.path(farm.unlinked)}\n")
            assert all(farm.path(b).is_file() for b in farm.linked.values())
    finally:
        hidden.chmod(0o755)


def test_gc_command_run_by_a_user_who_cannot_read_a_store_dir_keeps_only_its_blobs(tmp_path):
    """A blob dir of stored/ the manager's user cannot read (chmod 000), met by the child
    process that scans stored/: its blob is kept and named, the rest is swept."""
    farm = Farm(tmp_path / "storage")
    hidden = put_blob(farm.store, b"in a blob dir that cannot be listed")
    age_all(farm.store)
    hidden_dir = farm.path(hidden).parent
    hidden_dir.chmod(0o000)
    as_root = os.geteuid() == 0
    try:
        result = run_gc(farm.storage, preexec_fn=_without_permission_override if as_root else None)
    finally:
        hidden_dir.chmod(0o755)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"deleted {farm.path(farm.unlinked)}\n" in result.stdout
    assert f"{hidden_dir}: Permission denied" in result.stdout
    assert "unreadable store dirs=1" in result.stderr  # the log line
    assert "Traceback" not in result.stderr
    assert "failed" not in result.stderr  # scanned by the child, no fallback
    assert farm.path(hidden).is_file()
    assert all(farm.path(b).is_file() for b in farm.linked.values())


_OUT_OF_FDS = """
import os, resource, sys
from manager_plugin.cli import main

resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
victim = sys.argv[1]
real = os.scandir

def scandir(path="."):
    if os.fspath(path) != victim:
        return real(path)
    # Load elsewhere in the process takes every free descriptor just now.
    hogs = []
    try:
        while True:
            hogs.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
    try:
        return real(path)  # the kernel answers EMFILE
    finally:
        for fd in hogs:
            os.close(fd)

os.scandir = scandir
sys.exit(main(sys.argv[2:]))
"""


def test_gc_command_out_of_file_descriptors_mid_sweep_deletes_nothing(tmp_path):
    """The process runs out of descriptors (RLIMIT_NOFILE 64, all taken) just when the
    walk reaches one job dir: EMFILE from the kernel aborts the sweep."""
    farm = Farm(tmp_path / "storage")
    victim = str(farm.jobs / "proj/job-b")
    for args in (["--dry-run"], []):
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                _OUT_OF_FDS,
                victim,
                "gc",
                "--storage",
                str(farm.storage),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert_aborted(result, f"cannot read: {victim}: Too many open files")
        farm.assert_nothing_deleted()


def test_gc_command_with_no_descriptor_left_for_the_lock_deletes_nothing(tmp_path):
    """Every descriptor taken before the sweep starts: even the storage lock cannot be
    opened; one line says so, exit status 1, no traceback."""
    farm = Farm(tmp_path / "storage")
    script = (
        "import os, resource, sys\n"
        "from manager_plugin.cli import main\n"
        "from manager_plugin.service import ShamanService\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))\n"
        "real = ShamanService.collect_garbage\n"
        "def starved(self, dry_run=False):\n"
        "    hogs = []\n"
        "    try:\n"
        "        while True: hogs.append(os.open(os.devnull, os.O_RDONLY))\n"
        "    except OSError: pass\n"
        "    try: return real(self, dry_run)\n"
        "    finally: [os.close(fd) for fd in hogs]\n"
        "ShamanService.collect_garbage = starved\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, "gc", "--storage", str(farm.storage)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_aborted(result, f"cannot read: {farm.store.root / '.lock'}: Too many open files")
    farm.assert_nothing_deleted()
