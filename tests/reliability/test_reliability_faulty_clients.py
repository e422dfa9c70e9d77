"""Guarantee 3: faulty clients leave nothing behind and don't hurt the server.

Each test misbehaves in one way on a real server over loopback, then checks the
same three things: no blob was stored, no temp file is left in uploading/ (the
server may clean up just after answering, so we poll briefly), and a normal
upload still succeeds.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import time

import pytest
import requests
from helpers import blob_path, blobs, sha256, temps, wait_until
from reliability_support import (
    abort,
    assert_serving,
    connect,
    file_url,
    json_error,
    read_response,
    request_head,
    send_quietly,
    upload,
)

SIZE = 256 * 1024
REQUIREMENTS = "api/v3/shaman/checkout/requirements"
CHECKOUT = "api/v3/shaman/checkout/create"


def upload_head(manager, data: bytes, content_length: int, sha: str | None = None) -> bytes:
    path = "/" + file_url(manager.url, data).split("/", 3)[3]
    if sha is not None:
        path = f"/api/v3/shaman/files/{sha}/{len(data)}"
    return request_head(
        manager.url,
        "POST",
        path,
        {"Content-Type": "application/octet-stream", "Content-Length": str(content_length)},
    )


def assert_nothing_left(manager, data: bytes) -> None:
    assert wait_until(lambda: not temps(manager.store)), f"temp left: {temps(manager.store)}"
    assert not blob_path(manager.store, data).exists()
    assert blobs(manager.store) == []
    assert_serving(manager.url)


# Several offsets, from "headers only" to "one byte short", plus seeded random ones.
_rng = random.Random(6)
OFFSETS = [0, 1, 65536, SIZE - 1, *sorted(_rng.sample(range(2, SIZE - 1), 4))]


@pytest.mark.parametrize("offset", OFFSETS)
def test_disconnect_mid_body_leaves_nothing(manager, offset):
    data = os.urandom(SIZE)
    sock = connect(manager.url)
    sock.sendall(upload_head(manager, data, len(data)) + data[:offset])
    time.sleep(0.05)  # let the server start receiving, so a temp file exists
    abort(sock)
    assert_nothing_left(manager, data)


def test_graceful_close_mid_body_leaves_nothing(manager):
    data = os.urandom(SIZE)
    sock = connect(manager.url)
    sock.sendall(upload_head(manager, data, len(data)) + data[: SIZE // 2])
    sock.close()
    assert_nothing_left(manager, data)


def test_truncated_body_is_not_stored(manager):
    """Client says N bytes, sends fewer and half-closes: the server must not store it."""
    data = os.urandom(SIZE)
    sock = connect(manager.url)
    sock.sendall(upload_head(manager, data, len(data)) + data[: SIZE - 100])
    sock.shutdown(socket.SHUT_WR)  # "that is all you get"
    answer = read_response(sock)
    sock.close()
    # Either a 4xx, or the connection closed without an answer; never a success.
    assert answer is None or 400 <= answer[0] < 500, answer
    assert_nothing_left(manager, data)


def test_content_length_larger_than_body_is_not_stored(manager):
    data = os.urandom(SIZE)
    sock = connect(manager.url)
    sock.sendall(upload_head(manager, data, len(data) + 1000) + data)
    sock.shutdown(socket.SHUT_WR)
    answer = read_response(sock)
    sock.close()
    assert answer is None or 400 <= answer[0] < 500, answer
    assert_nothing_left(manager, data)


def test_content_length_smaller_than_body_gets_417(manager):
    data = os.urandom(SIZE)
    sock = connect(manager.url)
    send_quietly(sock, upload_head(manager, data, len(data) - 1000) + data)
    answer = read_response(sock)
    sock.close()
    assert answer is not None and answer[0] == 417, answer
    assert_nothing_left(manager, data)


def test_body_larger_than_declared_size_gets_417(manager):
    data = os.urandom(SIZE)
    resp = requests.post(
        f"{manager.url}api/v3/shaman/files/{sha256(data)}/{SIZE - 1}", data=data, timeout=30
    )
    assert resp.status_code == 417
    json_error(resp)
    assert_nothing_left(manager, data)


def test_body_smaller_than_declared_size_gets_417(manager):
    data = os.urandom(SIZE)
    resp = requests.post(
        f"{manager.url}api/v3/shaman/files/{sha256(data)}/{SIZE + 1}", data=data, timeout=30
    )
    assert resp.status_code == 417
    json_error(resp)
    assert_nothing_left(manager, data)


def test_wrong_checksum_gets_417(manager):
    data = os.urandom(SIZE)
    wrong = sha256(data + b"!")
    resp = requests.post(f"{manager.url}api/v3/shaman/files/{wrong}/{SIZE}", data=data, timeout=30)
    assert resp.status_code == 417
    assert "sha-256" in json_error(resp)["message"].lower()
    assert blobs(manager.store) == []
    assert_nothing_left(manager, data)


def test_chunked_body_with_wrong_checksum_gets_417(manager):
    data = os.urandom(SIZE)
    wrong = sha256(b"something else")
    chunks = (data[i : i + 10000] for i in range(0, len(data), 10000))
    resp = requests.post(
        f"{manager.url}api/v3/shaman/files/{wrong}/{SIZE}", data=chunks, timeout=30
    )
    assert resp.status_code == 417
    assert_nothing_left(manager, data)


def test_stalled_body_times_out_and_is_removed(manager_factory):
    manager = manager_factory(body_read_timeout=1.0)
    data = os.urandom(SIZE)
    sock = connect(manager.url, timeout=20)
    sock.sendall(upload_head(manager, data, len(data)) + data[: SIZE // 3])
    # Now say nothing. The server must give up on its own: 408, or just close.
    answer = read_response(sock)
    sock.close()
    assert answer is None or answer[0] == 408, answer
    assert_nothing_left(manager, data)


def test_absurd_declared_requirements_body_gets_413(manager):
    sock = connect(manager.url)
    head = request_head(
        manager.url,
        "POST",
        "/" + REQUIREMENTS,
        {"Content-Type": "application/json", "Content-Length": str(50 * 1024**3)},
    )
    send_quietly(sock, head + b'{"files": [' + b" " * 65536)
    answer = read_response(sock)
    sock.close()
    assert answer is not None and answer[0] == 413, answer
    assert json.loads(answer[2])["code"] == 413
    assert_serving(manager.url)


def test_absurd_streamed_requirements_body_gets_413(manager):
    """No Content-Length to reject up front: the limit must hold while streaming."""

    def endless_json():
        yield b'{"files": ['
        entry = json.dumps({"sha": "0" * 64, "size": 1, "path": "x" * 200}).encode() + b","
        block = entry * 4000  # ~1 MB per chunk
        for _ in range(2000):  # ~2 GB if the server kept reading
            yield block

    try:
        resp = requests.post(
            manager.url + REQUIREMENTS,
            data=endless_json(),
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
    except requests.ConnectionError:
        pass  # the server may answer 413 and close while we are still sending
    else:
        assert resp.status_code == 413, resp.text
    assert_serving(manager.url)


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"", b"\xff\xfe\x00", b"[1, 2", b"null"],
    ids=["broken", "empty", "binary", "truncated", "null"],
)
def test_malformed_json_gets_400(manager, body):
    resp = requests.post(
        manager.url + REQUIREMENTS,
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert resp.status_code == 400, resp.text
    json_error(resp)
    assert_serving(manager.url)


GOOD_FILE = {"sha": "a" * 64, "size": 10, "path": "a.txt"}


@pytest.mark.parametrize(
    ("endpoint", "body", "field"),
    [
        (REQUIREMENTS, {"files": "nope"}, "files"),
        (REQUIREMENTS, {}, "files"),
        (REQUIREMENTS, {"files": [GOOD_FILE, {**GOOD_FILE, "size": "12"}]}, "files[1].size"),
        (REQUIREMENTS, {"files": [{**GOOD_FILE, "size": -1}]}, "files[0].size"),
        (REQUIREMENTS, {"files": [{**GOOD_FILE, "size": True}]}, "files[0].size"),
        (REQUIREMENTS, {"files": [{**GOOD_FILE, "sha": 12}]}, "files[0].sha"),
        (REQUIREMENTS, {"files": [{**GOOD_FILE, "sha": "zz"}]}, "files[0].sha"),
        (REQUIREMENTS, {"files": [{"sha": "a" * 64, "size": 1}]}, "files[0].path"),
        (REQUIREMENTS, {"files": [None]}, "files[0]"),
        (CHECKOUT, {"files": [GOOD_FILE]}, "checkoutPath"),
        (CHECKOUT, {"files": [GOOD_FILE], "checkoutPath": 5}, "checkoutPath"),
        (CHECKOUT, {"files": [{**GOOD_FILE, "path": ["a"]}], "checkoutPath": "x"}, "files[0].path"),
        (REQUIREMENTS, [GOOD_FILE], "body"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_wrong_types_get_400_naming_the_field(manager, endpoint, body, field):
    resp = requests.post(manager.url + endpoint, json=body, timeout=10)
    assert resp.status_code == 400, resp.text
    message = json_error(resp)["message"]
    if field != "body":
        assert field in message, message
    assert not any(manager.jobs.iterdir())
    assert_serving(manager.url)


def test_unknown_fields_are_ignored(manager):
    data = b"unknown fields are fine\n"
    spec = {"sha": sha256(data), "size": len(data), "path": "a.txt", "colour": "blue"}
    resp = requests.post(
        manager.url + REQUIREMENTS, json={"files": [spec], "priority": 99}, timeout=10
    )
    assert resp.status_code == 200, resp.text
    assert [f["status"] for f in resp.json()["files"]] == ["unknown"]
    assert upload(manager.url, data).status_code == 204
    resp = requests.post(
        manager.url + CHECKOUT,
        json={"files": [spec], "checkoutPath": "job", "extra": {"x": 1}},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    assert (manager.jobs / resp.json()["checkoutPath"] / "a.txt").read_bytes() == data


@pytest.mark.parametrize(
    "endpoint",
    [REQUIREMENTS, CHECKOUT, "checkout/requirements", "checkout/create/job"],
    ids=["requirements", "checkout", "legacy-requirements", "legacy-checkout"],
)
def test_stalled_request_body_times_out(manager_factory, endpoint):
    manager = manager_factory(body_read_timeout=1.0)
    sock = connect(manager.url, timeout=20)
    head = request_head(manager.url, "POST", "/" + endpoint, {"Content-Length": "1000"})
    sock.sendall(head + b'{"files": [')
    answer = read_response(sock)  # and then say nothing more
    sock.close()
    assert answer is not None and answer[0] == 408, answer
    assert list(manager.jobs.iterdir()) == []
    assert_serving(manager.url)


def test_disconnect_mid_request_body_is_not_a_server_error(manager, caplog):
    for endpoint in (REQUIREMENTS, CHECKOUT, "checkout/requirements"):
        sock = connect(manager.url)
        head = request_head(manager.url, "POST", "/" + endpoint, {"Content-Length": "100000"})
        sock.sendall(head + b'{"files": [' + b" " * 5000)
        time.sleep(0.05)
        abort(sock)
    assert_serving(manager.url)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
