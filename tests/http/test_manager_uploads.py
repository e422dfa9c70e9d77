"""Uploads over real HTTP: concurrency, broken clients, and constant memory for huge files."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests
from helpers import blobs, ident, temps, wait_until
from reliability_support import read_response

API = "api/v3/"


def open_partial_upload(manager, data: bytes, sent: int) -> socket.socket:
    """A raw connection that has sent the headers and `sent` bytes of the body; the
    server closes it after answering (so an answer without a body can be read whole)."""
    sha, size = ident(data)
    host, port = manager.url.split("//")[1].rstrip("/").split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    sock.sendall(
        f"POST /{API}shaman/files/{sha}/{size} HTTP/1.1\r\nHost: test\r\n"
        f"Connection: close\r\nContent-Length: {size}\r\n\r\n".encode()
        + data[:sent]
    )
    return sock


def status_of(manager, data: bytes) -> str:
    sha, size = ident(data)
    return requests.get(f"{manager.url}{API}shaman/files/{sha}/{size}").json()["status"]


def test_concurrent_uploads_of_one_file_store_exactly_one_blob(manager):
    data = os.urandom(3 * 1024 * 1024)
    sha, size = ident(data)
    barrier = threading.Barrier(6)
    codes: list[int] = []

    def one() -> None:
        barrier.wait()
        resp = requests.post(f"{manager.url}{API}shaman/files/{sha}/{size}", data=data)
        codes.append(resp.status_code)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes).count(204) == 1
    assert set(codes) <= {204, 208}
    assert [p.name for p in blobs(manager.store)] == [f"{size}.blob"]
    assert temps(manager.store) == []
    assert manager.service.store.blobs_written == 1
    assert manager.service.store.bytes_written == size


def test_second_uploader_stops_early_with_208_when_the_first_completes(manager):
    data = os.urandom(4 * 1024 * 1024)
    sha, size = ident(data)
    first = open_partial_upload(manager, data, 1024)
    assert wait_until(lambda: status_of(manager, data) == "uploading")
    second = open_partial_upload(manager, data, 3 * 1024 * 1024)
    try:
        first.sendall(data[1024:])
        assert first.recv(100).startswith(b"HTTP/1.1 204")
        # The second never sends its last MiB: the server must answer it anyway.
        second.settimeout(10)
        assert second.recv(100).startswith(b"HTTP/1.1 208")
    finally:
        first.close()
        second.close()
    assert wait_until(lambda: temps(manager.store) == [])
    assert len(blobs(manager.store)) == 1


def test_second_uploader_completes_itself_when_the_first_dies(manager):
    data = os.urandom(1024 * 1024)
    first = open_partial_upload(manager, data, 1000)
    second = open_partial_upload(manager, data, 2000)
    try:
        # Both uploads are under way, each into its own temp; then the first one dies.
        assert wait_until(lambda: len(temps(manager.store)) == 2)
        first.close()
        assert wait_until(lambda: len(temps(manager.store)) == 1)
        second.sendall(data[2000:])
        answer = read_response(second)
    finally:
        second.close()
    assert answer is not None and answer[0] == 204
    assert status_of(manager, data) == "stored"
    assert wait_until(lambda: temps(manager.store) == [])
    assert len(blobs(manager.store)) == 1


def test_client_disconnect_mid_upload_leaves_no_temp_and_no_blob(manager):
    data = os.urandom(2 * 1024 * 1024)
    sock = open_partial_upload(manager, data, 1024 * 1024)
    assert wait_until(lambda: len(temps(manager.store)) == 1)
    sock.close()
    assert wait_until(lambda: temps(manager.store) == [])
    # The upload unregisters itself just after removing its temp file.
    assert wait_until(lambda: status_of(manager, data) == "unknown")
    assert blobs(manager.store) == []


def test_stalled_body_is_answered_408_and_discarded(manager_factory):
    manager = manager_factory(body_read_timeout=0.5)
    data = os.urandom(10000)
    sock = open_partial_upload(manager, data, 100)
    sock.settimeout(10)
    try:
        answer = sock.recv(1000)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 408")
    assert b'"code": 408' in answer
    assert wait_until(lambda: temps(manager.store) == [])
    assert blobs(manager.store) == []


def test_overlong_body_is_417_and_nothing_is_kept(manager):
    data = os.urandom(5000)
    sha, size = ident(data)
    resp = requests.post(f"{manager.url}{API}shaman/files/{sha}/{size}", data=data + b"extra")
    assert resp.status_code == 417
    assert blobs(manager.store) == [] and temps(manager.store) == []


def test_chunked_upload_without_content_length_works(manager):
    data = os.urandom(300000)
    sha, size = ident(data)

    def chunks() -> Iterator[bytes]:
        for i in range(0, size, 7000):
            yield data[i : i + 7000]

    resp = requests.post(f"{manager.url}{API}shaman/files/{sha}/{size}", data=chunks())
    assert resp.status_code == 204
    blob = blobs(manager.store)[0]
    assert blob.read_bytes() == data
    assert blob.stat().st_mode & 0o777 == 0o444


# ---- a multi-GB upload against a server in its own process, watching its memory ----


HUGE = 3 * 1024**3
PATTERN = hashlib.sha256(b"pattern").digest() * 32768  # 1 MiB, deterministic


def huge_body() -> Iterator[bytes]:
    for _ in range(HUGE // len(PATTERN)):
        yield PATTERN


def huge_sha() -> str:
    hasher = hashlib.sha256()
    for chunk in huge_body():
        hasher.update(chunk)
    return hasher.hexdigest()


@pytest.fixture
def manager_process(tmp_path: Path) -> Iterator[tuple[str, psutil.Process, Path]]:
    storage = tmp_path / "storage"
    proc = subprocess.Popen(
        [sys.executable, "-m", "manager_plugin", "serve", "--storage", str(storage)]
        + ["--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    with proc.stdout:
        try:
            line = proc.stdout.readline()
            assert line.startswith("Shaman listening on http://127.0.0.1:"), line
            yield line.split()[3], psutil.Process(proc.pid), storage
        finally:
            proc.terminate()
            proc.wait(30)


@pytest.mark.slow
def test_multi_gb_upload_keeps_server_memory_flat(manager_process):
    url, process, storage = manager_process
    if psutil.disk_usage(str(storage.parent)).free < 2 * HUGE:
        pytest.fail("this test needs 6 GiB free in the temp dir")
    sha = huge_sha()
    baseline = process.memory_info().rss
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.05):
            peak = max(peak, process.memory_info().rss)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        resp = requests.post(f"{url}{API}shaman/files/{sha}/{HUGE}", data=huge_body())
    finally:
        done.set()
        sampler.join()
    assert resp.status_code == 204
    blob = storage / "file-store/stored" / sha[:2] / sha[2:] / f"{HUGE}.blob"
    assert blob.stat().st_size == HUGE
    assert peak - baseline < 100 * 1024 * 1024
    blob.unlink()


def test_reading_a_request_without_a_body_ends_at_once():
    """A request with no body gets aiohttp's EmptyStreamReader, whose readchunk()
    answers (b"", True) forever after the first call; reading again after the end
    must answer b"" at once, not spin holding the event loop."""
    from aiohttp.streams import EmptyStreamReader

    from manager_plugin.http.bodies import whole_chunks

    async def read_past_the_end() -> list[bytes]:
        read = whole_chunks(EmptyStreamReader())
        return [await read(10), await read(10), await read(10)]

    result: list[list[bytes]] = []
    worker = threading.Thread(
        target=lambda: result.append(asyncio.run(read_past_the_end())), daemon=True
    )
    worker.start()
    worker.join(5)
    assert result == [[b"", b"", b""]]
