"""Access logging: one line per request (never the Authorization header).

Everything the client chose (method, path, file name) is escaped by `loggable`, so a
request can never write a line of its own into the log.
"""

from __future__ import annotations

import asyncio
import logging
import time

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
        # Written once the answer is on its way: formatting and writing the line is then
        # off the client's wait (the next turn of the loop, after the response is sent).
        asyncio.get_running_loop().call_soon(_log_request, request, status, sent, elapsed_ms)


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
