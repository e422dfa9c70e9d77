"""Obs-folded request header lines: joined before aiohttp's parser sees them, as Go does.

Flamenco's add-ons 3.6 to 3.8.5 fold a long RFC 2047 `X-Shaman-Original-Filename`
value with a bare LF and a space (`...?=\\n =?utf-8?q?...`). Go's net/textproto joins
such continuation lines (and accepts bare-LF line ends); aiohttp's llhttp parser answers
400 "Missing expected CR after header value", and the add-on gives up after 50 tries.

`UnfoldingServer` is aiohttp's low-level server, but each connection's request
parser is wrapped in `UnfoldingParser`: while the parser waits for a message head, the
bytes are held until the blank line that ends it, continuation lines are joined with one
space and bare LF line ends become CRLF; then the head goes to the real parser. Bodies
are passed through untouched (see UnfoldingParser for how their ends are found).
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

# A head longer than this without its blank line goes to the parser as it is, which
# refuses it as too large the way it always does.
MAX_HEAD_BYTES = 256 * 1024

_FOLD = re.compile(rb"[ \t]*\r?\n[ \t]+")
_BARE_LF = re.compile(rb"(?<!\r)\n")
# How every HTTP request starts (blank lines aside): a method token, then a space.
_REQUEST_START = re.compile(rb"[\r\n]*(?:[A-Za-z]{1,32}(?: |$)|$)")


def looks_like_request(buffer: bytes) -> bool:
    """Whether `buffer` can be the start of a request head; anything else (a TLS hello
    sent to plain HTTP, say) goes to the parser at once, which refuses it with 400,
    instead of being held for a blank line that never comes."""
    return _REQUEST_START.match(buffer) is not None


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


def is_plain_head(head: bytes) -> bool:
    """Whether `unfold_head` would leave `head` as it is: every line ends with CRLF
    and none continues the one before it."""
    return (
        head.count(b"\n") == head.count(b"\r\n")
        and b"\n " not in head
        and b"\n\t" not in head
    )


def body_length(head: bytes) -> int | None:
    """A request head's body length: Content-Length, 0 without one, None when chunked
    or unclear (then the parser's own framing is followed, see UnfoldingParser)."""
    lengths: list[bytes] = []
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"transfer-encoding":
            return None
        if name == b"content-length":
            lengths.append(value.strip())
    if not lengths:
        return 0
    if len(lengths) > 1 or not lengths[0].isdigit():
        return None  # the parser refuses it
    return int(lengths[0])


class UnfoldingParser:
    """Wraps a connection's aiohttp request parser (see the module docstring).

    After a head, a body of known length is counted through untouched, so a head
    right behind it (in the same read) is unfolded too. A chunked body goes through
    untouched until its message's payload has ended.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._head = b""
        self._left = 0  # bytes of the current body still to pass through
        self._raw = False  # passing through until `_body` ends (or a message appears)
        self._body: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def between_messages(self) -> bool:
        """Whether nothing of a message is held or still to pass (the next byte fed
        starts a new request)."""
        return not (self._head or self._left or self._raw)

    def feed_data(self, data: bytes | bytearray) -> Any:
        if self._raw and self._body is not None and self._body.is_eof():
            self._raw, self._body = False, None
        if not (self._head or self._left or self._raw) and data:
            fast = self._feed_plain(data)
            if fast is not None:
                return fast
        if not data:
            # The protocol's poke to re-parse what the paused parser holds: always passed
            # on, even while we hold part of a head, or those messages would never come.
            result = self._inner.feed_data(b"")
            return self._track(result) if self._raw else result
        data = bytes(data)
        messages: list[Any] = []
        while True:
            if self._raw:
                return self._merge(messages, self._track(self._inner.feed_data(data)))
            if self._left:
                piece, data = data[: self._left], data[self._left :]
                self._left -= len(piece)
                result = self._inner.feed_data(piece)
                messages.extend(result[0])
                if result[1]:
                    return messages, True, result[2] + data
                if not data:
                    return messages, False, b""
                continue
            self._head += data
            data = b""
            end = head_end(self._head)
            if end < 0:
                if len(self._head) > MAX_HEAD_BYTES or not looks_like_request(self._head):
                    self._raw, self._body = True, None
                    data, self._head = self._head, b""
                    continue
                return messages, False, b""
            head = unfold_head(self._head[:end])
            data, self._head = self._head[end:], b""
            length = body_length(head)
            if length is None:
                self._raw, self._body = True, None
                data = head + data
                continue
            result = self._inner.feed_data(head)
            messages.extend(result[0])
            if result[1]:
                return messages, True, result[2] + data
            self._left = length
            if not data:
                return messages, False, b""

    def _feed_plain(self, data: bytes | bytearray) -> Any:
        """The usual case in one step: `data` starts with a whole head that needs no
        unfolding (CRLF line ends, no continuation lines), followed by at most its own
        body. Fed to the parser as it is; None when `data` is anything else."""
        end = data.find(b"\r\n\r\n")
        if end <= 0:
            return None
        head = bytes(data[: end + 4])
        if not is_plain_head(head):
            return None
        length = body_length(head)
        rest = len(data) - len(head)
        if length is None or rest > length:
            return None  # chunked or unclear, or a next request behind the body
        self._left = length - rest
        return self._inner.feed_data(data)

    def _merge(self, messages: list[Any], result: Any) -> Any:
        if not messages:
            return result
        return [*messages, *result[0]], result[1], result[2]

    def _track(self, result: Any) -> Any:
        if result[0]:
            payload = result[0][-1][1]
            if payload.is_eof():
                self._raw, self._body = False, None
            else:
                self._body = payload
        return result


class UnfoldingRequestHandler(RequestHandler):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Duck-typed: the wrapper delegates everything but header parsing to aiohttp's parser.
        self._parser = UnfoldingParser(self._parser)  # type: ignore[assignment]


class UnfoldingServer(web.Server):
    """aiohttp's low-level server whose handlers accept obs-folded header lines."""

    def __call__(self) -> RequestHandler:
        return UnfoldingRequestHandler(self, loop=self._loop, **self._kwargs)
