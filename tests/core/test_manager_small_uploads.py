"""Small uploads (read whole, stored on the event loop as `.pending`): same guarantees
as any upload. A bad or cut-short body leaves nothing behind; while one arrives it is
"being uploaded" in this process; nothing is written before the whole body is verified;
another process trusts the `.pending` only after hashing it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from manager_plugin.errors import BodyTimeout, ChecksumMismatch, MustDefer, SizeMismatch
from manager_plugin.store import FileStore, Received
from manager_plugin.store.receive import SMALL_BODY
from manager_plugin.tuning import Tuning

# Asks for the status of (sha, size) the way a second manager process would.
_OTHER_PROCESS = (
    "import sys; from pathlib import Path; from manager_plugin.store import FileStore; "
    "print(FileStore(Path(sys.argv[1])).status(sys.argv[2], int(sys.argv[3])))"
)


@pytest.fixture
def store(tmp_path: Path, tuning: Tuning) -> Iterator[FileStore]:
    store = FileStore(tmp_path, body_read_timeout=5.0, tuning=tuning)
    store.ensure_dirs()
    yield store
    store.close()


def _files(store: FileStore) -> list[Path]:
    return [p for p in store.uploading_dir.rglob("*") if p.is_file()]


def _reader(data: bytes) -> Callable[[int], Awaitable[bytes]]:
    pos = 0

    async def read(n: int) -> bytes:
        nonlocal pos
        piece = data[pos : pos + n]
        pos += len(piece)
        return piece

    return read


def test_a_small_body_is_being_uploaded_while_it_arrives_and_nothing_is_written_before(
    store, tmp_path
):
    data = os.urandom(4096)
    sha, size = hashlib.sha256(data).hexdigest(), len(data)
    seen: list[tuple[bool, list[Path], list[Path]]] = []

    async def run() -> Received:
        sent = 0

        async def read(n: int) -> bytes:
            nonlocal sent
            if sent == 2048 and not seen:
                stored_files = [p for p in store.stored_dir.rglob("*") if p.is_file()]
                seen.append((store.is_uploading(sha, size), _files(store), stored_files))
            piece = data[sent : sent + min(n, 2048)]
            sent += len(piece)
            return piece

        return await store.receive(sha, size, read, can_defer=True)

    assert asyncio.run(run()) is Received.STORED
    assert seen == [(True, [], [])]
    pending = Path(store.layout.pending_path(sha, size))
    assert pending.read_bytes() == data
    assert os.stat(pending).st_mode & 0o777 == 0o444
    assert not store.blob_path(sha, size).exists()  # durable only once a checkout links it
    assert _files(store) == []
    assert not store.is_uploading(sha, size)
    # Another process sharing the storage hashes it, then calls it stored.
    probe = subprocess.run(
        [sys.executable, "-c", _OTHER_PROCESS, str(tmp_path), sha, str(size)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert probe.stdout.strip() == "stored"


def test_a_small_upload_defers_to_a_live_temp_of_another_process(store, tmp_path):
    data = os.urandom(1000)
    sha, size = hashlib.sha256(data).hexdigest(), len(data)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; "
         "from manager_plugin.store.layout import Layout; "
         "from manager_plugin.store.temps import open_named_temp; "
         "open_named_temp(Layout(Path(sys.argv[1])), sys.argv[2], int(sys.argv[3])); "
         "print('held', flush=True); time.sleep(60)",
         str(tmp_path), sha, str(size)],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
        with pytest.raises(MustDefer):
            asyncio.run(store.receive(sha, size, _reader(data), can_defer=True))
        # Without the defer header it is received anyway, next to the other temp.
        assert asyncio.run(store.receive(sha, size, _reader(data))) is Received.STORED
    finally:
        holder.kill()
        holder.wait()
    assert Path(store.layout.pending_path(sha, size)).read_bytes() == data


@pytest.mark.parametrize(
    ("body", "declared", "error"),
    [
        (b"x" * 100, 99, SizeMismatch),  # overlong
        (b"x" * 99, 100, SizeMismatch),  # cut short
        (b"y" * 100, 100, ChecksumMismatch),
    ],
)
def test_a_bad_small_body_leaves_nothing(store, body, declared, error):
    sha = hashlib.sha256(b"x" * declared).hexdigest()
    with pytest.raises(error):
        asyncio.run(store.receive(sha, declared, _reader(body)))
    assert not store.blob_path(sha, declared).exists()
    assert not Path(store.layout.pending_path(sha, declared)).exists()
    assert _files(store) == []
    assert store.blobs_written == 0


def test_a_stalled_small_body_times_out_and_leaves_nothing(tmp_path, tuning):
    store = FileStore(tmp_path, body_read_timeout=0.2, tuning=tuning)
    store.ensure_dirs()
    data = os.urandom(SMALL_BODY)
    sha, size = hashlib.sha256(data).hexdigest(), len(data)

    async def stalls(n: int) -> bytes:
        await asyncio.sleep(3600)
        return b""

    try:
        with pytest.raises(BodyTimeout):
            asyncio.run(store.receive(sha, size, stalls))
        assert _files(store) == []
    finally:
        store.close()


def test_a_small_upload_of_a_stored_blob_is_already_stored_and_counted_once(store):
    data = os.urandom(SMALL_BODY)
    sha, size = hashlib.sha256(data).hexdigest(), len(data)

    async def both() -> list[Received]:
        return list(
            await asyncio.gather(
                store.receive(sha, size, _reader(data)), store.receive(sha, size, _reader(data))
            )
        )

    outcomes = asyncio.run(both())
    assert sorted(o.value for o in outcomes) == ["already stored", "stored"]
    assert asyncio.run(store.receive(sha, size, _reader(data))) is Received.ALREADY_STORED
    assert store.blobs_written == 1
    assert _files(store) == []


# ---- a small upload registered while its body is in hand or on its way (the fast lane)


def test_an_expected_small_upload_is_being_uploaded_until_it_completes(store):
    data = os.urandom(4096)
    sha, size = hashlib.sha256(data).hexdigest(), len(data)
    incoming = store.expect_small(sha, size)
    assert incoming is not None
    assert store.status(sha, size) == "uploading"
    assert store.expect_small(sha, size) is None  # one at a time: the other goes the long way
    assert _files(store) == [] and not store.is_stored(sha, size)  # nothing written yet
    assert incoming.complete(data, can_defer=False) is Received.STORED
    assert store.status(sha, size) == "stored"
    again = store.expect_small(sha, size)
    assert again is not None and again.complete(data, can_defer=True) is Received.ALREADY_STORED


@pytest.mark.parametrize(
    "body, error",
    [(b"x" * 4096, ChecksumMismatch), (b"x" * 4095, SizeMismatch), (b"x" * 4097, SizeMismatch)],
    ids=["checksum", "short", "long"],
)
def test_a_bad_body_ends_an_expected_upload_and_leaves_nothing(store, body, error):
    data = os.urandom(4096)
    sha, size = hashlib.sha256(data).hexdigest(), len(data)
    incoming = store.expect_small(sha, size)
    assert incoming is not None
    with pytest.raises(error):
        incoming.complete(body, can_defer=False)
    assert store.status(sha, size) == "unknown"
    assert _files(store) == [] and list(store.stored_dir.rglob("*.pending")) == []


def test_another_upload_of_an_expected_one_goes_the_general_way(store):
    data = os.urandom(4096)
    sha, size = hashlib.sha256(data).hexdigest(), len(data)
    incoming = store.expect_small(sha, size)
    assert incoming is not None
    assert asyncio.run(store.receive(sha, size, _reader(data))) is Received.STORED
    assert store.status(sha, size) == "stored"
    assert incoming.complete(data, can_defer=False) is Received.ALREADY_STORED
    incoming.end()  # idempotent
    assert store.status(sha, size) == "stored"


def test_an_expected_upload_given_up_is_no_longer_in_flight(store):
    data = os.urandom(4096)
    sha, size = hashlib.sha256(data).hexdigest(), len(data)
    incoming = store.expect_small(sha, size)
    assert incoming is not None
    incoming.end()  # its client left
    assert store.status(sha, size) == "unknown"
    assert asyncio.run(store.receive(sha, size, _reader(data), can_defer=True)) is Received.STORED


def test_expect_small_refuses_a_big_file(store):
    assert store.expect_small("a" * 64, SMALL_BODY + 1) is None
