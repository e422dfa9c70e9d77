"""Pending blobs: a small upload is answered before its bytes are synced, and the
checkout that links it makes it durable first (see `manager_plugin.store.pending`).

What must hold: a checkout links `.blob`s only, each synced before the checkout
answers; a `.pending` this process did not write is hashed before it counts, and one
whose bytes are wrong (as a power cut can leave it) is quarantined, never linked; GC
and fsck see pending blobs like any other.
"""

from __future__ import annotations

import asyncio
import os
import stat
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from helpers import ident

from manager_plugin import fsck
from manager_plugin.checkout import CheckoutBuilder
from manager_plugin.errors import MissingFiles
from manager_plugin.gc import GarbageCollector
from manager_plugin.locking import StorageLock
from manager_plugin.models import FileSpec
from manager_plugin.store import FileStore, Presence, Received
from manager_plugin.store import pending as pending_module


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FileStore]:
    store = FileStore(tmp_path)
    store.ensure_dirs()
    yield store
    store.close()


def _upload(store: FileStore, data: bytes) -> Received:
    sha, size = ident(data)
    pos = 0

    async def read(n: int) -> bytes:
        nonlocal pos
        piece = data[pos : pos + n]
        pos += len(piece)
        return piece

    return asyncio.run(store.receive(sha, size, read, can_defer=True))


def _pending(store: FileStore, data: bytes) -> Path:
    return Path(store.layout.pending_path(*ident(data)))


def _builder(store: FileStore) -> CheckoutBuilder:
    return CheckoutBuilder(store, store.storage_root / "jobs", StorageLock(store.root / ".lock"))


def _checkout(store: FileStore, datas: list[bytes]) -> str:
    """A checkout of `datas` (as f000.bin, f001.bin, ...) by a builder of its own."""
    builder = _builder(store)
    try:
        return builder.create("job", _specs(datas))
    finally:
        builder.close()


def _specs(datas: list[bytes]) -> list[FileSpec]:
    return [FileSpec(*ident(d), f"f{i:03d}.bin") for i, d in enumerate(datas)]


def _overwrite(path: Path, data: bytes) -> None:
    """What a power cut can leave: the name on disk, other bytes in it."""
    os.chmod(path, 0o644)
    path.write_bytes(data)
    os.chmod(path, 0o444)


class _Syncs:
    """Every fsync and syncfs the store makes, by inode, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fsynced: list[int] = []
        self.syncfs = 0
        real_fsync, real_syncfs = os.fsync, pending_module.system.sync_filesystem

        def fsync(fd: int) -> None:
            self.fsynced.append(os.fstat(fd).st_ino)
            real_fsync(fd)

        def syncfs(path: str) -> bool:
            self.syncfs += 1
            return real_syncfs(path)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(pending_module.system, "sync_filesystem", syncfs)


def test_a_small_upload_is_pending_until_a_checkout_makes_it_durable(store, monkeypatch):
    datas = [os.urandom(100 + i) for i in range(3)]
    syncs = _Syncs(monkeypatch)
    for data in datas:
        assert _upload(store, data) is Received.STORED
        assert _pending(store, data).exists()
        assert store.presence(*ident(data), touch=False) is Presence.PENDING
        assert store.status(*ident(data)) == "stored"
    assert syncs.fsynced == [] and syncs.syncfs == 0  # answered without a sync
    inodes = {os.stat(_pending(store, d)).st_ino for d in datas}
    used = _checkout(store, datas)
    # A few pending blobs: an fsync each (their data), then their directories'.
    assert set(syncs.fsynced[:3]) == inodes
    dirs = {os.stat(store.blob_path(*ident(d)).parent).st_ino for d in datas}
    assert set(syncs.fsynced[3:]) == dirs
    for i, data in enumerate(datas):
        assert not _pending(store, data).exists()
        blob = store.blob_path(*ident(data))
        assert blob.read_bytes() == data
        link = store.storage_root / "jobs" / used / f"f{i:03d}.bin"
        assert Path(os.path.realpath(link)) == blob.resolve()
        assert store.presence(*ident(data), touch=False) is Presence.DURABLE


def test_many_pending_blobs_are_made_durable_with_one_filesystem_sync(store, monkeypatch):
    datas = [os.urandom(64) for _ in range(pending_module.SYNCFS_MIN)]
    for data in datas:
        _upload(store, data)
    syncs = _Syncs(monkeypatch)
    _checkout(store, datas)
    assert syncs.syncfs == 2  # the data, then the renames
    assert syncs.fsynced == []
    assert all(store.blob_path(*ident(d)).exists() for d in datas)
    assert not any(_pending(store, d).exists() for d in datas)


def _wait_for_early_flush(store: FileStore) -> None:
    flushing = store._pending._flushing
    if flushing is not None:
        flushing.result(timeout=30)


def test_small_uploads_start_an_early_flush_every_flush_every_blobs(store, monkeypatch):
    monkeypatch.setattr(pending_module, "FLUSH_EVERY", 3)
    syncs = _Syncs(monkeypatch)
    for i in range(7):
        _upload(store, os.urandom(50 + i))
        _wait_for_early_flush(store)
    assert syncs.syncfs == 2  # after the 3rd and the 6th
    assert syncs.fsynced == []
    # Only a head start: the blobs are still pending, nothing is renamed or linked.
    assert len(list((store.layout.root / "stored").rglob("*.pending"))) == 7
    assert list((store.layout.root / "stored").rglob("*.blob")) == []


def test_a_failed_early_flush_changes_nothing_and_the_checkout_still_syncs(store, monkeypatch):
    monkeypatch.setattr(pending_module, "FLUSH_EVERY", 2)
    calls: list[str] = []
    real_syncfs = pending_module.system.sync_filesystem

    def syncfs(path: str) -> bool:
        calls.append(path)
        if len(calls) == 1:
            raise OSError(5, "Input/output error", path)  # the early one
        return real_syncfs(path)

    monkeypatch.setattr(pending_module.system, "sync_filesystem", syncfs)
    datas = [os.urandom(60 + i) for i in range(pending_module.SYNCFS_MIN)]
    assert _upload(store, datas[0]) is Received.STORED
    assert _upload(store, datas[1]) is Received.STORED  # starts the failing flush
    _wait_for_early_flush(store)
    for data in datas[2:]:
        assert _upload(store, data) is Received.STORED
        _wait_for_early_flush(store)
    early = len(calls)
    _checkout(store, datas)
    assert len(calls) == early + 2  # the checkout's own: the data, then the renames
    assert all(store.blob_path(*ident(d)).read_bytes() == d for d in datas)


def test_no_second_early_flush_starts_while_one_runs(store, monkeypatch):
    monkeypatch.setattr(pending_module, "FLUSH_EVERY", 1)
    release = threading.Event()
    calls: list[str] = []

    def slow_syncfs(path: str) -> bool:
        calls.append(path)
        release.wait(30)
        return True

    monkeypatch.setattr(pending_module.system, "sync_filesystem", slow_syncfs)
    for i in range(5):
        _upload(store, os.urandom(70 + i))  # uploads never wait for the flush
    release.set()
    _wait_for_early_flush(store)
    assert len(calls) == 1


def test_a_pending_blob_of_another_process_is_hashed_then_trusted(store, tmp_path):
    data = os.urandom(5000)
    _upload(store, data)
    other = FileStore(tmp_path)  # what a restarted (or second) manager sees
    try:
        assert other.presence(*ident(data), touch=False) is Presence.PENDING
        builder = _builder(other)
        try:
            builder.create("job", _specs([data]))
        finally:
            builder.close()
        assert other.blob_path(*ident(data)).read_bytes() == data
    finally:
        other.close()


@pytest.mark.parametrize(
    "damage",
    ["zeros", "other bytes", "empty"],
)
def test_a_pending_blob_left_wrong_by_a_power_cut_is_quarantined_never_linked(
    store, tmp_path, damage
):
    good, bad = os.urandom(3000), os.urandom(3000)
    _upload(store, good)
    _upload(store, bad)
    path = _pending(store, bad)
    replacement = {"zeros": bytes(3000), "other bytes": os.urandom(3000), "empty": b""}[damage]
    _overwrite(path, replacement)

    report = fsck.run_fsck(tmp_path)
    assert [p.path for p in report.problems] == [path]

    restarted = FileStore(tmp_path)
    builder = _builder(restarted)
    try:
        with pytest.raises(MissingFiles) as missing:
            builder.create("job", _specs([good, bad]))
        assert [(f.sha, f.size) for f in missing.value.files] == [ident(bad)]
        assert not (tmp_path / "jobs" / "job").exists()
        assert not path.exists()  # moved to quarantine, not deleted
        quarantined = list((tmp_path / "file-store" / "quarantine").rglob("*.pending"))
        assert [q.read_bytes() for q in quarantined] == [replacement]
        assert restarted.status(*ident(bad)) == "unknown"
        # The client sends it again; now the checkout links both, durable.
        assert _upload(restarted, bad) is Received.STORED
        used = builder.create("job", _specs([good, bad]))
    finally:
        builder.close()
        restarted.close()
    for i, data in enumerate([good, bad]):
        link = tmp_path / "jobs" / used / f"f{i:03d}.bin"
        assert os.path.realpath(link).endswith(".blob")
        assert link.read_bytes() == data


def test_gc_deletes_an_old_unlinked_pending_blob_and_spares_a_young_one(store, tmp_path):
    old, young = os.urandom(10), os.urandom(11)
    _upload(store, old)
    _upload(store, young)
    long_ago = 1_000_000_000
    os.utime(_pending(store, old), (long_ago, long_ago))
    gc = GarbageCollector(
        store, tmp_path / "jobs", StorageLock(store.root / ".lock"), max_age=timedelta(days=1)
    )
    stats = gc.sweep()
    assert stats.deleted == [str(_pending(store, old))]
    assert _pending(store, young).exists()
    assert store.presence(*ident(old), touch=False) is Presence.MISSING


def test_a_fifo_named_like_a_pending_blob_is_never_opened(store, tmp_path):
    data = os.urandom(10)
    path = _pending(store, data)
    path.parent.mkdir(parents=True)
    os.mkfifo(path)
    # A FIFO would block whoever opened it; it is not stored, and goes to quarantine.
    assert store.presence(*ident(data), touch=True) is Presence.MISSING
    assert not path.exists()
    assert _upload(store, data) is Received.STORED
    assert stat.S_ISREG(os.lstat(path).st_mode)
