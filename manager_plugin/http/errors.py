"""The one place where failures become HTTP responses: the status table, JSON `{"code", "message"}`.

Core errors carry no status; `STATUS` gives each its status as Flamenco 3's Shaman API
prescribes it (docs/protocol.md). Legacy's overrides (BAT reads some differently) sit
beside it in `LEGACY_STATUS`, so both protocols are read in one screen.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from ..errors import (
    BodyTimeout,
    ChecksumMismatch,
    ClientDisconnected,
    InvalidRequest,
    MissingFiles,
    MustDefer,
    NoFreeCheckoutDir,
    ShamanDisabled,
    ShamanError,
    SizeMismatch,
    StorageFull,
    Unauthorized,
    UnsupportedEncoding,
)
from ..store import Received
from .logtext import loggable

log = logging.getLogger(__name__)

# Looked up along the exception's class hierarchy (InvalidPath is an InvalidRequest).
STATUS: dict[type[ShamanError], int] = {
    InvalidRequest: 400,
    Unauthorized: 401,
    BodyTimeout: 408,
    NoFreeCheckoutDir: 409,
    UnsupportedEncoding: 415,
    SizeMismatch: 417,
    ChecksumMismatch: 417,
    MissingFiles: 424,
    MustDefer: 425,
    # nginx's "client closed request": nobody reads the answer, it is for the access log.
    ClientDisconnected: 499,
    ShamanDisabled: 503,
    StorageFull: 507,
}
# The legacy protocol (BAT) treats 208 as "already there", or as "defer" when it
# offered to defer; Flamenco 3's 425 would be a hard error to it.
LEGACY_STATUS: dict[type[ShamanError], int] = {**STATUS, MustDefer: 208}
# How an upload that did not fail is answered, in both protocols (208: Already Reported).
UPLOAD_STATUS: dict[Received, int] = {Received.STORED: 204, Received.ALREADY_STORED: 208}

# Headers worth keeping when an aiohttp HTTPException becomes our JSON error.
_KEEP_HEADERS = ("Allow", "WWW-Authenticate", "Retry-After")


def status_of(exc: ShamanError, table: dict[type[ShamanError], int] = STATUS) -> int:
    """The status `table` gives `exc` (or its nearest listed base class); 500 if none."""
    for cls in type(exc).__mro__:
        status = table.get(cls)
        if status is not None:
            return status
    return 500


def error_body(status: int, message: str) -> dict[str, object]:
    """The JSON body of every error answer."""
    return {"code": status, "message": message}


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(error_body(status, message), status=status, headers=headers)


INTERNAL_ERROR = "internal server error; see the server log"


def log_internal_error(method: str, path: str) -> None:
    """Log the exception being handled, for a request answered 500 INTERNAL_ERROR."""
    log.exception("internal error in %s %s", loggable(method), loggable(path))


def response_for(exc: ShamanError) -> web.Response:
    status = status_of(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return error_response(status, exc.message, headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
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
        log_internal_error(request.method, request.path)
        return error_response(500, INTERNAL_ERROR)
