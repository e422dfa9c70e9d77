"""The file store on the core: statuses, streaming receive, verification, cleanup."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from helpers import ident

import manager_plugin.store.pending as pending_module
from manager_plugin.config import Config
from manager_plugin.errors import (
    ChecksumMismatch,
    MustDefer,
    SizeMismatch,
    StorageFull,
)
from manager_plugin.service import ShamanService
from manager_plugin.store import FileStore, Received
from manager_plugin.store.receive import SMALL_BODY
from manager_plugin.tuning import Tuning


def reader(data: bytes, chunk: int = 65536) -> Callable[[int], Awaitable[bytes]]:
    pos = 0

    async def read(n: int) -> bytes:
        nonlocal pos
        piece = data[pos : pos + min(n, chunk)]
        pos += len(piece)
        return piece

    return read


@pytest.fixture
def store(tmp_path: Path, tuning: Tuning) -> FileStore:
    store = FileStore(tmp_path, tuning=tuning)
    store.ensure_dirs()
    return store


def leftovers(store: FileStore) -> list[Path]:
    return [p for p in store.uploading_dir.rglob("*") if p.is_file()]


def test_received_file_becomes_a_read_only_blob_at_flamencos_path(store, tmp_path):
    data = os.urandom(5 * 1024 * 1024 + 3)
    sha, size = ident(data)
    asyncio.run(store.receive(sha, size, reader(data)))
    blob = tmp_path / "file-store/stored" / sha[:2] / sha[2:] / f"{size}.blob"
    assert blob.read_bytes() == data
    assert blob.stat().st_mode & 0o777 == 0o444
    assert leftovers(store) == []
    assert (store.blobs_written, store.bytes_written) == (1, size)


def test_status_moves_from_unknown_to_stored(store):
    data = b"hello"
    sha, size = ident(data)
    assert store.touch_status(sha, size) == "unknown"
    asyncio.run(store.receive(sha, size, reader(data)))
    assert store.touch_status(sha, size) == "stored"
    assert store.status(sha, size) == "stored"


def test_same_sha_with_other_size_is_a_different_file(store):
    data = b"hello"
    sha, size = ident(data)
    asyncio.run(store.receive(sha, size, reader(data)))
    assert store.touch_status(sha, size + 1) == "unknown"


def test_temp_file_locked_by_another_process_means_uploading(store):
    sha, size = ident(b"elsewhere")
    temp = store.uploading_dir / sha[:2] / sha[2:] / f"{size}-otherproc.tmp"
    temp.parent.mkdir(parents=True)
    temp.write_bytes(b"else")
    with open(temp, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # its upload is alive
        assert store.touch_status(sha, size) == "uploading"
        assert store.touch_status(sha, size + 1) == "unknown"
    # Nobody holds it (its manager crashed): not an upload in progress, however young.
    assert store.touch_status(sha, size) == "unknown"
    assert store.status(sha, size) == "unknown"


def test_can_defer_upload_is_told_to_defer_when_another_process_uploads(store):
    sha, size = ident(b"elsewhere")
    temp = store.uploading_dir / sha[:2] / sha[2:] / f"{size}-otherproc.tmp"
    temp.parent.mkdir(parents=True)
    temp.write_bytes(b"else")
    with open(temp, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(MustDefer):
            asyncio.run(store.receive(sha, size, reader(b"elsewhere"), can_defer=True))


def test_stored_file_upload_is_already_stored_and_counted_once(store):
    data = b"twice"
    sha, size = ident(data)
    assert asyncio.run(store.receive(sha, size, reader(data))) is Received.STORED
    assert asyncio.run(store.receive(sha, size, reader(data))) is Received.ALREADY_STORED
    assert store.blobs_written == 1


@pytest.mark.parametrize(
    ("body", "declared", "error"),
    [
        (b"short", 6, SizeMismatch),
        (b"too long", 3, SizeMismatch),
        (b"right size", None, ChecksumMismatch),
    ],
)
def test_mismatches_store_nothing_and_leave_no_temp(store, body, declared, error):
    sha = "0" * 64 if declared is None else ident(body)[0]
    size = len(body) if declared is None else declared
    with pytest.raises(error):
        asyncio.run(store.receive(sha, size, reader(body)))
    assert list(store.stored_dir.rglob("*.blob")) == []
    assert leftovers(store) == []
    assert store.blobs_written == 0


def test_disk_full_is_storage_full_and_leaves_nothing(store, monkeypatch):
    data = os.urandom(100000)
    sha, size = ident(data)

    def full(fd: int, buf: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(StorageFull):
        asyncio.run(store.receive(sha, size, reader(data)))
    assert leftovers(store) == []
    assert list(store.stored_dir.rglob("*.blob")) == []


def test_failing_client_stream_leaves_no_temp(store):
    data = os.urandom(300000)
    sha, size = ident(data)
    calls = 0

    async def broken(n: int) -> bytes:
        nonlocal calls
        calls += 1
        if calls > 2:
            raise ConnectionResetError("client went away")
        return data[:1000]

    with pytest.raises(ConnectionResetError):
        asyncio.run(store.receive(sha, size, broken))
    assert leftovers(store) == []


def test_startup_removes_unlocked_temps_and_keeps_locked_ones(tmp_path):
    service = ShamanService(Config(storage_path=tmp_path))
    directory = service.store.uploading_dir / "ab" / ("c" * 62)
    directory.mkdir(parents=True)
    dead, live = directory / "3-dead.tmp", directory / "3-live.tmp"
    dead.write_bytes(b"abc")
    live.write_bytes(b"abc")
    with open(live, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        service.prepare_storage()
    assert not dead.exists()
    assert live.exists()
    assert (tmp_path / "jobs").is_dir()


def test_statuses_of_many_files_match_single_status(store):
    stored = b"stored one"
    asyncio.run(store.receive(*ident(stored), reader(stored)))
    sha, size = ident(b"elsewhere")
    temp = store.uploading_dir / sha[:2] / sha[2:] / f"{size}-otherproc.tmp"
    temp.parent.mkdir(parents=True)
    temp.write_bytes(b"else")
    keys = [ident(stored), (sha, size), (sha, size + 1), ident(b"never seen")]
    with open(temp, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert store.touch_statuses(keys) == ["stored", "uploading", "unknown", "unknown"]
        assert store.touch_statuses(keys) == [store.touch_status(*key) for key in keys]
    assert store.touch_statuses(keys) == ["stored", "unknown", "unknown", "unknown"]


# ---- small files committed whole (batch uploads) ------------------------------------


def _records(count: int) -> list[tuple[str, int, bytes]]:
    datas = [f"record {i}\n".encode() * (i + 1) for i in range(count)]
    return [(*ident(d), d) for d in datas]


def test_commit_records_uses_anonymous_temps_and_leaves_no_trace(tmp_path, monkeypatch):
    store = FileStore(tmp_path)
    store.ensure_dirs()
    assert store.anonymous_temps  # Linux with /proc: no named temp, no per-sha temp dir

    def named_temp(*args: object) -> None:
        raise AssertionError("a named temp was made for a small file")

    monkeypatch.setattr(pending_module, "open_named_temp", named_temp)
    made_dirs: list[str] = []
    real_mkdir = os.mkdir
    monkeypatch.setattr(
        os, "mkdir", lambda p, *a, **k: (made_dirs.append(str(p)), real_mkdir(p, *a, **k))[1]
    )
    records = _records(20)
    assert store.commit_records(records) == [("stored", "")] * 20
    for sha, size, data in records:
        blob = Path(store.layout.pending_path(sha, size))  # synced by its first checkout
        assert blob.read_bytes() == data
        assert blob.stat().st_mode & 0o777 == 0o444
        assert blob.stat().st_nlink == 1  # the anonymous inode itself, linked once
    assert not any("uploading" in d for d in made_dirs)
    assert list(store.uploading_dir.iterdir()) == []
    assert store.commit_records(records[:3]) == [("exists", "")] * 3


def test_commit_records_falls_back_to_named_temps_where_unsupported(tmp_path, monkeypatch):
    store = FileStore(tmp_path)
    store.ensure_dirs()
    real_open = os.open

    def no_tmpfile(path, flags, *args, **kwargs):
        if flags & getattr(os, "O_TMPFILE", 0) == os.O_TMPFILE:
            raise OSError(errno.EOPNOTSUPP, "Operation not supported", path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_tmpfile)
    records = _records(5)
    assert store.commit_records(records) == [("stored", "")] * 5
    assert not store.anonymous_temps  # decided once, not retried per file
    for sha, size, data in records:
        assert Path(store.layout.pending_path(sha, size)).read_bytes() == data
    assert list(store.uploading_dir.iterdir()) == []  # named temps and their dirs removed


def test_commit_records_rejects_bad_bytes_without_a_blob(tmp_path, tuning):
    store = FileStore(tmp_path, tuning=tuning)
    store.ensure_dirs()
    ((sha, size, data),) = _records(1)
    results = store.commit_records([(sha, size, data[:-1] + b"X"), ("0" * 64, size, data)])
    assert [r[0] for r in results] == ["rejected", "rejected"]
    assert not store.blob_path(sha, size).exists()
    assert list(store.stored_dir.iterdir()) == []


def test_portable_fallback_stores_the_same_without_any_linux_feature(tmp_path, monkeypatch):
    """With `_portable` in place of `_linux` (as on a non-Linux system): plain temps,
    no writeback hint, no splice; files and records still become the same blobs."""
    from manager_plugin.store import _portable, system

    for name in system.__all__:
        monkeypatch.setattr(system, name, getattr(_portable, name))
    store = FileStore(tmp_path)
    store.ensure_dirs()
    assert (store.splice, store.anonymous_temps) == (False, False)
    data = os.urandom(3 * 1024 * 1024 + 1)
    sha, size = ident(data)
    assert asyncio.run(store.receive(sha, size, reader(data))) is Received.STORED
    records = _records(5)
    assert store.commit_records(records) == [("stored", "")] * 5
    assert store.blob_path(sha, size).read_bytes() == data  # large: durable at once
    for key_sha, key_size, blob in records:  # small: pending until a checkout
        assert Path(store.layout.pending_path(key_sha, key_size)).read_bytes() == blob
    assert leftovers(store) == []
    assert list(store.uploading_dir.iterdir()) == []


@pytest.mark.parametrize(
    "data, suffix",
    [(b"kept by requirements", ".pending"), (b"k" * (SMALL_BODY + 1), ".blob")],
    ids=["small-pending", "large-blob"],
)
def test_status_only_looks_and_touch_status_also_touches(store, data, suffix):
    sha, size = ident(data)
    asyncio.run(store.receive(sha, size, reader(data)))
    blob = store.blob_path(sha, size).with_suffix(suffix)
    assert [p.name for p in store.stored_dir.rglob("*") if p.is_file()] == [blob.name]
    os.utime(blob, (1000, 1000))
    assert store.status(sha, size) == "stored"
    assert blob.stat().st_mtime == 1000  # a question (GET files/...) is not a use
    assert store.touch_status(sha, size) == "stored"
    assert blob.stat().st_mtime > 1000  # requirements: GC must spare it
