"""Small uploads (read whole, committed in one worker hop): same guarantees as any upload.

While a small body is still arriving, its locked temp is there for any process sharing
the storage to see ("being uploaded"); a bad or cut-short body leaves nothing behind.
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

# Asks "is (sha, size) being uploaded?" the way a second manager process would.
_OTHER_PROCESS = (
    "import sys; from pathlib import Path; from manager_plugin.store import FileStore; "
    "print(FileStore(Path(sys.argv[1])).is_uploading(sys.argv[2], int(sys.argv[3])))"
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


def test_a_small_body_is_being_uploaded_for_another_process_while_it_arrives(store, tmp_path):
    data = os.urandom(4096)
    sha, size = hashlib.sha256(data).hexdigest(), len(data)
    answers: list[str] = []

    async def run() -> Received:
        half = asyncio.Event()
        sent = 0

        async def read(n: int) -> bytes:
            nonlocal sent
            if sent == 2048 and not half.is_set():
                half.set()
                # Ask from another process while the rest of the body is still due.
                probe = await asyncio.create_subprocess_exec(
                    sys.executable, "-c", _OTHER_PROCESS, str(tmp_path), sha, str(size),
                    stdout=subprocess.PIPE,
                )  # fmt: skip
                out, _ = await probe.communicate()
                answers.append(out.decode().strip())
            piece = data[sent : sent + min(n, 2048)]
            sent += len(piece)
            return piece

        return await store.receive(sha, size, read, can_defer=True)

    assert asyncio.run(run()) is Received.STORED
    assert answers == ["True"]
    assert store.blob_path(sha, size).read_bytes() == data
    assert os.stat(store.blob_path(sha, size)).st_mode & 0o777 == 0o444
    assert _files(store) == []
    assert not store.is_uploading(sha, size)


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
    assert store.blob_path(sha, size).read_bytes() == data


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
