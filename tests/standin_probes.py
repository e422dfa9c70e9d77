"""Probe routes for the stand-in Flamenco Manager, to test what a proxy in front of it does.

Pass `extra_routes=(setup_probe_routes,)` to the `flamenco_factory` fixture. What each
route received is kept in `ProbeLog` (`probes(standin)`), so tests compare both ends.

    *    /probe/echo/{tail}        JSON: method, raw path and query, headers, body size and
                                   SHA-256 (the body is streamed and hashed, never held)
    GET  /probe/download/{size}    `size` bytes of `probe_bytes` with a Content-Length
    GET  /probe/die-midway/{size}  promises `size` bytes, sends half, drops the connection
    GET  /probe/slow/{seconds}     answers after that long
    POST /probe/limited            413 (as echo's body limit answers) past LIMITED_BODY bytes
    GET  /socket.io/               a WebSocket echo (the web UI's live updates live here);
                                   the text "close:<code>" makes the stand-in close with it,
                                   "die" makes it drop the connection without a close frame
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from flamenco_standin import FlamencoStandin

BLOCK = os.urandom(1024 * 1024)
LIMITED_BODY = 1024 * 1024


def probe_bytes(size: int) -> bytes:
    """The bytes /probe/download/{size} sends (tests hash them to compare)."""
    whole, rest = divmod(size, len(BLOCK))
    return BLOCK * whole + BLOCK[:rest]


@dataclass
class ProbeLog:
    echo_started: threading.Event = field(default_factory=threading.Event)  # first body bytes in
    first_body_bytes: int = 0  # how many body bytes the echo had when the event was set
    ws_messages: list[Any] = field(default_factory=list)
    ws_closed_with: list[int | None] = field(default_factory=list)
    ws_handshakes: list[dict[str, str]] = field(default_factory=list)


_LOGS: dict[int, ProbeLog] = {}


def probes(standin: FlamencoStandin) -> ProbeLog:
    return _LOGS.setdefault(id(standin), ProbeLog())


def setup_probe_routes(app: web.Application, standin: FlamencoStandin) -> None:
    log = probes(standin)

    async def echo(request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_any():
            if size == 0:
                log.first_body_bytes = len(chunk)
                log.echo_started.set()
            digest.update(chunk)
            size += len(chunk)
        return web.json_response(
            {
                "method": request.method,
                "raw_path": request.raw_path,
                "headers": list(request.headers.items()),
                "body_size": size,
                "body_sha256": digest.hexdigest(),
            },
            headers={"X-Probe": "echo", "Set-Cookie": "probe=1; Path=/"},
        )

    async def download(request: web.Request) -> web.StreamResponse:
        size = int(request.match_info["size"])
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = size
        await response.prepare(request)
        if request.method == "HEAD":  # the head only, as HTTP wants
            await response.write_eof()
            return response
        sent = 0
        while sent < size:
            piece = BLOCK[: min(len(BLOCK), size - sent)]
            await response.write(piece)
            sent += len(piece)
        await response.write_eof()
        return response

    async def die_midway(request: web.Request) -> web.StreamResponse:
        size = int(request.match_info["size"])
        response = web.StreamResponse()
        response.content_length = size
        await response.prepare(request)
        await response.write(probe_bytes(size // 2))
        await asyncio.sleep(0.2)  # let the half reach the socket before the reset
        assert request.transport is not None
        request.transport.abort()
        return response

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.match_info["seconds"]))
        return web.json_response({"slow": True})

    async def limited(request: web.Request) -> web.Response:
        received = 0
        async for chunk in request.content.iter_any():
            received += len(chunk)
            if received > LIMITED_BODY:
                return web.json_response({"message": "Request Entity Too Large"}, status=413)
        return web.json_response({"received": received})

    async def socket_io(request: web.Request) -> web.StreamResponse:
        log.ws_handshakes.append(dict(request.headers))
        ws = web.WebSocketResponse(protocols=("probe-v1",))
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT and msg.data.startswith("close:"):
                await ws.close(code=int(msg.data[6:]), message=b"closed by the Manager")
                break
            if msg.type == WSMsgType.TEXT and msg.data == "die":
                assert request.transport is not None
                request.transport.abort()  # gone without a close frame
                break
            log.ws_messages.append(msg.data)
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        log.ws_closed_with.append(ws.close_code)
        return ws

    app.router.add_route("*", "/probe/echo/{tail:.*}", echo)
    app.router.add_get("/probe/download/{size}", download)
    app.router.add_get("/probe/die-midway/{size}", die_midway)
    app.router.add_get("/probe/slow/{seconds}", slow)
    app.router.add_post("/probe/limited", limited)
    app.router.add_get("/socket.io/", socket_io)
