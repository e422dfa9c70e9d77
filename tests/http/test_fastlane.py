"""The fast lane (manager_plugin.http.fastlane): Flamenco's per-file requests answered
without aiohttp's request machinery, alike in every byte but the Date, and everything
it must not take left to aiohttp."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import socket
import time
from collections.abc import Iterator

import pytest
import urllib3
from helpers import (
    access_messages,
    blobs,
    clear_access_log,
    pending_path,
    sha256,
    stored_files,
    temps,
    turn_lane_off,
    wait_until,
)
from reliability_support import (
    Answer,
    connect,
    exchange,
    read_response,
    request_head,
    status_request,
    upload_request,
)

from manager_plugin.http import fastlane

API = "/api/v3/shaman"


def first_request(base: str) -> bytes:
    """A request the lane never takes, sent first on a connection: the first request may
    come before aiohttp waits for one (then the lane is not offered it)."""
    return request_head(base, "GET", "/api/v3/version")


@contextlib.contextmanager
def waiting_connection(base: str) -> Iterator[socket.socket]:
    """A connection whose first request (one the lane never takes) has been answered:
    aiohttp now waits for the next one, so the lane is offered it."""
    sock = connect(base)
    try:
        sock.sendall(first_request(base))
        assert read_response(sock) is not None
        yield sock
    finally:
        sock.close()


def comparable(answers: list[Answer]) -> list[Answer]:
    return [
        (status, {k: v for k, v in headers.items() if k != "date"}, body)
        for status, headers, body in answers
    ]


def log_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Access lines without their milliseconds."""
    return [re.sub(r" [0-9.]+ms", " Nms", line) for line in access_messages(caplog)]


def scenario(base: str, name: str) -> list[bytes]:
    """The requests of one scenario: the same bytes every time it is asked for."""
    rng = random.Random(name)
    a, b = rng.randbytes(4096), rng.randbytes(100)
    named = {
        "X-Shaman-Original-Filename": "=?utf-8?q?textures=2Fbrick=5F01=2Epng?=",
        "X-Shaman-Can-Defer-Upload": "True",
    }
    other = sha256(b"other")
    return {
        "upload twice": [
            status_request(base, a),
            upload_request(base, a),
            upload_request(base, a),
            status_request(base, a),
        ],
        "named, may defer": [upload_request(base, b, **named), status_request(base, b)],
        "wrong size": [upload_request(base, a, size=4095)],
        "wrong checksum": [
            request_head(base, "POST", f"{API}/files/{other}/{len(a)}", {"Content-Length": "4096"})
            + a
        ],
        "keep-alive, empty body": [
            status_request(base, b"", Connection="keep-alive"),
            upload_request(base, b"", Connection="keep-alive"),
        ],
    }[name]


SCENARIOS = [
    "upload twice",
    "named, may defer",
    "wrong size",
    "wrong checksum",
    "keep-alive, empty body",
]


@pytest.mark.parametrize("name", SCENARIOS)
def test_the_lane_answers_as_aiohttp_does(manager_factory, monkeypatch, caplog, lane_log, name):
    """Same answers (but the Date), same access lines (but the ms), same store."""
    caplog.set_level(logging.INFO)
    runs = {}
    for way in ("lane", "aiohttp"):
        with monkeypatch.context() as patch:
            if way == "aiohttp":
                turn_lane_off(patch)
            manager = manager_factory()
            clear_access_log(caplog)
            requests = [status_request(manager.url, b"first"), *scenario(manager.url, name)]
            answers = exchange(manager.url, requests, pause=0.02)
            store = manager.store
            files = sorted(p.relative_to(store) for p in stored_files(store))
            runs[way] = (comparable(answers), log_lines(caplog), files)
        if way == "lane":
            assert lane_log.count(True) >= len(requests) - 1 and False not in lane_log, lane_log
    assert runs["lane"][0] == runs["aiohttp"][0]
    assert runs["lane"][1:] == runs["aiohttp"][1:]


def test_a_lane_upload_is_a_pending_blob_made_durable_by_its_checkout(manager, lane_log):
    data = os.urandom(4096)
    checkout = (
        b'{"checkoutPath": "job/one", "files": [{"sha": "%s", "size": 4096, "path": "a.png"}]}'
        % sha256(data).encode()
    )
    answers = exchange(
        manager.url,
        [
            first_request(manager.url),
            upload_request(manager.url, data),
            request_head(
                manager.url,
                "POST",
                f"{API}/checkout/create",
                {"Content-Type": "application/json", "Content-Length": str(len(checkout))},
            )
            + checkout,
        ],
    )
    assert [a[0] for a in answers] == [200, 204, 200]
    assert lane_log[-2:] == [True, False]  # the checkout is aiohttp's
    link = manager.jobs / "job" / "one" / "a.png"
    assert link.read_bytes() == data
    assert not pending_path(manager.store, data).exists()  # made durable: a .blob now


@pytest.mark.parametrize(
    "name, headers, expected",
    [
        ("chunked", {"Transfer-Encoding": "chunked"}, 204),
        ("expect", {"Expect": "100-continue"}, 204),
        ("gzip", {"Content-Encoding": "gzip"}, 415),
        ("close", {"Connection": "close"}, 204),
        ("folded name", {"X-Shaman-Original-Filename": "=?utf-8?q?a?=\n =?utf-8?q?b?="}, 204),
        ("unknown charset", {"X-Shaman-Original-Filename": "=?koi9?q?a?="}, 400),
        ("two lengths", {"Content-Length": "4096", "content-length": "4096"}, 400),
        ("non-ASCII value", {"X-Shaman-Original-Filename": "caf\xe9.png"}, 204),
    ],
)
def test_the_lane_leaves_unusual_uploads_to_aiohttp(manager, lane_log, name, headers, expected):
    data = os.urandom(4096)
    body = data
    fields = {"Content-Length": str(len(data)), **headers}
    if name == "chunked":
        del fields["Content-Length"]
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)
    if name == "two lengths":
        fields = {}
        body = b"Content-Length: 4096\r\n" + b"content-length: 4096\r\n"
    head = request_head(manager.url, "POST", f"{API}/files/{sha256(data)}/{len(data)}", fields)
    if name == "two lengths":
        head = head[:-2] + body + b"\r\n"
        body = data
    with waiting_connection(manager.url) as sock:
        if name == "expect":
            sock.sendall(head)
            assert read_response(sock)[0] == 100  # type: ignore[index]
            sock.sendall(body)
        else:
            sock.sendall(head + body)
        answer = read_response(sock)
    assert answer is not None and answer[0] == expected, answer
    assert True not in lane_log, lane_log


@pytest.mark.parametrize(
    "settings, headers, expected",
    [
        ({"token": "s3cret"}, {}, 401),
        ({"token": "s3cret"}, {"Authorization": "Bearer wrong"}, 401),
        ({"token": "s3cret"}, {"Authorization": "Bearer s3cret"}, 204),
        ({"shaman_enabled": False}, {}, 503),
    ],
    ids=["no token", "wrong token", "right token", "disabled"],
)
def test_guards_hold_on_the_lane(manager_factory, lane_log, settings, headers, expected):
    manager = manager_factory(**settings)
    data = os.urandom(1000)
    first = first_request(manager.url)
    answers = exchange(manager.url, [first, upload_request(manager.url, data, **headers)])
    assert answers[1][0] == expected
    assert lane_log[-1:] == [expected == 204]
    if expected != 204:
        assert blobs(manager.store) == []


def test_requests_in_one_write_are_answered_in_order(manager, lane_log):
    a, b = os.urandom(300), os.urandom(400)
    exchange(manager.url, [upload_request(manager.url, a)])
    lane_log.clear()
    with waiting_connection(manager.url) as sock:
        pipelined = upload_request(manager.url, a) + status_request(manager.url, a)
        sock.sendall(pipelined + upload_request(manager.url, b, size=399))
        received = b""
        while received.count(b"HTTP/1.1 ") < 3 or not received.endswith(b'399"}'):
            received += sock.recv(65536)
    statuses = re.findall(rb"HTTP/1.1 (\d+) ", received)
    assert statuses == [b"208", b"200", b"417"], received
    assert b'{"status": "stored"}' in received
    assert True not in lane_log


def test_a_body_sent_apart_from_its_head_takes_the_lane(manager, lane_log):
    data = os.urandom(4096)
    request = upload_request(manager.url, data)
    with waiting_connection(manager.url) as sock:
        for piece in (request[:-4096], request[-4096:-1000], request[-1000:]):
            sock.sendall(piece)
            time.sleep(0.05)
        answer = read_response(sock)
    assert answer is not None and answer[0] == 204
    assert lane_log[-1:] == [True]
    assert pending_path(manager.store, data).read_bytes() == data


def test_a_body_that_stalls_goes_to_aiohttp_and_its_timeout(manager_factory, lane_log, caplog):
    caplog.set_level(logging.INFO)
    manager = manager_factory(body_read_timeout=1)
    data = os.urandom(4096)
    request = upload_request(manager.url, data)
    with waiting_connection(manager.url) as sock:
        sock.sendall(request[:-100])  # then nothing
        started = time.monotonic()
        answer = read_response(sock)
        waited = time.monotonic() - started
    assert answer is not None and answer[0] == 408, answer
    assert waited >= fastlane.HOLD_SECONDS  # held first, then aiohttp's own timeout
    assert True not in lane_log
    assert wait_until(lambda: not temps(manager.store))
    assert blobs(manager.store) == []


def test_urllib3_uploads_like_flamencos_add_on_take_the_lane(manager, lane_log):
    """Flamenco's add-on sends through urllib3, which (in 2.x) writes head and body apart."""
    files = [os.urandom(4096) for _ in range(20)]
    pool = urllib3.PoolManager()
    for data in files:
        url = f"{manager.url}{API.lstrip('/')}/files/{sha256(data)}/{len(data)}"
        assert pool.request("GET", url).json() == {"status": "unknown"}
        headers = {"Content-Type": "application/octet-stream", "X-Shaman-Can-Defer-Upload": "True"}
        assert pool.request("POST", url, body=data, headers=headers).status == 204
    assert lane_log.count(True) >= 38, lane_log  # all but the first request or so
    assert len(blobs(manager.store)) == 20


def test_an_idle_connection_is_closed_after_the_keep_alive_time(manager, lane_log, monkeypatch):
    real_init = fastlane._FastLaneHandler.__init__

    def short_keep_alive(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        real_init(self, *args, **kwargs)
        self._keepalive_timeout = 0.5

    monkeypatch.setattr(fastlane._FastLaneHandler, "__init__", short_keep_alive)
    data = os.urandom(100)
    sock = connect(manager.url)
    try:
        # Busy for three keep-alive periods: the connection stays open meanwhile.
        for _ in range(15):
            sock.sendall(status_request(manager.url, data))
            answer = read_response(sock)
            assert answer is not None and answer[0] == 200
            time.sleep(0.1)
        assert lane_log.count(True) >= 14
        time.sleep(1.5)  # idle: closed
        sock.settimeout(5)
        assert sock.recv(100) == b""
    finally:
        sock.close()


FAILURES = {
    # A pending write that fails with EIO (an upload), an lstat that does (a status GET).
    "POST": ("manager_plugin.store.pending.PendingBlobs.written_temp", upload_request),
    "GET": ("manager_plugin.store.pending.PendingBlobs.presence", status_request),
}


@pytest.mark.parametrize("method", FAILURES)
@pytest.mark.parametrize("way", ["lane", "aiohttp"])
def test_a_store_failure_is_a_500_logged_once(manager, lane_log, monkeypatch, caplog, method, way):
    target, make_request = FAILURES[method]
    data = os.urandom(100)
    first = first_request(manager.url)

    def broken(*args: object, **kwargs: object) -> object:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(target, broken)
    if way == "aiohttp":
        turn_lane_off(monkeypatch)
    answers = exchange(manager.url, [first, make_request(manager.url, data)])
    assert answers[1][0] == 500
    assert answers[1][2] == b'{"code": 500, "message": "internal server error; see the server log"}'
    assert lane_log[-1:] == [True] if way == "lane" else lane_log == []
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and f"internal error in {method}" in errors[0].getMessage()
    assert errors[0].exc_info is not None


def test_a_client_gone_mid_body_on_the_lane_is_logged_and_leaves_nothing(manager, caplog):
    caplog.set_level(logging.INFO)
    data = os.urandom(4096)
    with waiting_connection(manager.url) as sock:
        sock.sendall(upload_request(manager.url, data)[:-1000])
        time.sleep(0.1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    assert wait_until(lambda: any(" 499 " in line for line in access_messages(caplog)))
    line = next(line for line in access_messages(caplog) if " 499 " in line)
    assert "client disconnected after 3096 of 4096 body bytes" in line
    assert blobs(manager.store) == [] and temps(manager.store) == []
