"""The OpenAPI 3.0 description of the Flamenco v3 API this server speaks, and its route.

Written to match `docs/protocol.md` (Flamenco 3's names and statuses), served at
`GET /api/v3/openapi.json`, and checked against the running server by a schemathesis
run in the test suite, so the document cannot drift from the code. The operations are
in `openapi_operations`, the data shapes in `openapi_schemas`.
"""

from __future__ import annotations

import copy
from typing import Any

from aiohttp import web

from .. import __version__
from .auth import public
from .openapi_operations import OPENAPI_PATH, PATHS
from .openapi_schemas import SCHEMAS

__all__ = ["OPENAPI_PATH", "add_openapi_route", "openapi_document"]


def openapi_document() -> dict[str, Any]:
    """A fresh copy of the document (callers may modify it)."""
    return copy.deepcopy(
        {
            "openapi": "3.0.3",
            "info": {
                "title": "Flamenco Manager API with Shaman (subset)",
                "version": __version__,
                "description": (
                    "The Flamenco v3 endpoints a Shaman client needs. Errors are JSON "
                    "`{code, message}`. Shaman endpoints need `Authorization: Bearer` only "
                    "when the server's config sets `shaman.token`."
                ),
            },
            "paths": PATHS,
            "components": {
                "schemas": SCHEMAS,
                "securitySchemes": {"shamanToken": {"type": "http", "scheme": "bearer"}},
            },
        }
    )


@public
async def serve_openapi(request: web.Request) -> web.Response:
    """`GET /api/v3/openapi.json`; open like version, so clients can discover the API."""
    return web.json_response(openapi_document())


def add_openapi_route(app: web.Application) -> None:
    """Register the document's route on `app` (one line in the app factory)."""
    app.router.add_get(OPENAPI_PATH, serve_openapi)
