"""Gateway mode as a proxy: what is not Shaman reaches the stand-in Flamenco Manager unchanged.

Real gateway, real stand-in, real HTTP and WebSockets over loopback (aiohttp's client).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import pytest
import requests
from gateway_helpers import GatewayFactory, RunningGateway
from standin_probes import LIMITED_BODY, probe_bytes, probes

MiB = 1024 * 1024
T = TypeVar("T")


def run(session_user: Callable[[aiohttp.ClientSession], Awaitable[T]]) -> T:
    async def main() -> T:
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
            return await session_user(session)

    return asyncio.run(main())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- every method, path, query, header and body arrives as sent -----------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_any_method_reaches_the_upstream_unchanged(gateway: RunningGateway, method: str):
    body = os.urandom(3000) if method not in ("GET", "OPTIONS") else b""
    path = "probe/echo/some/where%20else/%C3%A9?b=2&a=%2F&a=&x"
    headers = {
        "X-Custom": "value, with a comma",
        "Authorization": "Bearer abc",
        "Cookie": "session=xyz",
        "User-Agent": "probe-client/1.0",
    }
    answer = requests.request(method, gateway.api(path), data=body or None, headers=headers)
    assert answer.status_code == 200
    echo = answer.json()
    assert echo["method"] == method
    assert echo["raw_path"] == "/" + path
    received = dict(echo["headers"])
    for name, value in headers.items():
        assert received[name] == value
    assert received["Host"] == gateway.url.split("/")[2]  # the client's Host, not the upstream's
    assert received["X-Forwarded-For"] == "127.0.0.1"
    assert "Accept-Encoding" in received  # the client's own (requests sends it) ...
    assert received["Accept-Encoding"] == answer.request.headers["Accept-Encoding"]
    assert echo["body_size"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    # ... and the answer's headers come back too.
    assert answer.headers["X-Probe"] == "echo"
    assert answer.headers["Set-Cookie"] == "probe=1; Path=/"


def test_hop_by_hop_headers_stay_on_their_leg(gateway: RunningGateway):
    headers = {"Connection": "keep-alive, X-Private", "X-Private": "leg only", "TE": "trailers"}
    echo = requests.get(gateway.api("probe/echo/hop"), headers=headers).json()
    received = {name.lower() for name, _ in echo["headers"]}
    assert "x-private" not in received
    assert "te" not in received


def test_a_body_sent_after_100_continue_reaches_the_upstream(gateway: RunningGateway):
    """curl sends `Expect: 100-continue` before bodies over 1 MiB; the gateway answers it."""
    body = os.urandom(2 * MiB)

    async def go(session: aiohttp.ClientSession) -> dict[str, Any]:
        url = gateway.api("probe/echo/expect")
        async with session.post(url, data=body, expect100=True) as answer:
            return await answer.json()

    echo = run(go)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert "expect" not in {name.lower() for name, _ in echo["headers"]}


def test_the_client_gets_no_headers_it_did_not_send(gateway: RunningGateway):
    async def go(session: aiohttp.ClientSession) -> dict[str, Any]:
        skip = ("User-Agent", "Accept", "Accept-Encoding")
        async with session.get(gateway.api("probe/echo/bare"), skip_auto_headers=skip) as answer:
            return await answer.json()

    received = {name.lower() for name, _ in run(go)["headers"]}
    assert not received & {"user-agent", "accept", "accept-encoding", "content-type"}


def test_a_50_MiB_body_streams_through_without_being_held(gateway: RunningGateway):
    """The upstream has the first bytes while the client still holds back the rest: the
    gateway cannot be collecting the body before forwarding it."""
    body = probe_bytes(50 * MiB)
    started = probes(gateway.flamenco).echo_started

    async def chunks() -> AsyncIterator[bytes]:
        yield body[:MiB]
        arrived = await asyncio.to_thread(started.wait, 30)
        assert arrived, "the upstream got nothing of the body while the client held back"
        for start in range(MiB, len(body), MiB):
            yield body[start : start + MiB]

    async def go(session: aiohttp.ClientSession) -> dict[str, Any]:
        async with session.post(gateway.api("probe/echo/upload"), data=chunks()) as answer:
            assert answer.status == 200
            return await answer.json()

    echo = run(go)
    assert echo["body_size"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert ("Transfer-Encoding", "chunked") in [tuple(h) for h in echo["headers"]]


def test_a_body_with_content_length_keeps_it(gateway: RunningGateway):
    body = os.urandom(20 * MiB)
    echo = requests.put(gateway.api("probe/echo/sized"), data=body).json()
    assert dict(echo["headers"])["Content-Length"] == str(len(body))
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_a_50_MiB_download_streams_back_whole(gateway: RunningGateway):
    size = 50 * MiB
    with requests.get(gateway.api(f"probe/download/{size}"), stream=True) as answer:
        assert answer.status_code == 200
        assert answer.headers["Content-Length"] == str(size)
        digest = hashlib.sha256()
        for chunk in answer.iter_content(MiB):
            digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(probe_bytes(size)).hexdigest()


def test_head_gets_the_upstreams_head(gateway: RunningGateway):
    answer = requests.head(gateway.api(f"probe/download/{5 * MiB}"))
    assert answer.status_code == 200
    assert answer.headers["Content-Length"] == str(5 * MiB)
    assert requests.get(gateway.api("api/v3/version")).status_code == 200


def test_status_codes_and_error_bodies_are_the_upstreams(gateway: RunningGateway):
    answer = requests.get(gateway.api("api/v3/jobs/not-a-uuid"))
    assert (answer.status_code, answer.json()) == (
        400,
        {"code": 400, "message": "job ID not valid"},
    )
    answer = requests.get(gateway.api("no/such/page"))
    assert (answer.status_code, answer.json()) == (404, {"message": "Not Found"})


def test_version_and_configuration_are_the_upstreams(gateway: RunningGateway):
    for path in (
        "api/v3/version",
        "api/v3/configuration",
        "api/v3/configuration/shared-storage/users/linux",
        "api/v3/jobs/types",
    ):
        through = requests.get(gateway.api(path))
        direct = requests.get(gateway.flamenco.api(path))
        assert through.status_code == 200
        assert through.json() == direct.json()
    assert requests.get(gateway.api("api/v3/version")).json()["shortversion"] == "3.9"
    storage = requests.get(gateway.api("api/v3/configuration/shared-storage/users/linux")).json()
    assert storage["location"] == str(gateway.storage / "jobs")


def test_shaman_requests_are_served_by_the_gateway_itself(gateway: RunningGateway):
    data = os.urandom(5000)
    sha = hashlib.sha256(data).hexdigest()
    files = [{"sha": sha, "size": len(data), "path": "scene.blend"}]
    shaman = gateway.api("api/v3/shaman/")
    needed = requests.post(shaman + "checkout/requirements", json={"files": files})
    assert needed.json()["files"][0]["status"] == "unknown"
    stored = requests.post(shaman + f"files/{sha}/{len(data)}", data=data)
    assert stored.status_code == 204  # ours; Flamenco's Go server answers 200
    made = requests.post(shaman + "checkout/create", json={"files": files, "checkoutPath": "a/b"})
    assert made.json() == {"checkoutPath": "a/b"}
    assert (gateway.storage / "jobs/a/b/scene.blend").read_bytes() == data
    # The batch extension is ours too (Flamenco has none).
    assert requests.post(shaman + "batch-upload", data=b"").status_code != 404
    assert gateway.flamenco.shaman_requests() == []


# --- WebSockets --------------------------------------------------------------------------------


def test_a_websocket_relays_both_ways_and_passes_the_clients_close_on(gateway: RunningGateway):
    async def go(session: aiohttp.ClientSession) -> tuple[Any, ...]:
        url = gateway.api("socket.io/?EIO=4&transport=websocket")
        origin = gateway.url.rstrip("/")  # what a browser showing the web UI sends
        async with session.ws_connect(url, protocols=("probe-v1",), origin=origin) as ws:
            await ws.send_str("2probe")
            text = await ws.receive_str(timeout=10)
            await ws.send_bytes(b"\x00\x01binary")
            data = await ws.receive_bytes(timeout=10)
            protocol = ws.protocol
            await ws.close(code=4001, message=b"bye")
            answered_with = ws.close_code
        return text, data, protocol, answered_with

    assert run(go) == ("2probe", b"\x00\x01binary", "probe-v1", 4001)
    log = probes(gateway.flamenco)
    assert log.ws_messages == ["2probe", b"\x00\x01binary"]
    # Host and Origin as the browser sent them (a same-origin check upstream passes).
    (handshake,) = log.ws_handshakes
    assert handshake["Host"] == gateway.url.split("/")[2]
    assert handshake["Origin"] == gateway.url.rstrip("/")
    wait_for(lambda: log.ws_closed_with == [4001])


def test_a_websocket_closed_by_the_upstream_closes_the_clients(gateway: RunningGateway):
    async def go(session: aiohttp.ClientSession) -> tuple[Any, ...]:
        async with session.ws_connect(gateway.api("socket.io/")) as ws:
            await ws.send_str("close:4002")
            msg = await ws.receive(timeout=10)
            return msg.type, ws.close_code

    assert run(go) == (aiohttp.WSMsgType.CLOSE, 4002)


def test_a_websocket_whose_upstream_dies_is_closed_as_going_away(gateway: RunningGateway):
    async def go(session: aiohttp.ClientSession) -> tuple[Any, ...]:
        async with session.ws_connect(gateway.api("socket.io/")) as ws:
            await ws.send_str("die")
            msg = await ws.receive(timeout=10)
            return msg.type, ws.close_code

    assert run(go) == (aiohttp.WSMsgType.CLOSE, aiohttp.WSCloseCode.GOING_AWAY)


def test_a_websocket_the_upstream_refuses_gets_its_status(gateway: RunningGateway):
    async def go(session: aiohttp.ClientSession) -> int:
        try:
            async with session.ws_connect(gateway.api("no/websocket/here")):
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status

    assert run(go) == 404


def wait_for(condition: Callable[[], bool], seconds: float = 10) -> None:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        time.sleep(0.05)
    assert condition()


# --- the upstream down, slow, breaking off, refusing -------------------------------------------


def test_upstream_down_gives_502_naming_it_while_shaman_keeps_working(
    gateway_factory: GatewayFactory,
):
    dead = f"http://127.0.0.1:{free_port()}"
    gateway = gateway_factory(upstream=dead)
    answer = requests.get(gateway.api("api/v3/version"))
    assert answer.status_code == 502
    body = answer.json()
    assert body["code"] == 502
    assert dead in body["message"] and "unreachable" in body["message"]
    sha = hashlib.sha256(b"x").hexdigest()
    status = requests.get(gateway.api(f"api/v3/shaman/files/{sha}/1"))
    assert status.json() == {"status": "unknown"}


def test_a_websocket_to_an_upstream_that_is_down_gets_502(gateway_factory: GatewayFactory):
    gateway = gateway_factory(upstream=f"http://127.0.0.1:{free_port()}")

    async def go(session: aiohttp.ClientSession) -> int:
        try:
            async with session.ws_connect(gateway.api("socket.io/")):
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status

    assert run(go) == 502


def test_a_silent_upstream_gives_504_naming_it(gateway_factory: GatewayFactory):
    gateway = gateway_factory(read_timeout=0.5)
    answer = requests.get(gateway.api("probe/slow/3"))
    assert answer.status_code == 504
    assert gateway.flamenco.url.rstrip("/") in answer.json()["message"]
    assert "did not answer" in answer.json()["message"]


def test_a_long_download_is_not_cut_by_the_idle_timeout(gateway_factory: GatewayFactory):
    gateway = gateway_factory(read_timeout=0.5)
    size = 30 * MiB
    with requests.get(gateway.api(f"probe/download/{size}"), stream=True) as answer:
        received = sum(len(chunk) for chunk in answer.iter_content(MiB))
    assert received == size


def test_an_upstream_dying_midway_breaks_the_clients_response(gateway: RunningGateway):
    async def go(session: aiohttp.ClientSession) -> str:
        async with session.get(gateway.api(f"probe/die-midway/{8 * MiB}")) as answer:
            assert answer.status == 200
            try:
                await answer.read()
            except aiohttp.ClientPayloadError:
                return "broken"
            return "looked complete"

    assert run(go) == "broken"
    # The gateway itself is fine afterwards.
    assert requests.get(gateway.api("api/v3/version")).status_code == 200


def test_a_body_larger_than_the_upstream_accepts_gets_its_status(gateway: RunningGateway):
    answer = requests.post(gateway.api("probe/limited"), data=os.urandom(8 * LIMITED_BODY))
    assert answer.status_code == 413
    assert answer.json() == {"message": "Request Entity Too Large"}
    assert requests.post(gateway.api("probe/limited"), data=b"small").json() == {"received": 5}


def test_standalone_version_says_which_flamenco_it_speaks(manager_factory):
    """Without an upstream, /version is ours: the Flamenco whose add-on's version check
    (shortversion equal to its own) it passes, and that it has no jobs API."""
    manager = manager_factory()
    version = requests.get(manager.api("api/v3/version")).json()
    assert version["shortversion"] == version["version"] == "3.8.5"
    assert "standalone" in version["name"] and "no jobs API" in version["name"]
    assert requests.get(manager.api("api/v3/jobs/types")).status_code == 404


def test_a_client_leaving_mid_download_is_not_blamed_on_the_upstream(
    gateway: RunningGateway, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="manager_plugin.http.gateway")
    host, port = gateway.url.split("/")[2].split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(f"GET /probe/download/{100 * MiB} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert sock.recv(MiB).startswith(b"HTTP/1.1 200 ")
    wait_for(lambda: "the client went away" in caplog.text)
    assert "upstream broke off" not in caplog.text
    assert requests.get(gateway.api("api/v3/version")).status_code == 200


def test_an_upstream_answering_garbage_gets_a_short_502(gateway_factory: GatewayFactory):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def answer_garbage() -> None:  # to every connection (the startup check's too)
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:  # the listener was closed: the test is over
                    return
                with conn:
                    conn.recv(65536)
                    conn.sendall(b"NOT HTTP AT ALL " * 5000)

        threading.Thread(target=answer_garbage, daemon=True).start()
        gateway = gateway_factory(upstream=f"http://127.0.0.1:{port}")
        answer = requests.get(gateway.api("anything"))
    assert answer.status_code == 502
    message = answer.json()["message"]
    assert message.startswith(f"upstream Flamenco Manager http://127.0.0.1:{port} failed: ")
    assert len(message) < 500
