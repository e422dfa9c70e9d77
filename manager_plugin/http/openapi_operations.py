"""The OpenAPI document's operations (`paths`): what each route takes and answers.

Statuses shared by many operations are written once (`_SHAMAN_COMMON`, `_BODY_ERRORS`)
and merged in; the batch limits quoted to clients come from `manager_plugin.protocol`.
"""

from __future__ import annotations

from typing import Any

from ..protocol import BATCH_CONTENT_TYPE, BATCH_MAX_RECORD_SIZE, BATCH_MAX_RECORDS
from .openapi_schemas import JSON, SHA, SIZE, ref

OPENAPI_PATH = "/api/v3/openapi.json"
_MIB = BATCH_MAX_RECORD_SIZE // (1024 * 1024)
_BINARY = {"schema": {"type": "string", "format": "binary"}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": ref("Error")}}}


def _ok(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": ref(schema)}}}


def _json_body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {JSON: {"schema": ref(schema)}}}


# Statuses every Shaman endpoint may answer, besides its own.
_SHAMAN_COMMON = {
    "401": _error(
        "The server has `shaman.token` set and the request lacks "
        "`Authorization: Bearer <token>` or carries a wrong one."
    ),
    "503": _error(
        "Shaman is disabled in the Manager's configuration, or the server is at its "
        "connection cap with every connection busy (then with `Retry-After`)."
    ),
}
_STALLED = _error(
    "The request body stalled longer than the server's read timeout, or arrived "
    "slower than its minimum rate."
)
_ENCODED = _error("Content-Encoding other than identity: bodies are stored as sent.")
_NO_LENGTH = _error("The request has no Content-Length and is not chunked.")
_BAD_URL = _error("The checksum or size in the URL is malformed.")
# Statuses of every route whose body is JSON.
_BODY_ERRORS = {
    "400": _error("Malformed JSON, or a field of the wrong type; the message names the field."),
    "408": _STALLED,
    "413": _error("The request body is larger than the server accepts."),
    "415": _error("The body has a Content-Encoding other than identity; send it as is."),
}
_SECURITY: list[dict[str, list[str]]] = [{}, {"shamanToken": []}]


def _shaman(operation_id: str, summary: str, responses: dict[str, Any], **more: Any) -> dict:
    """A Shaman operation: tagged, token-protected, with the common statuses."""
    return {
        "operationId": operation_id,
        "summary": summary,
        **more,
        "tags": ["shaman"],
        "security": _SECURITY,
        "responses": {**responses, **_SHAMAN_COMMON},
    }


def _meta(operation_id: str, summary: str, ok: dict[str, Any]) -> dict[str, Any]:
    get = {"operationId": operation_id, "summary": summary, "tags": ["meta"]}
    return {"get": {**get, "responses": {"200": ok}}}


def _header(name: str, description: str) -> dict[str, Any]:
    header = {"name": name, "in": "header", "required": False, "description": description}
    return {**header, "schema": {"type": "string"}}


def _in_path(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    param = {"name": name, "in": "path", "required": True, "description": description}
    return {**param, "schema": schema}


_FILE_PARAMS = [
    _in_path("checksum", SHA, "SHA-256 of the file, 64 lowercase hex characters."),
    _in_path("filesize", SIZE, "Size of the file in bytes."),
]

_BATCH_DESCRIPTION = (
    "Not part of Flamenco: clients fall back to `files/{checksum}/{filesize}` when this "
    "answers 404. The body is a sequence of records, each an ASCII line "
    f"`<sha256 hex> <size>\\n` followed by exactly `size` bytes; at most {BATCH_MAX_RECORDS:,} "
    f"records of at most {_MIB} MiB each. When the stream is malformed, the complete records "
    "before the bad one are still stored."
)

PATHS: dict[str, Any] = {
    "/api/v3/version": _meta(
        "getVersion",
        "Identify the server as Flamenco-compatible.",
        _ok("Name and version.", "FlamencoVersion"),
    ),
    "/api/v3/configuration": _meta(
        "getConfiguration",
        "Where the shared storage is and whether Shaman is on.",
        _ok("The Manager's configuration.", "ManagerConfiguration"),
    ),
    "/api/v3/shaman/checkout/requirements": {
        "post": _shaman(
            "shamanCheckoutRequirements",
            "Which of these files must the client upload?",
            {
                "200": _ok(
                    "The files the client must act on; stored ones are left out.",
                    "ShamanRequirementsResponse",
                ),
                **_BODY_ERRORS,
            },
            requestBody=_json_body("ShamanRequirementsRequest"),
        )
    },
    "/api/v3/shaman/checkout/create": {
        "post": _shaman(
            "shamanCheckout",
            "Create a checkout: a directory of symlinks to stored files.",
            {
                "200": _ok("The checkout path actually used.", "ShamanCheckoutResult"),
                **_BODY_ERRORS,
                "400": _error(
                    "Malformed JSON, a field of the wrong type, or an invalid checkout "
                    "path or file path; the message names the field."
                ),
                "409": _error("No free checkout directory could be found."),
                "424": _error("Some files are not stored; nothing was created."),
                "507": _error("The storage is full."),
            },
            requestBody=_json_body("ShamanCheckout"),
        )
    },
    "/api/v3/shaman/files/{checksum}/{filesize}": {
        "parameters": _FILE_PARAMS,
        "get": _shaman(
            "shamanFileStoreCheck",
            "Is this file stored, being uploaded, or unknown?",
            {"200": _ok("The file's status.", "ShamanSingleFileStatus"), "400": _BAD_URL},
        ),
        "post": _shaman(
            "shamanFileStore",
            "Upload a file's bytes, streamed.",
            {
                "204": {"description": "Received, verified and stored."},
                "208": {"description": "Already stored (maybe by a concurrent upload)."},
                "400": _BAD_URL,
                "408": _STALLED,
                "415": _ENCODED,
                "411": _NO_LENGTH,
                "413": _error("The declared size is larger than the server accepts."),
                "417": _error(
                    "The received bytes do not match the declared size or checksum; "
                    "nothing was stored."
                ),
                "425": _error("Someone else is uploading this file and the client can defer."),
                "507": _error("The storage is full; nothing was stored."),
            },
            parameters=[
                _header(
                    "X-Shaman-Can-Defer-Upload",
                    "`true`, `True` or `1`: the client can upload later.",
                ),
                _header(
                    "X-Shaman-Original-Filename", "The file's path, for the server's logs only."
                ),
            ],
            # HTTP cannot tell "no body" from an empty one, and an empty file is a valid
            # upload (size 0).
            requestBody={"required": False, "content": {"application/octet-stream": _BINARY}},
        ),
    },
    "/api/v3/shaman/batch-upload": {
        "post": _shaman(
            "shamanBatchUpload",
            "Upload many small files in one streamed request (extension).",
            {
                "200": _ok("One result per record, in order.", "ShamanBatchUploadResult"),
                "400": _error(
                    "A malformed stream: a bad header line, a truncated record, a record "
                    f"over {_MIB} MiB or more than {BATCH_MAX_RECORDS:,} records; the message "
                    "names the record."
                ),
                "408": _STALLED,
                "415": _ENCODED,
                "411": _NO_LENGTH,
                "507": _error("The storage is full; the current group was not stored."),
            },
            description=_BATCH_DESCRIPTION,
            # An empty body is a batch of zero records; the server does not look at the
            # Content-Type, so octet-stream is the same body.
            requestBody={
                "required": False,
                "content": {BATCH_CONTENT_TYPE: _BINARY, "application/octet-stream": _BINARY},
            },
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
                    "content": {JSON: {"schema": {"type": "object"}}},
                }
            },
        }
    },
}
