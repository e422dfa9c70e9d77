"""Access logging: one line per request (never the Authorization header).

Everything the client chose (method, path, file name) is escaped by `loggable`, so a
request can never write a line of its own into the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from typing import NamedTuple

from aiohttp import web
from aiohttp.typedefs import Handler

from ..errors import ClientDisconnected
from .errors import STATUS
from .filenames import HEADER as FILENAME_HEADER
from .filenames import filename_for_log
from .logtext import loggable

access_log = logging.getLogger("manager_plugin.http.access")

# A handler may store more for its log line here (e.g. a batch's record count).
LOG_EXTRA: web.RequestKey[str] = web.RequestKey("shaman_log_extra", str)
# The X-Shaman-Original-Filename a handler decoded already (not decoded twice).
FILENAME: web.RequestKey[str] = web.RequestKey("shaman_filename", str)
# Body bytes received, when not all of them went through aiohttp (a spliced upload).
BODY_BYTES: web.RequestKey[int] = web.RequestKey("shaman_body_bytes", int)


class LogEntry(NamedTuple):
    """One request's access-log line, in parts (formatted when written)."""

    method: str
    path: str
    status: int
    received: int  # body bytes received
    declared: int | None  # its Content-Length
    sent: int  # body bytes answered
    elapsed_ms: float
    filename: str | None = None  # X-Shaman-Original-Filename, decoded
    raw_filename: str | None = None  # or as sent (decoded when the line is written)
    extra: str = ""


def log_access(entry: LogEntry) -> None:
    """Log `entry` with the lines of this loop's other requests (see `_Backlog`)."""
    _backlog().add(entry)


@web.middleware
async def access_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    sent = 0
    try:
        response = await handler(request)
        status = response.status
        if isinstance(response, web.Response):
            sent = response.content_length or 0
        else:  # streamed (e.g. forwarded by the gateway): bytes written, its head included
            sent = response.body_length
        return response
    finally:
        elapsed_ms = (time.perf_counter() - started) * 1000
        _backlog().add(
            LogEntry(
                request.method,
                request.path,
                status,
                request.get(BODY_BYTES, request.content.total_bytes),
                request.content_length,
                sent,
                elapsed_ms,
                request.get(FILENAME),
                request.headers.get(FILENAME_HEADER),
                request.get(LOG_EXTRA, ""),
            )
        )


class _Backlog:
    """Access-log lines of one event loop not written yet.

    A line is written once its answer is on its way, so formatting and writing it is
    off the client's wait; and the lines of WRITE_DELAY seconds are written in one turn
    of the loop rather than each in its own (a turn per line cost about a fifth of the
    server's CPU on Flamenco's one-request-per-file uploads). Each line's figures are
    the request's own; only its timestamp may be up to WRITE_DELAY late.
    """

    def __init__(self) -> None:
        self.entries: list[LogEntry] = []

    def add(self, entry: LogEntry) -> None:
        self.entries.append(entry)
        if len(self.entries) == 1:
            asyncio.get_running_loop().call_later(WRITE_DELAY, self.write_out)

    def write_out(self) -> None:
        entries, self.entries = self.entries, []
        for entry in entries:
            _write(entry)


WRITE_DELAY = 0.01
_BACKLOGS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Backlog] = (
    weakref.WeakKeyDictionary()
)


def _backlog() -> _Backlog:
    loop = asyncio.get_running_loop()
    backlog = _BACKLOGS.get(loop)
    if backlog is None:
        backlog = _BACKLOGS[loop] = _Backlog()
    return backlog


async def write_out_access_log(app: web.Application) -> None:
    """The lines still waiting, written now (the app's cleanup: the loop may end soon)."""
    _backlog().write_out()


def _write(entry: LogEntry) -> None:
    name = entry.filename
    if name is None and entry.raw_filename:
        name = filename_for_log(entry.raw_filename)
    extra = f" file={loggable(name)}" if name else ""
    extra += entry.extra
    if entry.status == STATUS[ClientDisconnected]:
        of = f" of {entry.declared}" if entry.declared is not None else ""
        extra += f" client disconnected after {entry.received}{of} body bytes"
    access_log.info(
        "%s %s %d in=%d out=%d %.1fms%s",
        loggable(entry.method),
        loggable(entry.path),
        entry.status,
        entry.received,
        entry.sent,
        entry.elapsed_ms,
        extra,
    )
