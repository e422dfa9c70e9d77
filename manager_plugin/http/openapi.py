"""The OpenAPI 3.0 description of the Flamenco v3 API this server speaks.

Written to match `docs/protocol.md` (Flamenco 3's names and statuses), served at
`GET /api/v3/openapi.json`, and checked against the running server by a
schemathesis run in the test suite, so the document cannot drift from the code.
"""

from __future__ import annotations

import copy
from typing import Any

from aiohttp import web

from .. import __version__
from .auth import public

OPENAPI_PATH = "/api/v3/openapi.json"

SHA_PATTERN = "^[0-9a-f]{64}$"
MAX_SIZE = 2**63 - 1  # int64, as in Flamenco

# Checkout path rules (docs/protocol.md) as far as a regex states them: relative,
# '/'-separated, no empty, '.' or '..' component, none of `\ ? * : ; { }` and no
# control characters. The 255-byte limit per component is checked by the server.
_BAD = "\\\\?*:;{}\\x00-\\x1f\\x7f"
_SEGMENT = f"(?:[^./{_BAD}]|\\.[^./{_BAD}]|\\.\\.[^/{_BAD}])[^/{_BAD}]*"
PATH_PATTERN = f"^{_SEGMENT}(?:/{_SEGMENT})*$"
CHECKOUT_PATH_PATTERN = f"^{_SEGMENT}(?:/{_SEGMENT})*/*$"  # trailing slashes are tolerated

_JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": _ref("Error")}}}


def _ok(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": _ref(schema)}}}


def _json_body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {_JSON: {"schema": _ref(schema)}}}


# Statuses every Shaman endpoint may answer, besides its own.
_SHAMAN_COMMON: dict[str, dict[str, Any]] = {
    "401": _error(
        "The server has `shaman.token` set and the request lacks "
        "`Authorization: Bearer <token>` or carries a wrong one."
    ),
    "503": _error(
        "Shaman is disabled in the Manager's configuration, or the server is at its "
        "connection cap with every connection busy (then with `Retry-After`)."
    ),
}

_JSON_BODY_ERRORS: dict[str, dict[str, Any]] = {
    "400": _error("Malformed JSON, or a field of the wrong type; the message names the field."),
    "408": _error(
        "The request body stalled longer than the server's read timeout, or arrived "
        "slower than its minimum rate."
    ),
    "413": _error("The request body is larger than the server accepts."),
    "415": _error("The body has a Content-Encoding other than identity; send it as is."),
}

_SECURITY: list[dict[str, list[str]]] = [{}, {"shamanToken": []}]


def _shaman_op(op: dict[str, Any]) -> dict[str, Any]:
    op.setdefault("tags", ["shaman"])
    op["security"] = _SECURITY
    op["responses"] = {**op["responses"], **_SHAMAN_COMMON}
    return op


_SIZE = {"type": "integer", "format": "int64", "minimum": 0, "maximum": MAX_SIZE}

_FILE_SPEC = {
    "type": "object",
    "required": ["sha", "size", "path"],
    "properties": {
        "sha": {"type": "string", "pattern": SHA_PATTERN, "description": "SHA-256, hex."},
        "size": _SIZE,
        "path": {
            "type": "string",
            "description": "Path of the file in the checkout (only echoed back here).",
        },
    },
}

_CHECKOUT_FILE_SPEC = {
    **_FILE_SPEC,
    "properties": {
        **_FILE_SPEC["properties"],
        "path": {
            "type": "string",
            "pattern": PATH_PATTERN,
            "description": "Path of the file in the checkout, under the checkout path rules.",
        },
    },
}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": {"type": "integer", "description": "The HTTP status code."},
            "message": {"type": "string"},
        },
    },
    "FlamencoVersion": {
        "type": "object",
        "required": ["version", "name"],
        "properties": {"version": {"type": "string"}, "name": {"type": "string"}},
    },
    "ManagerConfiguration": {
        "type": "object",
        "required": ["storageLocation", "shamanEnabled", "isFirstRun"],
        "properties": {
            "storageLocation": {"type": "string"},
            "shamanEnabled": {"type": "boolean"},
            "isFirstRun": {"type": "boolean"},
        },
    },
    "ShamanFileSpec": _FILE_SPEC,
    "ShamanFileSpecWithStatus": {
        "type": "object",
        "required": ["sha", "size", "path", "status"],
        "properties": {
            **_FILE_SPEC["properties"],
            # Stored files are left out of a requirements answer.
            "status": {"type": "string", "enum": ["unknown", "uploading"]},
        },
    },
    "ShamanRequirementsRequest": {
        "type": "object",
        "required": ["files"],
        "properties": {"files": {"type": "array", "items": _ref("ShamanFileSpec")}},
    },
    "ShamanRequirementsResponse": {
        "type": "object",
        "required": ["files"],
        "properties": {"files": {"type": "array", "items": _ref("ShamanFileSpecWithStatus")}},
    },
    "ShamanCheckoutFileSpec": _CHECKOUT_FILE_SPEC,
    "ShamanCheckout": {
        "type": "object",
        "required": ["files", "checkoutPath"],
        "properties": {
            "files": {"type": "array", "items": _ref("ShamanCheckoutFileSpec")},
            "checkoutPath": {
                "type": "string",
                "pattern": CHECKOUT_PATH_PATTERN,
                "description": "Where to create the checkout, relative to the jobs directory.",
            },
        },
    },
    "ShamanCheckoutResult": {
        "type": "object",
        "required": ["checkoutPath"],
        "properties": {
            "checkoutPath": {"type": "string"},
            "warnings": {
                "type": "array",
                "items": {"type": "string"},
                "description": (
                    "Only when there is something to say: names in the checkout that "
                    "Windows or macOS workers cannot hold as given (shaman.portableNames: "
                    "warn), one line each."
                ),
            },
        },
    },
    "ShamanBatchUploadResult": {
        "type": "object",
        "required": ["files"],
        "properties": {
            "files": {
                "type": "array",
                "description": "One entry per record of the request, in order.",
                "items": {
                    "type": "object",
                    "required": ["sha", "size", "status"],
                    "properties": {
                        "sha": {"type": "string", "pattern": SHA_PATTERN},
                        "size": _SIZE,
                        "status": {
                            "type": "string",
                            "enum": ["stored", "exists", "rejected"],
                            "description": (
                                "`stored`: written by this request; `exists`: was already "
                                "stored; `rejected`: the bytes do not match the checksum, "
                                "nothing was stored for it."
                            ),
                        },
                        "message": {"type": "string", "description": "Why it was rejected."},
                    },
                },
            }
        },
    },
    "ShamanSingleFileStatus": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string", "enum": ["unknown", "uploading", "stored"]}},
    },
}

_FILE_PARAMS = [
    {
        "name": "checksum",
        "in": "path",
        "required": True,
        "description": "SHA-256 of the file, 64 lowercase hex characters.",
        "schema": {"type": "string", "pattern": SHA_PATTERN},
    },
    {
        "name": "filesize",
        "in": "path",
        "required": True,
        "description": "Size of the file in bytes.",
        "schema": _SIZE,
    },
]

_PATHS: dict[str, Any] = {
    "/api/v3/version": {
        "get": {
            "operationId": "getVersion",
            "summary": "Identify the server as Flamenco-compatible.",
            "tags": ["meta"],
            "responses": {"200": _ok("Name and version.", "FlamencoVersion")},
        }
    },
    "/api/v3/configuration": {
        "get": {
            "operationId": "getConfiguration",
            "summary": "Where the shared storage is and whether Shaman is on.",
            "tags": ["meta"],
            "responses": {"200": _ok("The Manager's configuration.", "ManagerConfiguration")},
        }
    },
    "/api/v3/shaman/checkout/requirements": {
        "post": _shaman_op(
            {
                "operationId": "shamanCheckoutRequirements",
                "summary": "Which of these files must the client upload?",
                "requestBody": _json_body("ShamanRequirementsRequest"),
                "responses": {
                    "200": _ok(
                        "The files the client must act on; stored ones are left out.",
                        "ShamanRequirementsResponse",
                    ),
                    **_JSON_BODY_ERRORS,
                },
            }
        )
    },
    "/api/v3/shaman/checkout/create": {
        "post": _shaman_op(
            {
                "operationId": "shamanCheckout",
                "summary": "Create a checkout: a directory of symlinks to stored files.",
                "requestBody": _json_body("ShamanCheckout"),
                "responses": {
                    "200": _ok("The checkout path actually used.", "ShamanCheckoutResult"),
                    **_JSON_BODY_ERRORS,
                    "400": _error(
                        "Malformed JSON, a field of the wrong type, or an invalid checkout "
                        "path or file path; the message names the field."
                    ),
                    "409": _error("No free checkout directory could be found."),
                    "424": _error("Some files are not stored; nothing was created."),
                    "507": _error("The storage is full."),
                },
            }
        )
    },
    "/api/v3/shaman/files/{checksum}/{filesize}": {
        "parameters": _FILE_PARAMS,
        "get": _shaman_op(
            {
                "operationId": "shamanFileStoreCheck",
                "summary": "Is this file stored, being uploaded, or unknown?",
                "responses": {
                    "200": _ok("The file's status.", "ShamanSingleFileStatus"),
                    "400": _error("The checksum or size in the URL is malformed."),
                },
            }
        ),
        "post": _shaman_op(
            {
                "operationId": "shamanFileStore",
                "summary": "Upload a file's bytes, streamed.",
                "parameters": [
                    {
                        "name": "X-Shaman-Can-Defer-Upload",
                        "in": "header",
                        "required": False,
                        "description": "`true`, `True` or `1`: the client can upload later.",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "X-Shaman-Original-Filename",
                        "in": "header",
                        "required": False,
                        "description": "The file's path, for the server's logs only.",
                        "schema": {"type": "string"},
                    },
                ],
                "requestBody": {
                    # HTTP cannot tell "no body" from an empty one, and an empty file
                    # is a valid upload (size 0).
                    "required": False,
                    "content": {
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}
                        }
                    },
                },
                "responses": {
                    "204": {"description": "Received, verified and stored."},
                    "208": {"description": "Already stored (maybe by a concurrent upload)."},
                    "400": _error("The checksum or size in the URL is malformed."),
                    "408": _error(
                        "The body stalled longer than the server's read timeout, or "
                        "arrived slower than its minimum rate."
                    ),
                    "415": _error(
                        "Content-Encoding other than identity: bodies are stored as sent."
                    ),
                    "411": _error("The request has no Content-Length and is not chunked."),
                    "413": _error("The declared size is larger than the server accepts."),
                    "417": _error(
                        "The received bytes do not match the declared size or checksum; "
                        "nothing was stored."
                    ),
                    "425": _error("Someone else is uploading this file and the client can defer."),
                    "507": _error("The storage is full; nothing was stored."),
                },
            }
        ),
    },
    "/api/v3/shaman/batch-upload": {
        "post": _shaman_op(
            {
                "operationId": "shamanBatchUpload",
                "summary": "Upload many small files in one streamed request (extension).",
                "description": (
                    "Not part of Flamenco: clients fall back to `files/{checksum}/{filesize}` "
                    "when this answers 404. The body is a sequence of records, each an ASCII "
                    "line `<sha256 hex> <size>\\n` followed by exactly `size` bytes; at most "
                    "10,000 records of at most 4 MiB each. When the stream is malformed, the "
                    "complete records before the bad one are still stored."
                ),
                "requestBody": {
                    # An empty body is a batch of zero records.
                    "required": False,
                    "content": {
                        "application/x-shaman-batch": {
                            "schema": {"type": "string", "format": "binary"}
                        },
                        # The same body; the server does not look at the Content-Type.
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}
                        },
                    },
                },
                "responses": {
                    "200": _ok("One result per record, in order.", "ShamanBatchUploadResult"),
                    "400": _error(
                        "A malformed stream: a bad header line, a truncated record, a record "
                        "over 4 MiB or more than 10,000 records; the message names the record."
                    ),
                    "408": _error(
                        "The body stalled longer than the server's read timeout, or "
                        "arrived slower than its minimum rate."
                    ),
                    "415": _error(
                        "Content-Encoding other than identity: bodies are stored as sent."
                    ),
                    "411": _error("The request has no Content-Length and is not chunked."),
                    "507": _error("The storage is full; the current group was not stored."),
                },
            }
        )
    },
    OPENAPI_PATH: {
        "get": {
            "operationId": "getOpenApi",
            "summary": "This document.",
            "tags": ["meta"],
            "responses": {
                "200": {
                    "description": "OpenAPI 3.0 document.",
                    "content": {_JSON: {"schema": {"type": "object"}}},
                }
            },
        }
    },
}


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
            "paths": _PATHS,
            "components": {
                "schemas": _SCHEMAS,
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
