"""Reading request bodies: bounded JSON, parsed into core types with field-naming errors."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import StreamReader, web

from ..errors import BodyTimeout, InvalidRequest
from ..filestore import Reader
from ..models import FileSpec
from ..paths import validate_checksum, validate_size

TRUE_VALUES = frozenset({"true", "True", "TRUE", "1"})


async def read_body(request: web.Request, timeout: float | None = None) -> bytes:
    """The whole (small) body: at most client_max_size bytes (413), and no read may
    wait longer than `timeout` seconds (408), so a stalled client cannot hold a
    connection forever."""
    limit = request.client_max_size
    declared = request.content_length
    if declared is not None and declared > limit:
        # Refuse before reading: otherwise a client declaring 50 GB and sending
        # slowly would hold the connection until the body limit is reached.
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=declared)
    body = bytearray()
    while True:
        try:
            chunk = await asyncio.wait_for(request.content.readany(), timeout)
        except TimeoutError:
            raise BodyTimeout(f"body: no data for {timeout:g} s; request aborted") from None
        except ConnectionResetError:
            # The client is gone; this answer is never read, but it is not a server error.
            raise InvalidRequest("body: client disconnected before sending all of it") from None
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(body))


async def read_json_object(request: web.Request, timeout: float | None = None) -> dict[str, Any]:
    """The body as a JSON object, read by `read_body` (413 when too big, 408 when stalled)."""
    raw = await read_body(request, timeout)
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"body: invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest(f"body: expected a JSON object, got {type(data).__name__}")
    return data


def parse_file_list(data: dict[str, Any], key: str = "files") -> list[FileSpec]:
    """`data[key]` as FileSpecs; sha and size are validated, paths only type-checked."""
    items = data.get(key)
    if not isinstance(items, list):
        got = "nothing" if items is None else type(items).__name__
        raise InvalidRequest(f"{key}: expected a list of files, got {got}")
    specs: list[FileSpec] = []
    for index, item in enumerate(items):
        field = f"{key}[{index}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{field}: expected an object with sha, size and path")
        sha = validate_checksum(item.get("sha"), f"{field}.sha")
        size = validate_size(item.get("size"), f"{field}.size")
        path = item.get("path")
        if not isinstance(path, str):
            raise InvalidRequest(f"{field}.path: expected string")
        specs.append(FileSpec(sha, size, path))
    return specs


def header_is_true(request: web.Request, name: str) -> bool:
    return request.headers.get(name, "").strip() in TRUE_VALUES


def whole_chunks(content: StreamReader) -> Reader:
    """`read(n)` over a request body that hands out the received chunks as they are.

    StreamReader.read(n) joins all buffered chunks into a new bytes object: a copy of
    every byte on the event loop. readchunk() gives one chunk without copying; only a
    chunk longer than n (at the declared size's end) is split.
    """
    rest = b""

    async def read(n: int) -> bytes:
        nonlocal rest
        if not rest:
            content.set_read_chunk_size(n)  # let the socket fill up to 2n, as read(n) does
            while True:
                data, end_of_http_chunk = await content.readchunk()
                # (b"", False) is the end of the body; a request without one has an
                # EmptyStreamReader that answers (b"", True) forever.
                if data or not end_of_http_chunk or content.at_eof():
                    break
            rest = data
        if len(rest) <= n:
            piece, rest = rest, b""
        else:
            piece, rest = rest[:n], rest[n:]
        return piece

    return read
