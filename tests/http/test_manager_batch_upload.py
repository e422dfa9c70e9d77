"""Batch uploads (our extension) over real HTTP: many small files in one request."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import subprocess
import threading
from pathlib import Path

import pytest
import requests
from helpers import (
    ACCESS_LOGGER,
    access_messages,
    blob_path,
    files_under,
    ident,
    pending_path,
    temps,
)

from manager_plugin.store.batch_receive import MAX_RECORD_SIZE, MAX_RECORDS

BATCH = "api/v3/shaman/batch-upload"
CONTENT_TYPE = {"Content-Type": "application/x-shaman-batch"}


def held(store, data: bytes) -> bool:
    """Whether the store keeps `data` in either form (a batch record lands `.pending`)."""
    return blob_path(store, data).exists() or pending_path(store, data).exists()


def record(data: bytes, sha: str | None = None, size: int | None = None) -> bytes:
    real_sha, real_size = ident(data)
    return f"{sha or real_sha} {real_size if size is None else size}\n".encode() + data


def post(manager, body: bytes, **kw: object) -> requests.Response:
    headers = {**CONTENT_TYPE, **kw.pop("headers", {})}  # type: ignore[dict-item]
    return requests.post(manager.api(BATCH), data=body, headers=headers, timeout=30, **kw)


def small_files(count: int, tag: str = "") -> list[bytes]:
    return [f"{tag} small file {i}\n".encode() * (i % 7 + 1) for i in range(count)]


@pytest.fixture
def manager(manager_factory, tuning):
    """Every batch test with anonymous temps (the default) and with named ones."""
    return manager_factory(tuning=tuning)


def test_batch_stores_every_record_and_answers_in_order(manager):
    files = [*small_files(300), b"", os.urandom(300_000)]
    resp = post(manager, b"".join(record(d) for d in files))
    assert resp.status_code == 200
    answer = resp.json()["files"]
    assert [(a["sha"], a["size"]) for a in answer] == [ident(d) for d in files]
    assert {a["status"] for a in answer} == {"stored"}
    for data in files:
        assert pending_path(manager.store, data).read_bytes() == data
        assert not os.access(pending_path(manager.store, data), os.W_OK) or os.geteuid() == 0
        assert pending_path(manager.store, data).stat().st_mode & 0o777 == 0o444
    assert temps(manager.store) == []


def test_empty_batch_is_zero_records(manager):
    resp = post(manager, b"")
    assert resp.status_code == 200
    assert resp.json() == {"files": []}


def test_already_stored_record_is_exists(manager):
    files = small_files(5)
    post(manager, record(files[1]))
    answer = post(manager, b"".join(record(d) for d in files)).json()["files"]
    assert [a["status"] for a in answer] == ["stored", "exists", "stored", "stored", "stored"]


def test_same_file_twice_in_one_batch_is_stored_then_exists(manager):
    data = b"twice"
    answer = post(manager, record(data) + record(data)).json()["files"]
    assert [a["status"] for a in answer] == ["stored", "exists"]


def test_wrong_checksum_record_is_rejected_and_the_others_stored(manager):
    good1, bad, good2 = b"first", b"second", b"third"
    wrong = hashlib.sha256(b"something else").hexdigest()
    resp = post(manager, record(good1) + record(bad, sha=wrong) + record(good2))
    assert resp.status_code == 200
    answer = resp.json()["files"]
    assert [a["status"] for a in answer] == ["stored", "rejected", "stored"]
    assert "SHA-256" in answer[1]["message"]
    assert (
        pending_path(manager.store, good1).exists() and pending_path(manager.store, good2).exists()
    )
    assert not (manager.store / "stored" / wrong[:2] / wrong[2:]).exists()
    assert manager.service.store.blobs_written == 2
    assert temps(manager.store) == []


def assert_malformed(resp: requests.Response, *words: str) -> None:
    assert resp.status_code == 400
    body = resp.json()
    assert body["code"] == 400
    for word in words:
        assert word in body["message"]


def test_oversized_record_is_400_naming_it_and_earlier_records_stay(manager):
    first = b"verified before the bad record"
    big = MAX_RECORD_SIZE + 1
    body = record(first) + f"{'a' * 64} {big}\n".encode() + b"x" * 1000
    resp = post(manager, body)
    assert_malformed(resp, "record 1", str(MAX_RECORD_SIZE))
    assert pending_path(manager.store, first).read_bytes() == first
    assert temps(manager.store) == []


def test_truncated_record_is_400_and_leaves_no_temp(manager):
    first, second = b"complete record", b"this one is cut short"
    body = record(first) + record(second)[:-5]
    resp = post(manager, body)
    assert_malformed(resp, "record 1", "ends after")
    assert pending_path(manager.store, first).exists()
    assert not held(manager.store, second)
    assert temps(manager.store) == []


@pytest.mark.parametrize(
    "header",
    [b"nothex 5\n", b"%s\n" % (b"a" * 64), b"%s -5\n" % (b"a" * 64), b"%s 5 x\n" % (b"a" * 64)],
    ids=["bad-sha", "no-size", "negative-size", "extra-field"],
)
def test_malformed_header_is_400_naming_the_record(manager, header: bytes):
    first = b"fine"
    resp = post(manager, record(first) + header + b"12345")
    assert_malformed(resp, "record 1")
    assert pending_path(manager.store, first).exists()
    assert temps(manager.store) == []


def test_overlong_header_line_is_400(manager):
    resp = post(manager, b"a" * 1000 + b" 1\nx")
    assert_malformed(resp, "record 0", "header line longer")


def test_too_many_records_is_400(manager):
    body = record(b"") * (MAX_RECORDS + 1)
    resp = post(manager, body)
    assert_malformed(resp, f"record {MAX_RECORDS}", str(MAX_RECORDS))
    assert pending_path(manager.store, b"").exists()
    assert temps(manager.store) == []


def test_stalled_batch_gets_408_and_leaves_no_temp(manager_factory):
    manager = manager_factory(body_read_timeout=0.5)
    first = record(b"sent in full")
    head = f"POST /{BATCH} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(first) + 100}\r\n\r\n"
    host, port = manager.url.split("//")[1].rstrip("/").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(head.encode() + first + b"a" * 10)
        sock.settimeout(10)
        answer = sock.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 408")
    assert pending_path(manager.store, b"sent in full").exists()
    assert temps(manager.store) == []


def test_disabled_shaman_answers_503(manager_factory):
    manager = manager_factory(shaman_enabled=False)
    resp = post(manager, record(b"x"))
    assert resp.status_code == 503
    assert resp.json()["code"] == 503


def test_token_is_required_when_configured(manager_factory):
    manager = manager_factory(token="s3cret")
    assert post(manager, record(b"x")).status_code == 401
    ok = post(manager, record(b"x"), headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    assert ok.json()["files"][0]["status"] == "stored"


def test_overlapping_concurrent_batches_write_each_blob_once(manager):
    shared = small_files(400, "shared")
    # Each client sends all shared files (from its own starting point) plus 20 of its own.
    orders = [[*shared[i * 50 :], *shared[: i * 50], *small_files(20, f"{i}")] for i in range(6)]
    bodies = [b"".join(record(d) for d in order) for order in orders]
    answers: list[list[dict[str, object]]] = []

    def send(body: bytes) -> None:
        resp = post(manager, body)
        assert resp.status_code == 200
        answers.append(resp.json()["files"])

    threads = [threading.Thread(target=send, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == len(bodies)
    distinct = len(shared) + 6 * 20
    stored = [a for answer in answers for a in answer if a["status"] == "stored"]
    assert len(stored) == distinct
    assert len({(a["sha"], a["size"]) for a in stored}) == distinct
    assert manager.service.store.blobs_written == distinct
    assert len(files_under(manager.store / "stored")) == distinct
    assert temps(manager.store) == []


def test_access_log_line_counts_the_records(manager, caplog):
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    post(manager, b"".join(record(d) for d in small_files(12)))
    lines = [line for line in access_messages(caplog) if "batch-upload" in line]
    assert len(lines) == 1
    assert "records=12 stored=12" in lines[0]


@pytest.fixture
def small_disk(tmp_path: Path):
    """An 8 MiB tmpfs (needs root, like the other full-disk tests; CI runs as root)."""
    mountpoint = tmp_path / "small-disk"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        if subprocess.run(["umount", str(mountpoint)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(mountpoint)], check=True)


@pytest.mark.root
def test_batch_that_does_not_fit_gets_507_and_leaves_no_temp(small_disk, manager_factory):
    manager = manager_factory(storage_path=small_disk / "storage")
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (7 * 1024 * 1024))
    files = [os.urandom(512 * 1024) for _ in range(4)]
    body = b"".join(record(d) for d in files)
    resp = post(manager, body)
    assert resp.status_code == 507, resp.text
    assert "full" in resp.json()["message"]
    assert temps(manager.store) == []
    assert not any(held(manager.store, d) for d in files)

    filler.unlink()
    resp = post(manager, body)
    assert [a["status"] for a in resp.json()["files"]] == ["stored"] * 4
    assert all(pending_path(manager.store, d).read_bytes() == d for d in files)
