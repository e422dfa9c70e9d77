"""Obs-folded request header lines: joined before aiohttp's parser sees them, as Go does.

Flamenco's add-ons 3.6 to 3.8.5 fold a long RFC 2047 `X-Shaman-Original-Filename`
value with a bare LF and a space (`...?=\\n =?utf-8?q?...`). Go's net/textproto joins
such continuation lines (and accepts bare-LF line ends); aiohttp's llhttp parser answers
400 "Missing expected CR after header value", and the add-on gives up after 50 tries.

`FoldTolerantRunner` serves an app like `web.AppRunner`, but each connection's request
parser is wrapped in `UnfoldingParser`: while the parser waits for a message head, the
bytes are held until the blank line that ends it, continuation lines are joined with one
space and bare LF line ends become CRLF; then the head (and whatever followed it) goes to
the real parser. Bodies are passed through untouched: once a message's head has gone
through, everything goes straight to the parser until that message's body has ended.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

# A head longer than this without its blank line goes to the parser as it is, which
# refuses it as too large the way it always does.
MAX_HEAD_BYTES = 256 * 1024

_FOLD = re.compile(rb"[ \t]*\r?\n[ \t]+")
_BARE_LF = re.compile(rb"(?<!\r)\n")


def head_end(buffer: bytes) -> int:
    """Index just past the blank line ending a message head in `buffer`, or -1."""
    ends = [i for i in (buffer.find(b"\n\r\n"), buffer.find(b"\n\n")) if i >= 0]
    if not ends:
        return -1
    first = min(ends)
    return first + (3 if buffer.startswith(b"\n\r\n", first) else 2)


def unfold_head(head: bytes) -> bytes:
    """Join obs-folded header lines with one space and end every line with CRLF.

    The request line is left alone (a continuation right after it is malformed in
    Go too, and the parser refuses the joined line).
    """
    line_end = head.find(b"\n") + 1
    request_line, fields = head[:line_end], head[line_end:]
    fields = _BARE_LF.sub(b"\r\n", _FOLD.sub(b" ", fields))
    return _BARE_LF.sub(b"\r\n", request_line) + fields


class UnfoldingParser:
    """Wraps a connection's aiohttp request parser (see the module docstring)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._head = b""
        self._body: Any = None  # payload of the message whose body is being received
        self._raw = False  # a head went through without a message yet (parser paused)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def feed_data(self, data: bytes | bytearray) -> Any:
        if self._body is not None and self._body.is_eof():
            self._body = None
        if self._raw or self._body is not None:
            return self._track(self._inner.feed_data(data))
        self._head += bytes(data)
        end = head_end(self._head)
        if end < 0:
            if len(self._head) <= MAX_HEAD_BYTES and data:
                return [], False, b""
            chunk, self._head = self._head, b""
            return self._track(self._inner.feed_data(chunk))
        chunk = unfold_head(self._head[:end]) + self._head[end:]
        self._head = b""
        self._raw = True
        return self._track(self._inner.feed_data(chunk))

    def _track(self, result: Any) -> Any:
        messages = result[0]
        if messages:
            payload = messages[-1][1]
            self._raw = False
            self._body = None if payload.is_eof() else payload
        return result


class _UnfoldingRequestHandler(RequestHandler):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._parser = UnfoldingParser(self._parser)


class _UnfoldingServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _UnfoldingRequestHandler(self, loop=self._loop, **self._kwargs)


class FoldTolerantRunner(web.AppRunner):
    """`web.AppRunner` whose connections accept obs-folded header lines."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _UnfoldingServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **server._kwargs,
        )
