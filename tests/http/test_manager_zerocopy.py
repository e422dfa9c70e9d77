"""Uploads spliced from the socket (manager_plugin.store.splice) keep every upload guarantee.

Only big bodies take that path in production; here the threshold is lowered so that
the upload tests of the ordinary path run again through it, plus tests of its own.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time

import pytest
import requests
from helpers import blob_path, temps, wait_until
from reliability.test_reliability_faulty_clients import (  # noqa: F401 - collected again
    test_body_smaller_than_declared_size_gets_417,
    test_content_length_larger_than_body_is_not_stored,
    test_disconnect_mid_body_leaves_nothing,
    test_graceful_close_mid_body_leaves_nothing,
    test_stalled_body_times_out_and_is_removed,
    test_truncated_body_is_not_stored,
    test_wrong_checksum_gets_417,
    upload_head,
)
from reliability.test_reliability_full_disk import (  # noqa: F401 - collected again
    small_disk,
    test_upload_that_does_not_fit_gets_507_and_leaves_no_temp,
)
from reliability_support import connect, host_port, read_response, upload
from test_manager_uploads import (  # noqa: F401 - collected again, with splicing on
    test_client_disconnect_mid_upload_leaves_no_temp_and_no_blob,
    test_concurrent_uploads_of_one_file_store_exactly_one_blob,
    test_second_uploader_completes_itself_when_the_first_dies,
    test_second_uploader_stops_early_with_208_when_the_first_completes,
    test_stalled_body_is_answered_408_and_discarded,
)

import manager_plugin.http.bodies as bodies_module
import manager_plugin.store.splice as zerocopy_module
from manager_plugin.config import Config
from manager_plugin.http.server import BackgroundServer

MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def splice_everything(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Splice every upload body; the list records the size of each spliced one."""
    monkeypatch.setattr(bodies_module, "SPLICE_MIN_SIZE", 1)
    monkeypatch.setattr(zerocopy_module, "HASH_BATCH", 64 * 1024)  # many hash hand-offs
    spliced: list[int] = []
    real = zerocopy_module.SpliceJob.run

    def counting(job: zerocopy_module.SpliceJob) -> int:
        spliced.append(job.size)
        return real(job)

    monkeypatch.setattr(zerocopy_module.SpliceJob, "run", counting)
    return spliced


def test_spliced_upload_is_stored_and_ends_the_connection(manager, splice_everything):
    data = os.urandom(3 * MiB + 12345)
    resp = upload(manager.url, data)
    assert resp.status_code == 204, resp.text
    assert resp.headers.get("Connection", "").lower() == "close"
    assert splice_everything == [len(data)]
    assert blob_path(manager.store, data).read_bytes() == data
    assert manager.service.store.blobs_written == 1
    assert wait_until(lambda: not temps(manager.store))


def test_keep_alive_client_carries_on_after_a_spliced_upload(manager, splice_everything):
    with requests.Session() as session:
        for size in (2 * MiB, 1, 5 * MiB + 1):
            data = os.urandom(size)
            sha = hashlib.sha256(data).hexdigest()
            resp = session.post(f"{manager.url}api/v3/shaman/files/{sha}/{size}", data=data)
            assert resp.status_code == 204, resp.text
            assert blob_path(manager.store, data).read_bytes() == data
            resp = session.get(f"{manager.url}api/v3/shaman/files/{sha}/{size}")
            assert resp.json() == {"status": "stored"}
    assert splice_everything == [2 * MiB, 1, 5 * MiB + 1]


def test_body_arriving_in_slow_pieces_is_stored(manager, splice_everything):
    """Part of the body comes with the headers (aiohttp has it), the rest trickles in."""
    data = os.urandom(MiB + 7)
    sock = connect(manager.url)
    try:
        sock.sendall(upload_head(manager, data, len(data)) + data[:1000])
        time.sleep(0.1)
        for start in range(1000, len(data), 200_000):
            sock.sendall(data[start : start + 200_000])
            time.sleep(0.02)
        answer = read_response(sock)
    finally:
        sock.close()
    assert answer is not None and answer[0] == 204
    assert blob_path(manager.store, data).read_bytes() == data
    assert splice_everything == [len(data)]


def test_wrong_checksum_after_a_big_body_gets_417_and_keeps_nothing(manager, splice_everything):
    data = os.urandom(4 * MiB)
    sha = hashlib.sha256(data + b"x").hexdigest()
    resp = requests.post(f"{manager.url}api/v3/shaman/files/{sha}/{len(data)}", data=data)
    assert resp.status_code == 417
    assert resp.headers.get("Connection", "").lower() == "close"
    assert "SHA-256" in resp.json()["message"]
    assert wait_until(lambda: not temps(manager.store))
    assert not (manager.store / "stored").exists() or not any((manager.store / "stored").iterdir())


def test_small_threshold_is_what_decides(manager, monkeypatch, splice_everything):
    monkeypatch.setattr(bodies_module, "SPLICE_MIN_SIZE", 2 * MiB)
    small, big = os.urandom(MiB), os.urandom(2 * MiB)
    first, second = upload(manager.url, small), upload(manager.url, big)
    assert (first.status_code, second.status_code) == (204, 204)
    assert first.headers.get("Connection", "").lower() != "close"
    assert splice_everything == [2 * MiB]


def test_second_uploader_is_answered_208_when_the_first_completes_mid_body(manager):
    """The second client keeps sending after the first one's blob is stored: it gets
    its 208 (its body read and dropped), not a connection reset."""
    data = os.urandom(6 * MiB)
    first = connect(manager.url)
    second = connect(manager.url)
    answers: list[tuple[int, dict[str, str], bytes] | None] = []
    try:
        first.sendall(upload_head(manager, data, len(data)) + data[:1000])
        assert wait_until(lambda: len(temps(manager.store)) == 1)
        second.sendall(upload_head(manager, data, len(data)) + data[: 2 * MiB])
        assert wait_until(lambda: len(temps(manager.store)) == 2)
        first.sendall(data[1000:])
        assert read_response(first)[0] == 204  # type: ignore[index]

        def rest() -> None:
            try:
                second.sendall(data[2 * MiB :])
            except OSError:
                pass

        sender = threading.Thread(target=rest)
        sender.start()
        answers.append(read_response(second))
        sender.join(30)
    finally:
        first.close()
        second.close()
    assert answers[0] is not None and answers[0][0] == 208
    assert wait_until(lambda: not temps(manager.store))
    assert blob_path(manager.store, data).read_bytes() == data
    assert manager.service.store.blobs_written == 1
    # The stored blob is the one the server now names for those bytes: a third upload of
    # them is told at once that it has them, and writes nothing.
    assert upload(manager.url, data).status_code == 208
    assert manager.service.store.blobs_written == 1


def test_server_shutdown_mid_body_stops_the_splicing(tmp_path, splice_everything):
    server = BackgroundServer(
        Config(listen="127.0.0.1:0", storage_path=tmp_path / "storage", gc_period=0)
    )
    url = server.start()
    store = tmp_path / "storage" / "file-store"
    data = os.urandom(2 * MiB)
    sock = socket.create_connection(host_port(url))
    stopped = False
    try:
        path = f"/api/v3/shaman/files/{hashlib.sha256(data).hexdigest()}/{len(data)}"
        head = f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(data)}\r\n\r\n"
        sock.sendall(head.encode() + data[:1000])
        assert wait_until(lambda: len(splice_everything) == 1)
        server.stop()  # cancels the request: the splice thread must stop, the temp go
        stopped = True
        assert wait_until(lambda: not splice_threads())
        assert not temps(store)
    finally:
        sock.close()
        if not stopped:
            server.stop()


def splice_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "shaman-splice"]
