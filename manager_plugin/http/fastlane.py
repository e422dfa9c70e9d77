"""The fast lane: Flamenco's per-file requests answered without aiohttp's request machinery.

Flamenco's own add-on uploads a project one request per file: for each file a status
`GET api/v3/shaman/files/{sha}/{size}`, then a `POST` of its bytes. For a 4 KiB file,
aiohttp's request objects, task, middlewares and response objects cost more CPU than
the store's own work.

When a connection is idle and what arrives is exactly one such request in the plainest
form (HTTP/1.1, CRLF lines, no transfer or content coding, no `Expect`, a body of at
most SMALL_BODY bytes, nothing behind it), `FastLane` answers it from the same service,
status table and access log as aiohttp's way, and writes the answer itself. An upload
whose head came without all of its body is held up to HOLD_SECONDS for the rest
(urllib3 2, which Flamenco's add-on uses, sends the two apart), then given to aiohttp.

Anything else goes to aiohttp as it came, and so does a request the guards refuse
(`auth`: token, Shaman disabled) or whose file name header does not decode: the lane
declines before it has done anything, so every refusal is made in one place.
tests/http/test_fastlane.py checks that both ways answer alike, byte for byte.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

from aiohttp.http import SERVER_SOFTWARE
from aiohttp.web_protocol import RequestHandler

from ..errors import ClientDisconnected, ShamanError
from ..paths import is_checksum
from ..service import ShamanService
from ..store import SMALL_BODY, IncomingSmall
from .accesslog import LogEntry, log_access
from .auth import ensure_access
from .bodies import is_true, splices
from .errors import INTERNAL_ERROR, STATUS, UPLOAD_STATUS, error_body, log_internal_error, status_of
from .filenames import HEADER as FILENAME_HEADER
from .filenames import decode_original_filename
from .headerfold import UnfoldingRequestHandler, UnfoldingServer
from .routes import API

_TARGET = re.compile(rf"{API}/shaman/files/([0-9a-f]{{64}})/([0-9]{{1,12}})".encode())
# A header line as plain as can be: a token, a colon, visible ASCII, spaces and tabs.
_FIELD = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([\t\x20-\x7e]*?)[ \t]*")
_FILENAME = FILENAME_HEADER.lower().encode()
# Header fields the lane reads; each at most once.
_READ = frozenset((b"content-length", b"authorization", b"x-shaman-can-defer-upload", _FILENAME))
# Header fields that change how a request is framed or answered: aiohttp's to handle.
_DECLINE = frozenset(
    (b"transfer-encoding", b"content-encoding", b"expect", b"upgrade", b"connection")
)
_JSON_HEAD = "Content-Type: application/json; charset=utf-8\r\n"


class _Request:
    """The parts of a request the lane acts on."""

    __slots__ = ("method", "path", "sha", "size", "body", "declared", "fields")

    def __init__(
        self,
        method: str,
        path: str,
        sha: str,
        size: int,
        body: bytes,
        declared: int,
        fields: dict[bytes, str],
    ) -> None:
        self.method = method
        self.path = path
        self.sha = sha
        self.size = size
        self.body = body  # what came of it so far
        self.declared = declared  # its Content-Length
        self.fields = fields

    def log_entry(self, status: int, sent: int, started: float, filename: str) -> LogEntry:
        """Its access-log line; `filename` decoded, "" without one."""
        return LogEntry(
            self.method,
            self.path,
            status,
            len(self.body),
            self.declared if self.method == "POST" else None,
            sent,
            (time.perf_counter() - started) * 1000,
            filename or None,
        )


def parse(data: bytes) -> _Request | None:
    """`data` as one plain status GET or small upload POST: its head and its body, or
    the start of that body; None if it is anything else (or more)."""
    end = data.find(b"\r\n\r\n")
    if end <= 0:
        return None
    lines = data[:end].split(b"\r\n")
    request_line = lines[0].split(b" ")
    if len(request_line) != 3 or request_line[2] != b"HTTP/1.1":
        return None
    method, target = request_line[0], request_line[1]
    if method not in (b"GET", b"POST"):
        return None
    match = _TARGET.fullmatch(target)
    if match is None:
        return None
    fields: dict[bytes, str] = {}
    for line in lines[1:]:
        field = _FIELD.fullmatch(line)
        if field is None:
            return None
        name = field[1].lower()
        if name in _DECLINE:
            if name != b"connection" or field[2].lower() != b"keep-alive":
                return None
        elif name in _READ:
            if name in fields:
                return None
            fields[name] = field[2].decode("ascii")
    body = data[end + 4 :]
    length = fields.get(b"content-length", "0")
    if not length.isdigit() or len(length) > 9:
        return None
    declared = int(length)
    if declared > SMALL_BODY or len(body) > declared:
        return None  # a big body (streamed by aiohttp); a next request behind this one
    if body if method == b"GET" else splices(declared):
        return None  # a GET with a body; an upload taken from the socket (see bodies)
    sha, size = match[1].decode("ascii"), int(match[2])
    if not is_checksum(sha):
        return None
    return _Request(
        method.decode("ascii"), target.decode("ascii"), sha, size, body, declared, fields
    )


class FastLane:
    """Answers plain per-file requests from `service` (see the module docstring)."""

    def __init__(self, service: ShamanService) -> None:
        self.service = service

    def answer(self, data: bytes) -> bytes | Partial | None:
        """The whole answer to `data` (see `parse`), already done and logged; a Partial
        if `data` starts an upload the lane takes (give it the rest with `more`); None,
        with nothing done, if aiohttp must handle it."""
        started = time.perf_counter()
        request = parse(data)
        filename = self._admitted(request)
        if request is None or filename is None:
            return None
        incoming = None
        if request.method == "POST":
            incoming = self.service.expect_small(request.sha, request.size)
            if incoming is None:
                return None  # another upload of it is in flight here: aiohttp's way waits
        if len(request.body) < request.declared:
            assert incoming is not None  # a GET has no body
            return Partial(request, filename, incoming, started)
        return self._finish(request, filename, incoming, started)

    def more(self, partial: Partial, data: bytes) -> bytes | Partial | None:
        """`answer` for an upload whose body goes on with `data`. None, the upload ended
        unstored, if more came than its length (a next request: aiohttp's)."""
        request = partial.request
        request.body += data
        if len(request.body) < request.declared:
            return partial
        if len(request.body) > request.declared:
            partial.incoming.end()
            return None
        return self._finish(request, partial.filename, partial.incoming, partial.started)

    def disconnected(self, partial: Partial) -> None:
        """The client left in the middle of `partial`'s body: ended, and logged as
        aiohttp's way logs a client gone mid-body."""
        partial.incoming.end()
        disconnected = STATUS[ClientDisconnected]
        log_access(partial.request.log_entry(disconnected, 0, partial.started, partial.filename))

    def _finish(
        self, request: _Request, filename: str, incoming: IncomingSmall | None, started: float
    ) -> bytes:
        """Answer a whole request: a status GET without `incoming`, else its upload."""
        try:
            if incoming is None:
                status = 200
                body = _json({"status": self.service.file_status(request.sha, request.size)})
            else:
                can_defer = is_true(request.fields.get(b"x-shaman-can-defer-upload", ""))
                status, body = UPLOAD_STATUS[incoming.complete(request.body, can_defer)], b""
        except ShamanError as exc:
            status = status_of(exc)
            body = _json(error_body(status, exc.message))
        except Exception:
            log_internal_error(request.method, request.path)
            status, body = 500, _json(error_body(500, INTERNAL_ERROR))
        log_access(request.log_entry(status, len(body), started, filename))
        return _head(status, body) + body

    def _admitted(self, request: _Request | None) -> str | None:
        """The request's decoded file name ("" without one) if the guards let it through
        (see `auth`) and the name decodes; None if aiohttp must answer it."""
        if request is None:
            return None
        try:
            ensure_access(self.service.config, request.fields.get(b"authorization"))
            raw_name = request.fields.get(_FILENAME)
            return "" if raw_name is None else decode_original_filename(raw_name)
        except ShamanError:
            return None  # refused: by aiohttp, the one way refusals are made


class Partial:
    """An upload the lane takes whose body has not all come: its head parsed once, the
    body so far, its registration as in flight, and when it began."""

    __slots__ = ("request", "filename", "incoming", "started")

    def __init__(
        self, request: _Request, filename: str, incoming: IncomingSmall, started: float
    ) -> None:
        self.request = request
        self.filename = filename
        self.incoming = incoming
        self.started = started


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


_date_second = -1
_date_text = ""


def _date() -> str:
    global _date_second, _date_text
    now = int(time.time())
    if now != _date_second:
        _date_second, _date_text = now, formatdate(now, usegmt=True)
    return _date_text


def _head(status: int, body: bytes) -> bytes:
    """The answer's head, as aiohttp writes it for the same response."""
    if status == 204:
        fields = ""  # no body, no length
    elif body:
        fields = f"{_JSON_HEAD}Content-Length: {len(body)}\r\n"
    else:
        fields = "Content-Length: 0\r\n"
    phrase = HTTPStatus(status).phrase
    server = f"Date: {_date()}\r\nServer: {SERVER_SOFTWARE}\r\n\r\n"
    return f"HTTP/1.1 {status} {phrase}\r\n{fields}{server}".encode("ascii")


# What a handler must have for the lane to tell it is idle and to keep its keep-alive
# timer right (aiohttp's RequestHandler internals; without them the lane stays off).
_HANDLER_STATE = (
    "_waiter",
    "_messages",
    "_payload_parser",
    "_upgraded",
    "_close",
    "_force_close",
    "_request_count",
    "_keepalive_timeout",
    "_next_keepalive_close_time",
    "_keepalive_handle",
)


# How long the start of a small upload is held for the rest of its body (a client may
# send head and body apart: urllib3 2 does); then aiohttp gets it, timeouts and all.
HOLD_SECONDS = 0.5


class _Held:
    """The start of an upload held for the rest of its body: the bytes as they came (for
    aiohttp, if it gets them after all), the lane's Partial and the deadline."""

    __slots__ = ("data", "partial", "timer")

    def __init__(self, data: bytes, partial: Partial, timer: asyncio.TimerHandle) -> None:
        self.data = data
        self.partial = partial
        self.timer = timer


class _FastLaneHandler(UnfoldingRequestHandler):
    def __init__(self, *args: Any, lane: FastLane | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lane = lane if all(hasattr(self, name) for name in _HANDLER_STATE) else None
        self._held: _Held | None = None

    def data_received(self, data: bytes) -> None:
        held, self._held = self._held, None
        lane = self._lane
        answer: bytes | Partial | None = None
        if held is not None and lane is not None:
            answer = lane.more(held.partial, data)
            data = held.data + data
        elif lane is not None and data and self._idle():
            answer = lane.answer(data)
        if isinstance(answer, bytes):
            if held is not None:
                held.timer.cancel()
            self._answered(answer)
            return
        if answer is not None:  # the rest of the body is still to come
            timer = held.timer if held is not None else self._hold_timer()
            self._held = _Held(data, answer, timer)
            return
        if held is not None:
            held.timer.cancel()
        super().data_received(data)

    def _hold_timer(self) -> asyncio.TimerHandle:
        return self._loop.call_later(HOLD_SECONDS, self._release)

    def _release(self) -> None:
        """The rest of a held upload is late: aiohttp takes it from here."""
        held, self._held = self._held, None
        if held is not None:
            held.partial.incoming.end()
            super().data_received(held.data)

    def connection_lost(self, exc: BaseException | None) -> None:
        held, self._held = self._held, None
        if held is not None and self._lane is not None:
            held.timer.cancel()
            self._lane.disconnected(held.partial)
        super().connection_lost(exc)

    def _idle(self) -> bool:
        """Waiting for a next request, with nothing of one received yet."""
        waiter = self._waiter
        return (
            waiter is not None
            and not waiter.done()
            and not self._messages
            and self._payload_parser is None
            and not (self._upgraded or self._close or self._force_close)
            and self.transport is not None
            and self._parser.between_messages()  # type: ignore[union-attr]
        )

    def _answered(self, answer: bytes) -> None:
        assert self.transport is not None
        self.transport.write(answer)
        self._request_count += 1  # a request parsed, as the connection guard counts them
        timeout = self._keepalive_timeout
        if timeout > 0:  # the idle connection is closed `timeout` after this answer
            loop = self._loop
            self._next_keepalive_close_time = loop.time() + timeout
            if self._keepalive_handle is None:
                self._keepalive_handle = loop.call_at(
                    self._next_keepalive_close_time, self._process_keepalive
                )


class FastLaneServer(UnfoldingServer):
    """aiohttp's low-level server whose connections take the fast lane when `lane` is
    set (see the module docstring), and accept obs-folded header lines."""

    lane: FastLane | None = None

    def __call__(self) -> RequestHandler:
        return _FastLaneHandler(self, loop=self._loop, lane=self.lane, **self._kwargs)
