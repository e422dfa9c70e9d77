"""Connections: a cap on how many are served at once, and a deadline for request headers.

Every connection holds a descriptor; a crowd of idle ones used to exhaust them and
the server stopped answering anyone. `GuardedRunner` serves an app like
`web.AppRunner`, with a `ConnectionGuard` per server:

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
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from .throttledlog import ThrottledLog

log = logging.getLogger(__name__)

LINGER = 1.0  # seconds a refused connection is kept to read and drop what the client sends
MAX_LINGERING = 64  # refused connections lingering at once; more are closed at once
RETRY_AFTER = 1  # seconds, told to a refused client
STILLBORN_AFTER = 10.0  # seconds after which a handler without a connection is forgotten


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


class ConnectionGuard:
    """The connections of one server: the cap, eviction and the header deadline."""

    def __init__(self, cap: int, header_timeout: float, throttled: ThrottledLog) -> None:
        self.cap = cap
        self.header_timeout = header_timeout
        self.throttled = throttled
        # Handlers from their creation (admitted) to connection_lost, oldest first, with
        # their creation time. Counted from creation: asyncio creates the protocols of a
        # burst of accepted connections before it calls any connection_made.
        self._live: dict[GuardedHandler, float] = {}
        self._lingering = 0

    @property
    def open_connections(self) -> int:
        return len(self._live)

    def admit(self) -> bool:
        """Room for one more connection (after closing an idle one if need be)?"""
        if len(self._live) < self.cap:
            return True
        now = time.monotonic()
        for handler, created in list(self._live.items()):
            if handler.waiting_for_request():
                self._evict(handler)
                return True
            if handler.transport is None and now - created > STILLBORN_AFTER:
                # Made for a connection that asyncio then failed to set up (no
                # connection_made, so no connection_lost either): not a connection.
                self._live.pop(handler, None)
                return True
        self.throttled.note(
            "refused",
            f"connection cap of {self.cap} reached with every connection busy: "
            "refusing new connections with 503",
        )
        return False

    def _evict(self, handler: GuardedHandler) -> None:
        self._live.pop(handler, None)
        self.throttled.note(
            "evicted",
            f"connection cap of {self.cap} reached: closing the longest-idle connections "
            "to make room for new ones",
        )
        handler.close_idle()

    def opened(self, handler: GuardedHandler) -> None:
        self._live[handler] = time.monotonic()

    def closed(self, handler: GuardedHandler) -> None:
        self._live.pop(handler, None)

    def refused(self) -> asyncio.Protocol:
        """The protocol for a connection that gets the 503."""
        linger = self._lingering < MAX_LINGERING
        if linger:
            self._lingering += 1
        return _Refused(self, linger)

    def refusal_done(self, lingered: bool) -> None:
        if lingered:
            self._lingering -= 1


class GuardedHandler(RequestHandler):
    """aiohttp's connection handler, registered with a ConnectionGuard, with a header deadline.

    Reads two attributes of aiohttp's RequestHandler: `_waiter` (pending while it waits
    for the next request, aiohttp's own notion of idle) and `_request_count` (request
    heads parsed on this connection).
    """

    def __init__(self, manager: GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = manager.guard
        self._deadline: asyncio.TimerHandle | None = None
        self._heads_at_arming = 0

    def waiting_for_request(self) -> bool:
        waiter = getattr(self, "_waiter", None)
        return waiter is not None and not waiter.done()

    def close_idle(self) -> None:
        """Close this idle connection; a 503 first if it never sent a request."""
        transport = self.transport
        if transport is not None and self._request_count == 0:
            transport.write(BUSY_ANSWER)
        self.force_close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._deadline is not None:
            if self._request_count != self._heads_at_arming:
                self._disarm()  # the headers are complete
        elif data and self.waiting_for_request():
            self._arm()  # the first bytes of a next request

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        self._guard.closed(self)
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._heads_at_arming = self._request_count
        self._deadline = self._loop.call_later(self._guard.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self._request_count != self._heads_at_arming or self.transport is None:
            return
        self._guard.throttled.note(
            "header-timeout",
            f"closed a connection that did not send its request headers within "
            f"{self._guard.header_timeout:g} s",
        )
        self._guard.closed(self)
        self.force_close()


class _Refused(asyncio.Protocol):
    """Answers 503 and closes; reads and drops what the client sends meanwhile (for at
    most LINGER s), so that closing does not reset the connection before it is read."""

    def __init__(self, guard: ConnectionGuard, linger: bool) -> None:
        self._guard = guard
        self._linger = linger
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
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


class GuardedServer(web.Server):
    """aiohttp's low-level server with a ConnectionGuard in front of its handlers."""

    def __init__(self, *args: Any, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard

    def __call__(self) -> asyncio.Protocol:  # type: ignore[override]
        if not self.guard.admit():
            return self.guard.refused()
        handler = GuardedHandler(self, loop=self._loop, **self._kwargs)
        self.guard.opened(handler)
        return handler


class GuardedRunner(web.AppRunner):
    """`web.AppRunner` whose server admits connections through `guard`."""

    def __init__(self, app: web.Application, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.guard = guard

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return GuardedServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=asyncio.get_running_loop(),
            guard=self.guard,
            **server._kwargs,
        )
