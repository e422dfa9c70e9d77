"""Access logging: one line per request (never the Authorization header)."""

from __future__ import annotations

import logging
import time

from aiohttp import web

from .filenames import HEADER as FILENAME_HEADER
from .filenames import filename_for_log

access_log = logging.getLogger("manager_plugin.http.access")

# A handler may store more for its log line here (e.g. a batch's record count).
LOG_EXTRA: web.RequestKey[str] = web.RequestKey("shaman_log_extra", str)


@web.middleware
async def access_log_middleware(
    request: web.Request, handler: web.RequestHandler
) -> web.StreamResponse:
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
        original = request.headers.get(FILENAME_HEADER)
        extra = f" file={filename_for_log(original)!r}" if original else ""
        extra += request.get(LOG_EXTRA, "")
        access_log.info(
            "%s %s %d in=%d out=%d %.1fms%s",
            request.method,
            request.path,
            status,
            request.content.total_bytes,
            sent,
            elapsed_ms,
            extra,
        )
