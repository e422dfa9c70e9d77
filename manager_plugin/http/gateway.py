"""Gateway mode: every request this server does not answer itself goes to the upstream Manager.

Registered last, as a catch-all route, so that the Shaman routes (v3, batch upload, legacy) win
and everything else (the jobs API, version and configuration, the web UI, its socket.io
WebSocket, downloads) reaches Flamenco Manager unchanged: method, raw path and query,
headers but the hop-by-hop ones, body, status and answer, streamed both ways.

Failures are the gateway's own JSON errors naming the upstream: 502 when it cannot be
reached or breaks off before answering, 504 when it connects but stays silent longer than
the idle read timeout. An answer that breaks off midway cannot be turned into an error
any more: the client's connection is aborted, so it never takes a truncated body as whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from ..gateway_config import GatewaySettings
from .auth import public
from .errors import error_response
from .upstream_check import check_upstream_storage

log = logging.getLogger(__name__)

# RFC 9110 7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# aiohttp's client adds these when absent; a forwarded request carries only the client's.
_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
# The WebSocket handshake headers are the client library's to make, on each leg.
_WS_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
    }
)
WS_CLOSE_TIMEOUT = 10.0
MAX_REASON = 300  # characters of an upstream failure quoted in an error message


def setup_gateway_routes(app: web.Application, settings: GatewaySettings, jobs_dir: Path) -> None:
    """Forward every request no earlier route matched to `settings.upstream`."""
    gateway = Gateway(settings)
    app.cleanup_ctx.append(gateway.session_context)

    async def check_upstream(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(
            check_upstream_storage(gateway.session, settings.upstream, jobs_dir)
        )
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(check_upstream)

    @public  # the upstream does its own access control
    async def forward(request: web.Request) -> web.StreamResponse:
        return await gateway.forward(request)

    app.router.add_route("*", "/{tail:.*}", forward)


class Gateway:
    """Forwarding to one upstream Manager, over one client session (keep-alive pool)."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.upstream = settings.upstream
        self._session: aiohttp.ClientSession | None = None

    async def session_context(self, app: web.Application) -> AsyncIterator[None]:
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=self.settings.connect_timeout,
            sock_read=self.settings.read_timeout,
        )
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=timeout,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        ) as session:
            self._session = session
            yield
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "the gateway's app is not running"
        return self._session

    def failure(self, status: int, what: str) -> web.Response:
        return error_response(status, f"upstream Flamenco Manager {self.upstream} {what}")

    def failure_for(self, exc: BaseException) -> web.Response:
        if isinstance(exc, aiohttp.ClientConnectorError):
            return self.failure(502, f"is unreachable: {exc.os_error.strerror or exc.os_error}")
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            seconds = self.settings.connect_timeout
            return self.failure(504, f"did not accept a connection within {seconds:g} s")
        if isinstance(exc, TimeoutError):
            return self.failure(504, f"did not answer within {self.settings.read_timeout:g} s")
        return self.failure(502, f"failed: {str(exc)[:MAX_REASON]}")

    async def forward(self, request: web.Request) -> web.StreamResponse:
        url = URL(self.upstream + request.raw_path, encoded=True)
        if _wants_websocket(request):
            return await self.forward_websocket(request, url)
        try:
            answer = await self.session.request(
                request.method,
                url,
                headers=upstream_headers(request),
                data=request.content if request.body_exists else None,
                skip_auto_headers=_AUTO_HEADERS,
                allow_redirects=False,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            return self.failure_for(exc)
        async with answer:
            response = web.StreamResponse(status=answer.status, reason=answer.reason)
            response.headers.extend(_end_to_end(answer.headers))
            await response.prepare(request)
            try:
                async for chunk in answer.content.iter_any():
                    try:
                        await response.write(chunk)
                    except ConnectionError:  # the client went away: so does the upstream
                        log.info("gateway: %s %s: the client went away", request.method, url)
                        return response
            except (aiohttp.ClientError, TimeoutError) as exc:
                # Too late for an error answer: abort, so the client sees a broken
                # response instead of a short one that looks complete.
                log.warning("gateway: %s %s: upstream broke off: %s", request.method, url, exc)
                if request.transport is not None:
                    request.transport.abort()
                return response
            await response.write_eof()
            return response

    async def forward_websocket(self, request: web.Request, url: URL) -> web.StreamResponse:
        """Open the upstream WebSocket first (so its refusal reaches the client), then relay."""
        protocols = [
            p.strip()
            for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
            if p.strip()
        ]
        headers = CIMultiDict(
            (k, v) for k, v in upstream_headers(request).items() if k.lower() not in _WS_HANDSHAKE
        )
        try:
            upstream_ws = await self.session.ws_connect(
                url,
                headers=headers,
                protocols=protocols,
                autoclose=False,
                autoping=True,
                max_msg_size=0,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=WS_CLOSE_TIMEOUT),
            )
        except aiohttp.WSServerHandshakeError as exc:
            status = exc.status if exc.status >= 400 else 502
            return self.failure(status, f"refused the WebSocket: {exc.message}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return self.failure_for(exc)
        async with upstream_ws:
            client_ws = web.WebSocketResponse(
                protocols=[upstream_ws.protocol] if upstream_ws.protocol else (),
                autoclose=False,
                autoping=True,
                max_msg_size=0,
            )
            await client_ws.prepare(request)
            await _relay(client_ws, upstream_ws)
            return client_ws


def _end_to_end(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """`headers` without hop-by-hop ones, including those the Connection header names."""
    named = {
        token.strip().lower()
        for value in headers.getall("Connection", ())
        for token in value.split(",")
    }
    return CIMultiDict(
        (name, value)
        for name, value in headers.items()
        if name.lower() not in HOP_BY_HOP and name.lower() not in named
    )


def upstream_headers(request: web.Request) -> CIMultiDict[str]:
    """The client's end-to-end headers (Host included) plus the usual X-Forwarded-*.

    Not `Expect: 100-continue`: our server has answered it already (aiohttp does
    before the handler runs), and the body is on its way.
    """
    headers = _end_to_end(request.headers)
    headers.popall("Expect", None)
    peer = request.remote or ""
    earlier = request.headers.get("X-Forwarded-For")
    headers["X-Forwarded-For"] = f"{earlier}, {peer}" if earlier else peer
    headers.setdefault("X-Forwarded-Host", request.host)
    headers.setdefault("X-Forwarded-Proto", request.scheme)
    return headers


def _wants_websocket(request: web.Request) -> bool:
    connection = {t.strip().lower() for t in request.headers.get("Connection", "").split(",")}
    return (
        request.method == "GET"
        and "upgrade" in connection
        and request.headers.get("Upgrade", "").lower() == "websocket"
    )


WebSocket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


async def _pump(source: WebSocket, sink: WebSocket, closing: asyncio.Event) -> None:
    """Copy messages from `source` to `sink` until `source` closes; pass its close on.

    `closing` is shared by both directions: once one of them passes a close frame on,
    the other direction's end of stream is that close being answered, not a failure.
    """
    while True:
        msg = await source.receive()
        if msg.type == WSMsgType.TEXT:
            await sink.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
        elif msg.type == WSMsgType.CLOSE:
            closing.set()
            code = msg.data if isinstance(msg.data, int) and msg.data >= 1000 else 1000
            await sink.close(code=code, message=(msg.extra or "").encode())
            await source.close(code=code)  # answered with the code it came with
            return
        elif msg.type in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            if not closing.is_set():
                # Gone without a close frame: tell the other side the far end went away.
                closing.set()
                await sink.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"peer went away")
            return


async def _relay(
    client_ws: web.WebSocketResponse, upstream_ws: aiohttp.ClientWebSocketResponse
) -> None:
    closing = asyncio.Event()
    tasks = [
        asyncio.ensure_future(_pump(client_ws, upstream_ws, closing)),
        asyncio.ensure_future(_pump(upstream_ws, client_ws, closing)),
    ]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        # The other direction sees the close answered; give it a moment, then stop it.
        if pending:
            await asyncio.wait(pending, timeout=WS_CLOSE_TIMEOUT)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        for task in tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception as exc:  # a send to a side that just went away
                log.debug("gateway: WebSocket relay ended: %r", exc)
        await client_ws.close()
        await upstream_ws.close()
