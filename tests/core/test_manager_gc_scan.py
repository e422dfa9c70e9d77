"""The scan of stored/ in a child process (`gc_scan`), and the sweep when it fails."""

from __future__ import annotations

import errno
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from helpers import put_blob

from manager_plugin import gc as gc_module
from manager_plugin import gc_scan
from manager_plugin.gc import GarbageCollector
from manager_plugin.gc_scan import ChildScan, scan_stored
from manager_plugin.locking import StorageLock
from manager_plugin.models import FileSpec
from manager_plugin.store import FileStore
from manager_plugin.store.layout import BLOB_SUFFIXES

OLD = time.time() - 40 * 24 * 3600


def odd_store(tmp_path: Path) -> tuple[FileStore, list[FileSpec]]:
    """Blobs, plus what else stored/ can hold: an empty blob dir, an empty two-letter
    dir, a stray file, a symlinked two-letter dir, a pending blob, and names that are
    not UTF-8 or hold a newline."""
    store = FileStore(tmp_path / "storage")
    store.ensure_dirs()
    blobs = [put_blob(store, f"blob {i}".encode(), mtime=OLD) for i in range(5)]
    stored = store.stored_dir
    (stored / "ee" / ("e" * 62)).mkdir(parents=True)
    (stored / "ff").mkdir()
    (stored / blobs[0].sha[:2] / "stray.txt").write_bytes(b"not a blob dir")
    (stored / "zz").symlink_to(stored / blobs[1].sha[:2])
    pending = stored / "aa" / ("a" * 62) / "3.pending"
    pending.parent.mkdir(parents=True)
    pending.write_bytes(b"abc")
    odd = stored / "0\n" / os.fsdecode(b"\xff" * 62)
    odd.mkdir(parents=True)
    (odd / "1.blob").write_bytes(b"x")
    for path in (pending, odd / "1.blob"):
        os.utime(path, (OLD, OLD))
    return store, blobs


def test_the_child_sees_what_a_scan_in_this_process_sees(tmp_path):
    store, blobs = odd_store(tmp_path)
    stored = str(store.stored_dir)
    child = ChildScan(stored, BLOB_SUFFIXES)
    scan = child.result()
    assert scan is not None, child.failure
    assert scan == scan_stored(stored, BLOB_SUFFIXES)
    keys = {f"{b.sha[:2]}/{b.sha[2:]}/{b.size}.blob" for b in blobs}
    odd_key = "0\n/" + os.fsdecode(b"\xff" * 62) + "/1.blob"
    assert set(scan.blobs) == keys | {f"aa/{'a' * 62}/3.pending", odd_key}
    assert scan.blobs[odd_key] == os.lstat(f"{stored}/{odd_key}").st_ino
    assert sorted(scan.empty) == [f"{stored}/ee/{'e' * 62}", f"{stored}/ff"]
    assert scan.errors == []
    assert scan.dev(odd_key) == os.stat(stored).st_dev


def test_the_child_scans_a_store_whose_path_is_not_utf8(tmp_path):
    stored = tmp_path / os.fsdecode(b"st\xf6red")  # Latin-1, as an old share may name it
    blob_dir = stored / "ab" / ("c" * 62)
    blob_dir.mkdir(parents=True)
    (blob_dir / "1.blob").write_bytes(b"x")
    child = ChildScan(str(stored), BLOB_SUFFIXES)
    scan = child.result()
    assert scan is not None, child.failure
    assert list(scan.blobs) == [f"ab/{'c' * 62}/1.blob"]


def test_a_store_that_cannot_be_listed_is_reported_by_the_child(tmp_path):
    too_long = f"{tmp_path}/{'x' * 200}" * 25  # longer than any path the kernel takes
    child = ChildScan(too_long, BLOB_SUFFIXES)
    scan = child.result()
    assert scan is not None, child.failure
    assert scan.blobs == {}
    assert scan.errors == [f"{too_long}: File name too long (errno {errno.ENAMETOOLONG})"]


def collector(store: FileStore, **kwargs: object) -> GarbageCollector:
    (store.root.parent / "jobs").mkdir(exist_ok=True)
    return GarbageCollector(
        store,
        store.root.parent / "jobs",
        StorageLock(store.root / ".lock"),
        max_age=timedelta(hours=1),
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("interpreter", "failure"),
    [
        ("/nonexistent/python3", "cannot start it: "),
        ("/bin/false", "it ended with status 1: no message"),
        ("/bin/echo", "its answer is not readable: "),  # exits 0, prints its arguments
    ],
)
def test_a_child_that_gives_no_scan_leaves_the_scan_to_the_manager(
    tmp_path, monkeypatch, caplog, interpreter, failure
):
    """The sweep goes on, as completely and as safely as with the child's scan."""
    store, blobs = odd_store(tmp_path)
    job = store.root.parent / "jobs/job"
    job.mkdir(parents=True)
    (job / "kept").symlink_to(store.blob_path(blobs[0].sha, blobs[0].size))
    monkeypatch.setattr(sys, "executable", interpreter)
    with caplog.at_level("WARNING", logger="manager_plugin.gc"):
        stats = collector(store).sweep()
    assert not stats.aborted
    assert stats.files_deleted == 6  # every old unlinked blob, the odd ones too
    assert store.blob_path(blobs[0].sha, blobs[0].size).is_file()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "scanning the store in a child process failed (" + failure in warnings[0]
    assert "scanning it in the manager instead" in warnings[0]


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[ChildScan]:
    """Every ChildScan started from now on."""
    children: list[ChildScan] = []
    real_init = ChildScan.__init__

    def remember(self: ChildScan, *args: object) -> None:
        real_init(self, *args)
        children.append(self)

    monkeypatch.setattr(gc_scan.ChildScan, "__init__", remember)
    return children


def test_an_aborted_sweep_stops_the_child(tmp_path, started):
    store, _blobs = odd_store(tmp_path)
    gc = collector(store, extra_checkout_paths=[tmp_path / "unmounted-share"])
    stats = gc.sweep()
    assert stats.aborted and stats.files_deleted == 0
    assert len(started) == 1
    assert started[0]._proc is None  # waited for, its pipes closed
    assert started[0].result() is None


def test_no_interpreter_at_all_leaves_the_scan_to_the_manager(tmp_path, monkeypatch):
    store, _blobs = odd_store(tmp_path)
    monkeypatch.setattr(sys, "executable", "")
    child = ChildScan(str(store.stored_dir), BLOB_SUFFIXES)
    assert child.result() is None
    assert child.failure == "no Python interpreter to run it with"


def test_a_small_store_is_scanned_in_the_manager_from_the_second_sweep_on(
    tmp_path, monkeypatch, started
):
    """A child costs ~50 ms to start: after a sweep that saw fewer blobs than
    CHILD_SCAN_MIN_BLOBS, the next one scans stored/ itself; a bigger store, in a child."""
    store = FileStore(tmp_path / "storage")
    store.ensure_dirs()
    for i in range(3):
        put_blob(store, f"young {i}".encode())  # younger than maxAge: kept
    monkeypatch.setattr(gc_module, "CHILD_SCAN_MIN_BLOBS", 4)
    gc = collector(store)
    assert gc.sweep().blobs_checked == 3  # the first sweep knows no size yet: a child
    assert len(started) == 1
    assert gc.sweep().blobs_checked == 3  # 3 < 4: scanned here
    put_blob(store, b"young 3")
    assert gc.sweep().blobs_checked == 4  # the last one saw 3: here again
    assert len(started) == 1
    assert gc.sweep().blobs_checked == 4  # the last one saw 4: a child
    assert len(started) == 2
    assert collector(store, scan_in_child=False).sweep().blobs_checked == 4
    assert len(started) == 2
