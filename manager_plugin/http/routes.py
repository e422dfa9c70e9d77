"""Flamenco 3's Shaman API under /api/v3: version, configuration and the shaman/* routes."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from ..errors import InvalidRequest, ShamanError
from ..models import FileSpec
from ..paths import parse_size, validate_checksum
from ..service import ShamanService
from .accesslog import FILENAME
from .auth import public
from .bigbodies import in_slot, is_large, requirements_pieces, stream_json
from .bodies import (
    body_pace,
    decode_json_object,
    header_is_true,
    parse_file_list,
    read_body,
    refuse_encoded_body,
    socket_source,
    whole_chunks,
)
from .errors import UPLOAD_STATUS, response_for
from .filenames import HEADER as FILENAME_HEADER
from .filenames import decode_original_filename

API = "/api/v3"
# Standalone mode speaks Flamenco's Shaman API but has no jobs API. Flamenco's add-on
# submits only when `shortversion` equals its own version; the current stable release:
FLAMENCO_COMPAT_VERSION = "3.8.5"
SERVER_NAME = "Shaman for Flamenco 3.8.5 (Python; standalone: no jobs API)"


def _checkout_request(raw: bytes) -> tuple[dict[str, Any], list[FileSpec]]:
    data = decode_json_object(raw)
    return data, parse_file_list(data)


def setup_flamenco_routes(app: web.Application, service: ShamanService) -> None:
    """Register the Flamenco 3 API on `app`, serving from `service`."""

    @public
    async def version(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "version": FLAMENCO_COMPAT_VERSION,
                "shortversion": FLAMENCO_COMPAT_VERSION,
                "name": SERVER_NAME,
                "git": "",
            }
        )

    @public
    async def configuration(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "storageLocation": str(service.config.storage_path),
                "shamanEnabled": service.config.shaman_enabled,
                "isFirstRun": False,
            }
        )

    async def requirements(request: web.Request) -> web.StreamResponse:
        config = service.config
        raw = await read_body(request, config.body_read_timeout, body_pace(config))
        if is_large(raw):
            answer = await in_slot(
                request, lambda: service.requirements(parse_file_list(decode_json_object(raw)))
            )
            del raw
            return await stream_json(request, requirements_pieces(answer), config.body_read_timeout)
        files = parse_file_list(decode_json_object(raw))
        answer = await asyncio.to_thread(service.requirements, files)
        return web.json_response(
            {
                "files": [
                    {"sha": spec.sha, "size": spec.size, "path": spec.path, "status": status}
                    for spec, status in answer
                ]
            }
        )

    async def file_status(request: web.Request) -> web.Response:
        sha = validate_checksum(request.match_info["checksum"], "checksum")
        size = parse_size(request.match_info["filesize"], "filesize")
        # On the loop, like a small upload: a few lstats cost less than a thread hop.
        return web.json_response({"status": service.file_status(sha, size)})

    async def upload(request: web.Request) -> web.Response:
        sha = validate_checksum(request.match_info["checksum"], "checksum")
        size = parse_size(request.match_info["filesize"], "filesize")
        refuse_encoded_body(request)
        can_defer = header_is_true(request, "X-Shaman-Can-Defer-Upload")
        if FILENAME_HEADER in request.headers:
            # 400 as Go does; the access log reuses the decoded name.
            request[FILENAME] = decode_original_filename(request.headers[FILENAME_HEADER])
        pace = body_pace(service.config)
        reader = whole_chunks(request.content, pace, request.content_length)
        source = socket_source(request, size, pace)
        try:
            try:
                outcome = await service.receive(
                    sha, size, reader, can_defer=can_defer, source=source
                )
                response = web.Response(status=UPLOAD_STATUS[outcome])
            except ShamanError as exc:
                if source is None or not source.taken:
                    raise
                response = response_for(exc)
            if source is not None and source.taken:
                return await source.answer(request, response)
            return response
        finally:
            if source is not None:
                source.close()

    async def checkout(request: web.Request) -> web.Response:
        config = service.config
        raw = await read_body(request, config.body_read_timeout, body_pace(config))
        if is_large(raw):
            data, files = await in_slot(request, lambda: _checkout_request(raw))
            del raw
        else:
            data, files = _checkout_request(raw)
        checkout_path = data.get("checkoutPath")
        if not isinstance(checkout_path, str):
            raise InvalidRequest("checkoutPath: expected string")
        made = await asyncio.to_thread(service.create_checkout, checkout_path, files)
        answer: dict[str, object] = {"checkoutPath": made.path}
        if made.warnings:
            answer["warnings"] = made.warnings  # additive: Flamenco's clients ignore it
        return web.json_response(answer)

    if service.config.gateway is None:  # in gateway mode, both are the upstream Manager's
        app.router.add_get(f"{API}/version", version)
        app.router.add_get(f"{API}/configuration", configuration)
    app.router.add_post(f"{API}/shaman/checkout/requirements", requirements)
    app.router.add_post(f"{API}/shaman/checkout/create", checkout)
    app.router.add_get(f"{API}/shaman/files/{{checksum}}/{{filesize}}", file_status)
    app.router.add_post(f"{API}/shaman/files/{{checksum}}/{{filesize}}", upload)
