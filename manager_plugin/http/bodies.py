"""Reading request bodies: bounded JSON, parsed into core types with field-naming errors."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ..errors import InvalidRequest
from ..models import FileSpec
from ..paths import validate_checksum, validate_size

TRUE_VALUES = frozenset({"true", "True", "TRUE", "1"})


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; size is bounded by the app's client_max_size (413)."""
    declared = request.content_length
    if declared is not None and declared > request.client_max_size:
        # Refuse before reading: otherwise a client declaring 50 GB and sending
        # slowly would hold the connection until the body limit is reached.
        raise web.HTTPRequestEntityTooLarge(max_size=request.client_max_size, actual_size=declared)
    raw = await request.read()
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
