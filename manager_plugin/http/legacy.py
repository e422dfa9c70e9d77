"""The Flamenco 2 (legacy) Shaman protocol, as spoken by `bat pack shaman+http://...`.

Routes, relative to the server root and, when configured, to `shaman.legacyBasePath`:

    GET  get-token                      -> a token for `Authorization: Bearer ...`
    POST checkout/requirements          CDF in, `file-unknown <path>` lines out
    POST files/{sha}/{size}             the bytes, streamed into the same file store
    POST checkout/create/{checkout id}  CDF in, the checkout's path (under jobs/) out

Same core as the Flamenco 3 API (validation, dedupe, checkouts, GC), so a file
uploaded through either protocol is found by the other. Only the wire format differs:
text bodies, and statuses the way BAT reads them (`errors.LEGACY_STATUS`, beside the
JSON API's table). BAT prints the body of most errors, but of `get-token`
only the status line, so those errors carry their hint in the reason phrase too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..cdf import (
    ANSWER_ALREADY_UPLOADING,
    ANSWER_FILE_UNKNOWN,
    AnswerWord,
    CdfEntry,
    CdfError,
    format_answer,
    parse_cdf,
)
from ..errors import ConfigError, InvalidPath, InvalidRequest, ShamanError, Unauthorized
from ..models import FileSpec, FileStatus
from ..paths import parse_size, validate_checksum, validate_path
from ..service import ShamanService
from .auth import ensure_access, public
from .bigbodies import in_slot, is_large
from .bodies import body_pace, header_is_true, read_body, refuse_encoded_body, whole_chunks
from .errors import LEGACY_STATUS, UPLOAD_STATUS, status_of
from .logtext import loggable

log = logging.getLogger(__name__)

# Handed out by get-token when no token is configured; any bearer token is accepted then.
DUMMY_TOKEN = "no-token-needed"
TOKEN_HINT = "set SHAMAN_JWT_TOKEN to the token configured on the manager (shaman.token)"
_ANSWER_WORDS: dict[FileStatus, AnswerWord] = {
    "unknown": ANSWER_FILE_UNKNOWN,
    "uploading": ANSWER_ALREADY_UPLOADING,
}
# BAT never retries a file it deferred: it asks for the checkout right after its own
# uploads. So a checkout waits (this long at most, under BAT's 300 s request timeout)
# for files that other clients are still uploading, instead of failing with 424.
UPLOADS_WAIT_SECONDS = 240.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def normalize_base_path(base_path: str) -> str:
    """`"/studio/shaman/"`, `"studio/shaman"` -> `"/studio/shaman"`; blank -> `""` (root).

    Raises ConfigError for a path under /api/, where Flamenco 3's JSON routes would
    silently win over the legacy ones of the same name.
    """
    parts = [part for part in base_path.strip().split("/") if part]
    if parts[:1] == ["api"]:
        raise ConfigError(
            f"shaman.legacyBasePath: {base_path!r} is under /api/, which the Flamenco 3 API "
            "uses; choose another path, e.g. '/shaman'"
        )
    if any(part in (".", "..") for part in parts):
        raise ConfigError(f"shaman.legacyBasePath: {base_path!r} has a '.' or '..' component")
    return "/" + "/".join(parts) if parts else ""


def _text(status: int, text: str, *, reason: str | None = None) -> web.Response:
    body = text if text.endswith("\n") or not text else text + "\n"
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return web.Response(status=status, text=body, reason=reason, headers=headers)


def _error_response(exc: ShamanError) -> web.Response:
    """Core error -> the status BAT expects, with the message as text/plain body."""
    status = status_of(exc, LEGACY_STATUS)
    if status < 300:
        return web.Response(status=status)
    if isinstance(exc, Unauthorized):
        return _text(status, f"{exc.message}; {TOKEN_HINT}")
    return _text(status, exc.message)


def _guarded(service: ShamanService, handler: Handler) -> Handler:
    """Shaman enabled (503) and bearer token (401) checks, then core errors as text.

    Registered as `public` so the app's JSON guard leaves these routes to this one.
    """

    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            ensure_access(service.config, request.headers.get("Authorization"))
            return await handler(request)
        except ShamanError as exc:
            return _error_response(exc)

    return public(guarded)


def _entries_to_specs(body: bytes) -> tuple[list[CdfEntry], list[FileSpec]]:
    """Parse and validate a CDF; errors name the line (400)."""
    try:
        entries = parse_cdf(body)
    except CdfError as exc:
        raise InvalidRequest(str(exc)) from None
    for entry in entries:
        validate_path(entry.path, f"line {entry.line_number}: path")
    return entries, [FileSpec(e.sha, e.size, e.path) for e in entries]


def _name_the_line(exc: InvalidPath, entries: list[CdfEntry]) -> InvalidRequest:
    """The core names a file by its index in the request; a CDF author wants the line."""
    if exc.index is None or exc.index >= len(entries):
        return exc
    return InvalidRequest(f"line {entries[exc.index].line_number}: {exc.reason}")


def _original_filename(request: web.Request) -> str:
    """The X-Shaman-Original-Filename header, for logs only.

    BAT sends it through `requests`, which encodes header values as Latin-1; other
    clients may send UTF-8. aiohttp would decode either as UTF-8 with escapes.
    """
    for name, value in request.raw_headers:
        if name.lower() == b"x-shaman-original-filename":
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                return value.decode("latin-1")
    return ""


def setup_legacy_routes(app: web.Application, service: ShamanService) -> None:
    """Register the legacy protocol at the root and under `config.legacy_base_path`."""

    async def get_token(request: web.Request) -> web.Response:
        if not service.config.shaman_enabled:
            return _text(
                503,
                "Shaman is disabled in this manager's configuration",
                reason="Service Unavailable: Shaman is disabled on this manager",
            )
        if service.config.token is not None:
            # Handing out the shared token would make it pointless.
            return _text(
                403,
                f"this manager requires a token; {TOKEN_HINT}",
                reason="Forbidden: this manager requires a token, set SHAMAN_JWT_TOKEN",
            )
        return web.Response(text=DUMMY_TOKEN)

    async def requirements(request: web.Request) -> web.Response:
        config = service.config
        body = await read_body(request, config.body_read_timeout, body_pace(config))

        def answer() -> str:
            _, specs = _entries_to_specs(body)
            statuses = service.requirements(specs)
            return format_answer((_ANSWER_WORDS[status], spec.path) for spec, status in statuses)

        if is_large(body):
            return web.Response(text=await in_slot(request, answer))
        return web.Response(text=await asyncio.to_thread(answer))

    async def upload(request: web.Request) -> web.Response:
        sha = validate_checksum(request.match_info["checksum"], "checksum")
        size = parse_size(request.match_info["filesize"], "filesize")
        can_defer = header_is_true(request, "X-Shaman-Can-Defer-Upload")
        path = loggable(_original_filename(request))
        extra = {"shaman_path": path}
        try:
            refuse_encoded_body(request)
            reader = whole_chunks(
                request.content, body_pace(service.config), request.content_length
            )
            outcome = await service.receive(sha, size, reader, can_defer=can_defer)
        except ShamanError as exc:
            log.info("upload %s %s/%d: %s", path, sha, size, exc.message, extra=extra)
            raise
        log.info("upload %s %s/%d: %s", path, sha, size, outcome.value, extra=extra)
        return web.Response(status=UPLOAD_STATUS[outcome])

    async def create_checkout(request: web.Request) -> web.Response:
        checkout_id = request.match_info["checkout_id"]
        config = service.config
        body = await read_body(request, config.body_read_timeout, body_pace(config))
        if is_large(body):
            entries, specs = await in_slot(request, lambda: _entries_to_specs(body))
        else:
            entries, specs = await asyncio.to_thread(_entries_to_specs, body)
        try:
            # The text answer has no room for warnings: they reach the server log.
            made = await service.checkout_when_uploaded(checkout_id, specs, UPLOADS_WAIT_SECONDS)
        except InvalidPath as exc:
            raise _name_the_line(exc, entries) from None
        return web.Response(text=made.path)

    token_route = public(get_token)
    routes = [
        ("POST", "checkout/requirements", _guarded(service, requirements)),
        ("POST", "files/{checksum}/{filesize}", _guarded(service, upload)),
        ("POST", "checkout/create/{checkout_id:.+}", _guarded(service, create_checkout)),
    ]
    prefixes = {"", normalize_base_path(service.config.legacy_base_path)}
    for prefix in sorted(prefixes):
        app.router.add_get(f"{prefix}/get-token", token_route)
        for method, path, handler in routes:
            app.router.add_route(method, f"{prefix}/{path}", handler)
