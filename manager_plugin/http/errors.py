"""The one place where failures become HTTP responses: JSON `{"code", "message"}`."""

from __future__ import annotations

import logging

from aiohttp import web

from ..errors import ShamanError
from .logtext import loggable

log = logging.getLogger(__name__)

# Headers worth keeping when an aiohttp HTTPException becomes our JSON error.
_KEEP_HEADERS = ("Allow", "WWW-Authenticate", "Retry-After")


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response({"code": status, "message": message}, status=status, headers=headers)


def response_for(exc: ShamanError) -> web.Response:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    if exc.status < 300:
        # 208 Already Reported is an answer, not an error: no body.
        return web.Response(status=exc.status)
    return error_response(exc.status, exc.message, headers)


@web.middleware
async def error_middleware(request: web.Request, handler: web.RequestHandler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ShamanError as exc:
        return response_for(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: exc.headers[k] for k in _KEEP_HEADERS if k in exc.headers}
        message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        return error_response(exc.status, message or exc.reason, headers)
    except Exception:
        log.exception("internal error in %s %s", loggable(request.method), loggable(request.path))
        return error_response(500, "internal server error; see the server log")
