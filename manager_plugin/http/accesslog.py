"""Access logging: one line per request (never the Authorization header).

Everything the client chose (method, path, file name) is escaped by `loggable`, so a
request can never write a line of its own into the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref

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
        _backlog().add((request, status, sent, elapsed_ms))


class _Backlog:
    """Access-log lines of one event loop not written yet.

    A line is written once its answer is on its way, so formatting and writing it is
    off the client's wait; and the lines of WRITE_DELAY seconds are written in one turn
    of the loop rather than each in its own (a turn per line cost about a fifth of the
    server's CPU on Flamenco's one-request-per-file uploads). Each line's figures are
    the request's own; only its timestamp may be up to WRITE_DELAY late.
    """

    def __init__(self) -> None:
        self.entries: list[tuple[web.Request, int, int, float]] = []

    def add(self, entry: tuple[web.Request, int, int, float]) -> None:
        self.entries.append(entry)
        if len(self.entries) == 1:
            asyncio.get_running_loop().call_later(WRITE_DELAY, self.write_out)

    def write_out(self) -> None:
        entries, self.entries = self.entries, []
        for entry in entries:
            _log_request(*entry)


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


def _log_request(request: web.Request, status: int, sent: int, elapsed_ms: float) -> None:
    name = request.get(FILENAME)
    if name is None:
        original = request.headers.get(FILENAME_HEADER)
        name = filename_for_log(original) if original else None
    extra = f" file={loggable(name)}" if name else ""
    extra += request.get(LOG_EXTRA, "")
    received = request.get(BODY_BYTES, request.content.total_bytes)
    if status == STATUS[ClientDisconnected]:
        of = f" of {request.content_length}" if request.content_length is not None else ""
        extra += f" client disconnected after {received}{of} body bytes"
    access_log.info(
        "%s %s %d in=%d out=%d %.1fms%s",
        loggable(request.method),
        loggable(request.path),
        status,
        received,
        sent,
        elapsed_ms,
        extra,
    )
