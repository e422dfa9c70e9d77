"""Connections: a cap on how many are served at once, and a deadline for request headers.

Every connection holds a descriptor; a crowd of idle ones used to exhaust them and
the server stopped answering anyone. `GuardedRunner` serves an app like
`web.AppRunner`, its server (`GuardedServer`) admitting connections through a
`ConnectionGuard`:

- At most `cap` connections are open. When a new one arrives at the cap, the oldest
  connection that is waiting for a request (never sent one, or idle between two) is
  closed to make room; one that never sent a request gets a 503 first. If every
  connection is busy with a request, the newcomer gets the 503 and is closed. So
  idle crowds cannot lock out a client that has something to ask.
- A connection must deliver a request's headers within `header_timeout` seconds of
  connecting, or of the first byte of a later request, else it is closed: a client
  sending its headers a byte at a time cannot hold a connection forever. (The body
  has its own pace: `manager_plugin.bodypace`.)

Closings and refusals are logged through a `ThrottledLog`, not one line each.

The guard keeps aiohttp's own connection handler: GuardedServer takes whatever
handler its base class makes (so it composes with other `web.Server` subclasses) and
watches it through the server's connection_made/connection_lost hooks and a thin
wrapper around the handler's request parser. It reads three attributes aiohttp's
RequestHandler has had throughout 3.x: `_parser`, `_waiter` (pending while it waits
for the next request: aiohttp's own notion of idle) and `_request_count`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from .throttledlog import ThrottledLog

LINGER = 1.0  # seconds a refused connection is kept to read and drop what the client sends
MAX_LINGERING = 64  # refused connections lingering at once; more are closed at once
RETRY_AFTER = 1  # seconds, told to a refused client


def _busy_answer() -> bytes:
    body = json.dumps(
        {"code": 503, "message": "server busy: too many connections; try again shortly"}
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Retry-After: {RETRY_AFTER}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


BUSY_ANSWER = _busy_answer()


def _waiting_for_request(handler: RequestHandler) -> bool:
    waiter = getattr(handler, "_waiter", None)
    return waiter is not None and not waiter.done()


def _requests_parsed(handler: RequestHandler) -> int:
    return int(getattr(handler, "_request_count", 0))


class _Connection:
    """What the guard knows of one connection: its handler and its header deadline."""

    def __init__(self, guard: ConnectionGuard, handler: RequestHandler) -> None:
        self.guard = guard
        self.handler = handler
        self._deadline: asyncio.TimerHandle | None = None
        self._parsed_at_arming = 0

    def arm(self) -> None:
        """Headers are due within header_timeout from now."""
        self.disarm()
        self._parsed_at_arming = _requests_parsed(self.handler)
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self.guard.header_timeout, self._expire)

    def disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def fed(self, data: bytes, result: Any) -> None:
        """The handler's parser got `data` and returned `result` (messages first)."""
        if result[0]:
            self.disarm()  # a request's headers are complete
        elif data and self._deadline is None and _waiting_for_request(self.handler):
            self.arm()  # the first bytes of a next request

    def _expire(self) -> None:
        self._deadline = None
        handler = self.handler
        if _requests_parsed(handler) != self._parsed_at_arming or handler.transport is None:
            return
        self.guard.throttled.note(
            "header-timeout",
            "closed a connection that did not send its request headers within "
            f"{self.guard.header_timeout:g} s",
        )
        self.guard.forget(handler)
        handler.force_close()

    def close_idle(self) -> None:
        """Close this idle connection; a 503 first if it never sent a request."""
        self.disarm()
        handler = self.handler
        if handler.transport is None:
            # Not connected yet: asyncio makes the protocols of a burst of accepted
            # connections first. Closing now would leave the transport it gets later
            # open; GuardedServer.connection_made answers and closes it instead.
            self.guard.unborn_evicted.add(handler)
            return
        if _requests_parsed(handler) == 0:
            handler.transport.write(BUSY_ANSWER)
        handler.force_close()


class _WatchedParser:
    """A handler's request parser, reporting what it was fed to the guard."""

    def __init__(self, inner: Any, connection: _Connection) -> None:
        self._inner = inner
        self._connection = connection

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def feed_data(self, data: bytes, *args: Any, **kwargs: Any) -> Any:
        result = self._inner.feed_data(data, *args, **kwargs)
        self._connection.fed(data, result)
        return result


class ConnectionGuard:
    """The connections of one server: the cap, eviction and the header deadline."""

    def __init__(self, cap: int, header_timeout: float, throttled: ThrottledLog) -> None:
        self.cap = cap
        self.header_timeout = header_timeout
        self.throttled = throttled
        # From the handler's creation to connection_lost, oldest first. Counted from
        # creation: asyncio creates the protocols of a burst of accepted connections
        # before it calls any connection_made.
        self._live: dict[RequestHandler, _Connection] = {}
        # Evicted before asyncio connected them (rare: a burst beyond the cap); a handler
        # asyncio then fails to connect stays here, one small object per such failure.
        self.unborn_evicted: set[RequestHandler] = set()
        self._lingering = 0

    def admit(self) -> bool:
        """Room for one more connection (after closing an idle one if need be)?

        Idle means without a request in progress: none sent yet (its headers may be
        on their way, or it is not even connected yet), or waiting for the next.
        """
        if len(self._live) < self.cap:
            return True
        for handler, connection in list(self._live.items()):
            if _requests_parsed(handler) == 0 or _waiting_for_request(handler):
                self._live.pop(handler, None)
                self.throttled.note(
                    "evicted",
                    f"connection cap of {self.cap} reached: closing the longest-idle "
                    "connections to make room for new ones",
                )
                connection.close_idle()
                return True
        self.throttled.note(
            "refused",
            f"connection cap of {self.cap} reached with every connection busy: "
            "refusing new connections with 503",
        )
        return False

    def watch(self, handler: RequestHandler) -> None:
        """Count `handler` as a connection and watch its parser for the header deadline."""
        connection = _Connection(self, handler)
        self._live[handler] = connection
        # Duck-typed: the wrapper delegates to aiohttp's parser (see the module docstring).
        handler._parser = _WatchedParser(handler._parser, connection)  # type: ignore[assignment]

    def connected(self, handler: RequestHandler) -> None:
        connection = self._live.get(handler)
        if connection is not None:
            connection.arm()

    def forget(self, handler: RequestHandler) -> None:
        connection = self._live.pop(handler, None)
        if connection is not None:
            connection.disarm()

    def refused(self) -> asyncio.Protocol:
        """The protocol for a connection that gets the 503."""
        linger = self._lingering < MAX_LINGERING
        if linger:
            self._lingering += 1
        return _Refused(self, linger)

    def refusal_done(self, lingered: bool) -> None:
        if lingered:
            self._lingering -= 1


class _Refused(asyncio.Protocol):
    """Answers 503 and closes; reads and drops what the client sends meanwhile (for at
    most LINGER s), so that closing does not reset the connection before it is read."""

    def __init__(self, guard: ConnectionGuard, linger: bool) -> None:
        self._guard = guard
        self._linger = linger
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(BUSY_ANSWER)
        if not self._linger:
            transport.close()
            return
        if transport.can_write_eof():
            transport.write_eof()
        self._timer = asyncio.get_running_loop().call_later(LINGER, transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # dropped

    def eof_received(self) -> bool:
        return False  # the client is done too: close

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._guard.refusal_done(self._linger)


def _answer_busy_and_close(handler: RequestHandler) -> None:
    if handler.transport is not None:
        handler.transport.write(BUSY_ANSWER)
    handler.force_close()


class GuardedServer(web.Server):
    """aiohttp's low-level server with a ConnectionGuard in front of its handlers."""

    def __init__(self, *args: Any, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard

    def __call__(self) -> asyncio.Protocol:  # type: ignore[override]
        if not self.guard.admit():
            return self.guard.refused()
        handler = super().__call__()
        self.guard.watch(handler)
        return handler

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        if handler in self.guard.unborn_evicted:
            self.guard.unborn_evicted.discard(handler)
            # Not from within connection_made: the handler has yet to start its task,
            # which must find the connection still open.
            asyncio.get_running_loop().call_soon(_answer_busy_and_close, handler)
            return
        self.guard.connected(handler)

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        self.guard.forget(handler)
        super().connection_lost(handler, exc)


class GuardedRunner(web.AppRunner):
    """`web.AppRunner` whose server (`server_class`) admits connections through `guard`."""

    server_class: type[GuardedServer] = GuardedServer

    def __init__(self, app: web.Application, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.guard = guard

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return self.server_class(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=asyncio.get_running_loop(),
            guard=self.guard,
            **server._kwargs,
        )
