"""Guarantee 12: no client can stall the server, fill its log or store what it did not send.

Each test attacks a real server over loopback the way issue 15's attack run did, then
checks that the server still answers a legitimate client, logs each event as one
escaped line without a traceback, and stores nothing it should not.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import logging
import os
import resource
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
import requests
from helpers import access_messages, blobs, sha256, temps, wait_until
from reliability_helpers import ManagerProcess
from reliability_support import (
    abort,
    assert_serving,
    connect,
    read_response,
    request_head,
    send_quietly,
)

from manager_plugin.config import Config
from manager_plugin.http.descriptors import default_max_connections, listen_backlog
from manager_plugin.http.server import listening_fds, start_site

REQUIREMENTS = "api/v3/shaman/checkout/requirements"
CHECKOUT = "api/v3/shaman/checkout/create"
BATCH = "api/v3/shaman/batch-upload"

SPLICED = 17 * 1024 * 1024  # over bodies.SPLICE_MIN_SIZE: the body is spliced from the socket


def limit_fds(soft: int, hard: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return apply


def answered_within_a_second(url: str) -> None:
    """A legitimate client gets its answer, and not after a stall."""
    started = time.monotonic()
    resp = requests.get(url + "api/v3/version", timeout=10)
    elapsed = time.monotonic() - started
    assert resp.status_code == 200
    assert elapsed < 1.0, f"answered after {elapsed:.1f} s"


def tracebacks(lines: list[str]) -> list[str]:
    return [line for line in lines if "Traceback" in line]


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return access_messages(caplog)


def open_idle(url: str, count: int) -> list[socket.socket]:
    """`count` connections that never send anything."""
    return [connect(url, timeout=5) for _ in range(count)]


def answers_of(socks: list[socket.socket]) -> list[int | None]:
    """The status the server sent on each idle connection: None for nothing yet (still
    open), 0 for closed without a word, -1 for reset."""
    time.sleep(0.5)  # what the server sends is there by now
    out: list[int | None] = []
    for sock in socks:
        sock.setblocking(False)
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            out.append(None)
            continue
        except ConnectionResetError:
            out.append(-1)
            continue
        out.append(int(data.split(b" ", 2)[1]) if data else 0)
    return out


# ---- connections and descriptors -----------------------------------------------------


def test_serve_raises_the_descriptor_limit_to_the_hard_limit(tmp_path):
    manager = ManagerProcess(tmp_path / "storage", preexec_fn=limit_fds(256, 512)).start()
    try:
        limits = Path(f"/proc/{manager.proc.pid}/limits").read_text()
        line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
        assert line.split()[3:5] == ["512", "512"], line
    finally:
        manager.stop()


def test_idle_crowd_beyond_the_cap_gets_503_and_a_client_is_still_answered(tmp_path):
    """300 idle connections against a server at a 256-descriptor limit: the server
    keeps at most its cap open, tells the others 503, and answers a real client."""
    manager = ManagerProcess(tmp_path / "storage", preexec_fn=limit_fds(256, 256)).start()
    cap = default_max_connections(256)
    idle: list[socket.socket] = []
    try:
        idle = open_idle(manager.url, 300)
        answered_within_a_second(manager.url)
        assert_serving(manager.url)
        statuses = answers_of(idle)
        still_open = statuses.count(None)
        assert still_open <= cap, (still_open, cap)
        assert set(statuses) <= {None, 503}, statuses
        assert statuses.count(503) >= len(idle) - cap
    finally:
        for sock in idle:
            sock.close()
        manager.stop()
    assert tracebacks(manager.lines) == []
    # Hundreds of closed connections, but the log says so in a line or two.
    overload = [line for line in manager.lines if "connection cap" in line]
    assert 1 <= len(overload) <= 2, overload


def test_busy_connections_at_the_cap_leave_newcomers_a_503(manager_factory):
    """When every connection is in the middle of a request, a new one is refused
    at once with 503 (not left hanging)."""
    manager = manager_factory(max_connections=3, body_read_timeout=30.0)
    busy = []
    for _ in range(3):
        sock = connect(manager.url)
        sock.sendall(
            request_head(manager.url, "POST", "/" + REQUIREMENTS, {"Content-Length": "100"})
        )
        busy.append(sock)
    time.sleep(0.2)  # let the server parse their heads: now they are busy
    try:
        newcomer = connect(manager.url)
        newcomer.sendall(request_head(manager.url, "GET", "/api/v3/version"))
        answer = read_response(newcomer)
        newcomer.close()
        assert answer is not None and answer[0] == 503, answer
        assert json.loads(answer[2])["code"] == 503
        assert answer[1].get("retry-after") == "1"
    finally:
        for sock in busy:
            sock.close()
    assert wait_until(lambda: requests.get(manager.url + "api/v3/version", timeout=5).ok)


def test_running_out_of_descriptors_is_logged_once_per_interval(tmp_path):
    """A cap set above what the descriptor limit holds: accept() fails for lack of
    descriptors, and the log gets a line, not a traceback per attempt."""
    manager = ManagerProcess(
        tmp_path / "storage",
        preexec_fn=limit_fds(128, 128),
        extra_config={"shaman": {"enabled": True, "maxConnections": 1000}},
    ).start()
    idle: list[socket.socket] = []
    try:
        idle = open_idle(manager.url, 200)
        time.sleep(3)  # asyncio retries accept() every second
    finally:
        for sock in idle:
            sock.close()
        serving_again = wait_until(
            lambda: requests.get(manager.url + "api/v3/version", timeout=5).ok
        )
        manager.stop()
    assert serving_again
    assert tracebacks(manager.lines) == []
    exhausted = [line for line in manager.lines if "cannot accept connections" in line]
    assert len(exhausted) == 1, manager.lines[-20:]
    assert "Too many open files" in exhausted[0]


def test_header_trickle_is_closed(manager_factory):
    """Request headers one byte at a time, each well within any idle timeout: the
    connection is closed at the header deadline, not kept forever."""
    manager = manager_factory(header_timeout=1.0)
    sock = connect(manager.url, timeout=5)
    head = request_head(manager.url, "GET", "/api/v3/version", {"X-Slow": "x" * 200})
    started = time.monotonic()
    closed = False
    for byte in head[:-2]:  # never the final blank line
        if not send_quietly(sock, bytes([byte])):
            closed = True
            break
        sock.settimeout(0.1)
        try:
            if sock.recv(1) == b"":
                closed = True
                break
        except TimeoutError:
            pass
        except ConnectionResetError:
            closed = True
            break
    sock.close()
    assert closed, f"still open after {time.monotonic() - started:.0f} s of trickling"
    answered_within_a_second(manager.url)


def test_connection_that_says_nothing_is_closed_at_the_header_deadline(manager_factory):
    manager = manager_factory(header_timeout=1.0)
    sock = connect(manager.url, timeout=10)
    assert read_response(sock) is None  # closed, without an answer
    sock.close()
    answered_within_a_second(manager.url)


def test_header_deadline_spares_an_idle_kept_alive_connection(manager_factory):
    """Idle between two requests is not slow headers: a kept-alive connection quiet
    for longer than the deadline still gets its next answer, and only a next request
    whose headers then trickle is closed."""
    manager = manager_factory(header_timeout=1.0)
    sock = connect(manager.url, timeout=10)
    head = request_head(manager.url, "GET", "/api/v3/version")
    sock.sendall(head)
    assert read_one_response(sock) == 200
    time.sleep(1.5)
    sock.sendall(head)
    assert read_one_response(sock) == 200
    sock.sendall(head[:10])  # a next request starts, and stops
    sock.settimeout(10)
    assert sock.recv(100) == b""  # closed at its header deadline
    sock.close()


def read_one_response(sock: socket.socket) -> int:
    """The status of one answer on a kept-alive connection, its body read to the end."""
    sock.settimeout(10)
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    head, _, body = buf.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split(b" ", 2)[1])


def trickle(sock: socket.socket, data: bytes, interval: float, give_up: float) -> None:
    """Send `data` a byte at a time until the server answers or closes."""
    deadline = time.monotonic() + give_up
    for byte in data:
        if time.monotonic() > deadline or not send_quietly(sock, bytes([byte])):
            return
        sock.settimeout(interval)
        try:
            sock.recv(1, socket.MSG_PEEK)
            return  # an answer is there, or the connection was closed
        except TimeoutError:
            continue
        except ConnectionResetError:
            return


@pytest.mark.parametrize(
    "kind", ["upload", "spliced upload", "requirements", "batch", "legacy upload"]
)
def test_body_trickle_gets_408(manager_factory, kind):
    """A body sent a byte every 0.2 s never trips the idle timeout (1 s), but falls
    below the rate floor once the grace period is over: 408."""
    manager = manager_factory(body_read_timeout=1.0, body_min_rate=1000.0)
    size = SPLICED if kind == "spliced upload" else 64 * 1024
    data = os.urandom(size)
    if kind == "batch":
        # Without a newline the first record's header never ends: a newline among the
        # bytes sent before the rate floor trips would end it, and get a (right) 400.
        data = data.replace(b"\n", b" ")
    path = {
        "upload": f"/api/v3/shaman/files/{sha256(data)}/{size}",
        "spliced upload": f"/api/v3/shaman/files/{sha256(data)}/{size}",
        "requirements": "/" + REQUIREMENTS,
        "batch": "/" + BATCH,
        "legacy upload": f"/files/{sha256(data)}/{size}",
    }[kind]
    sock = connect(manager.url, timeout=30)
    sock.sendall(request_head(manager.url, "POST", path, {"Content-Length": str(size)}))
    started = time.monotonic()
    trickle(sock, data, interval=0.2, give_up=20.0)
    sock.settimeout(10)
    answer = read_response(sock)
    sock.close()
    assert answer is not None and answer[0] == 408, answer
    assert time.monotonic() - started < 20.0
    assert b"too slowly" in answer[2], answer[2]
    assert wait_until(lambda: not temps(manager.store)), temps(manager.store)
    assert blobs(manager.store) == []
    assert_serving(manager.url)


# ---- big JSON ------------------------------------------------------------------------


def test_big_requirements_request_does_not_stall_other_clients(tmp_path):
    """A 60 MiB requirements request (450k files) is parsed, checked and answered
    off the event loop: a small request meanwhile is answered within a second."""
    manager = ManagerProcess(tmp_path / "storage").start()
    try:
        files = [
            {
                "sha": hashlib.sha256(b"%d" % i).hexdigest(),
                "size": i,
                "path": f"t/s{i % 97}/f{i}.png",
            }
            for i in range(450_000)
        ]
        body = json.dumps({"files": files}).encode()
        del files
        result: list[requests.Response] = []
        big = threading.Thread(
            target=lambda: result.append(
                requests.post(
                    manager.url + REQUIREMENTS,
                    data=body,
                    headers={"Content-Type": "application/json"},
                    timeout=120,
                )
            )
        )
        big.start()
        worst = 0.0
        session = requests.Session()
        while big.is_alive():
            started = time.monotonic()
            assert session.get(manager.url + "api/v3/version", timeout=30).status_code == 200
            worst = max(worst, time.monotonic() - started)
            time.sleep(0.02)
        big.join()
        assert result[0].status_code == 200, result[0].text[:200]
        answer = result[0].json()["files"]
        assert len(answer) == 450_000
        assert {f["status"] for f in answer} == {"unknown"}
        assert answer[-1]["path"] == "t/s" + str(449_999 % 97) + "/f449999.png"
        assert worst < 1.0, f"a small request waited {worst:.1f} s"
    finally:
        manager.stop()
    assert tracebacks(manager.lines) == []


@pytest.mark.parametrize("depth", [100_000, 400_000], ids=["on the loop", "in a thread"])
@pytest.mark.parametrize("endpoint", [REQUIREMENTS, CHECKOUT])
def test_deeply_nested_json_gets_400(manager, endpoint, depth):
    resp = requests.post(
        manager.url + endpoint,
        data=b"[" * depth,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert resp.status_code == 400, resp.text[:200]
    assert "nested too deeply" in resp.json()["message"]
    assert_serving(manager.url)


# ---- compressed bodies ---------------------------------------------------------------


@pytest.mark.parametrize(
    "kind", ["upload", "legacy upload", "batch", "requirements", "legacy requirements"]
)
@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "identity, gzip"])
def test_compressed_body_gets_415_and_nothing_is_stored(manager, kind, encoding):
    data = b"\0" * (4 * 1024 * 1024)  # 4 MiB of zeros: 4 KiB gzipped
    wire = gzip.compress(data)
    sha = sha256(data)
    url = {
        "upload": f"{manager.url}api/v3/shaman/files/{sha}/{len(data)}",
        "legacy upload": f"{manager.url}files/{sha}/{len(data)}",
        "batch": manager.url + BATCH,
        "requirements": manager.url + REQUIREMENTS,
        "legacy requirements": manager.url + "checkout/requirements",
    }[kind]
    body = f"{sha} {len(data)}\n".encode() + wire if kind == "batch" else wire
    if "requirements" in kind:
        spec = {"sha": sha, "size": len(data), "path": "a.bin"}
        line = f"{sha} {len(data)} a.bin\n".encode()
        body = gzip.compress(
            json.dumps({"files": [spec]}).encode() if kind == "requirements" else line
        )
    resp = requests.post(url, data=body, headers={"Content-Encoding": encoding}, timeout=30)
    assert resp.status_code == 415, resp.text[:200]
    assert "Content-Encoding" in resp.text
    assert blobs(manager.store) == []
    assert wait_until(lambda: not temps(manager.store))
    assert_serving(manager.url)


def test_identity_encoding_is_accepted(manager):
    data = os.urandom(1000)
    resp = requests.post(
        f"{manager.url}api/v3/shaman/files/{sha256(data)}/{len(data)}",
        data=data,
        headers={"Content-Encoding": "identity"},
        timeout=30,
    )
    assert resp.status_code == 204, resp.text


# ---- log forging ---------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "s3cret"], ids=["open", "token"])
def test_newline_in_a_url_is_one_escaped_log_line(tmp_path, token):
    """`%0a` in a path (a 404 without token, a 401 with one) must not start a line of
    the sender's choosing in the server's log."""
    shaman: dict[str, object] = {"enabled": True}
    if token:
        shaman["token"] = token
    manager = ManagerProcess(tmp_path / "storage", extra_config={"shaman": shaman}).start()
    try:
        forged = "2026-01-01 00:00:00,000 INFO manager_plugin: FORGED admin logged in"
        for path in (
            "api/v3/nothing%0a" + forged.replace(" ", "%20"),
            "api/v3/shaman/files/%0d%0a" + forged.replace(" ", "%20") + "/1",
            "x%e2%80%a8" + "FORGED%1b[31m",
        ):
            requests.get(manager.url + path, timeout=10)
        requests.post(
            f"{manager.url}files/{'a' * 64}/3",
            data=b"abc",
            headers={"X-Shaman-Original-Filename": "a\x1bb\x7fFORGED.blend"},
            timeout=10,
        )
        # A checkout path may hold characters that end a line for some readers; the
        # checkout's own log line must still be one line.
        resp = requests.post(
            manager.url + CHECKOUT,
            json={"files": [], "checkoutPath": "job\u2028FORGED\x85line"},
            headers={"Authorization": f"Bearer {token}"} if token else {},
            timeout=10,
        )
        assert resp.status_code == 200, resp.text
        assert wait_until(lambda: sum("FORGED" in line for line in manager.lines) >= 5)
    finally:
        manager.stop()
    assert [line for line in manager.lines if line.startswith(("2026-01-01", "FORGED"))] == []
    forged_lines = [line for line in manager.lines if "FORGED" in line]
    for line in forged_lines:
        assert line.isprintable(), line
    assert any("\\x0a2026-01-01" in line for line in forged_lines), forged_lines
    assert any("\\x0d\\x0a2026-01-01" in line for line in forged_lines), forged_lines
    assert any("\\u2028FORGED\\x1b[31m" in line for line in forged_lines), forged_lines
    assert any("a\\x1bb\\x7fFORGED.blend" in line for line in forged_lines), forged_lines
    assert any("job\\u2028FORGED\\x85line" in line for line in forged_lines), forged_lines


# ---- client disconnects --------------------------------------------------------------


@pytest.mark.parametrize(
    "size", [40 * 1024, 256 * 1024, SPLICED], ids=["fastlane", "aiohttp", "spliced"]
)
@pytest.mark.parametrize("how", ["close", "reset"])
def test_disconnect_mid_upload_is_logged_as_a_disconnect(manager, caplog, size, how):
    caplog.set_level(logging.INFO)
    data = os.urandom(size)
    sent = size // 2 + 12345
    sock = connect(manager.url)
    head = request_head(
        manager.url,
        "POST",
        f"/api/v3/shaman/files/{sha256(data)}/{size}",
        {"Content-Length": str(size)},
    )
    sock.sendall(head + data[:sent])
    if how == "close":
        sock.close()  # everything sent arrives before the end of the connection
    else:
        time.sleep(0.3)  # let the server read what was sent, then reset
        abort(sock)
    assert wait_until(lambda: any(" 499 " in line for line in access_lines(caplog)))
    line = next(line for line in access_lines(caplog) if " 499 " in line)
    assert f"client disconnected after {sent} of {size} body bytes" in line, line
    assert f" in={sent} " in line, line
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert not any(r.exc_info for r in caplog.records)
    assert " 417 " not in line and "Traceback" not in caplog.text
    assert wait_until(lambda: not temps(manager.store)), temps(manager.store)
    assert blobs(manager.store) == []
    assert_serving(manager.url)


def accept_queue_depth(fd: int) -> int:
    """The kernel's accept queue size of listening socket `fd` (Linux reports it in
    TCP_INFO's tcpi_sacked field for a listener)."""
    dup = socket.socket(fileno=os.dup(fd))
    try:
        info = dup.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    finally:
        dup.close()
    return struct.unpack_from("I", info, 28)[0]


def test_the_kernel_queues_a_crowd_but_asyncio_accepts_in_batches(tmp_path):
    """The listener's kernel queue is the full somaxconn (a crowd's SYNs are not
    dropped), while asyncio's per-wake-up accept batch stays small: with 4,096 as that
    batch, a server out of descriptors scheduled thousands of retries per wake-up."""

    async def depths() -> list[int]:
        config = Config(listen="127.0.0.1:0", storage_path=tmp_path / "storage")
        runner, _url = await start_site(config)
        try:
            (site,) = runner.sites
            server = site._server
            assert server is not None and server._backlog <= 128  # type: ignore[attr-defined]
            return [accept_queue_depth(fd) for fd in listening_fds(site)]  # type: ignore[arg-type]
        finally:
            await runner.cleanup()

    assert asyncio.run(depths()) == [listen_backlog()]
