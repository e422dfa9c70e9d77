"""The OpenAPI document's data shapes (`components.schemas`) and its building blocks.

Patterns and limits come from `manager_plugin.protocol`, so the document states the
same checksum and path rules the server and the engine run.
"""

from __future__ import annotations

from typing import Any

from ..protocol import CHECKOUT_PATH_PATTERN, MAX_SIZE, PATH_PATTERN, SHA_PATTERN

JSON = "application/json"
SHA = {"type": "string", "pattern": f"^{SHA_PATTERN}$"}
SIZE = {"type": "integer", "format": "int64", "minimum": 0, "maximum": MAX_SIZE}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: list[str], **properties: Any) -> dict[str, Any]:
    """An object schema with `required` keys and `properties`."""
    return {"type": "object", "required": required, "properties": properties}


def _array_of(schema: str, **extra: Any) -> dict[str, Any]:
    return {"type": "array", "items": ref(schema), **extra}


_FILE_SPEC_PROPERTIES: dict[str, Any] = {
    "sha": {**SHA, "description": "SHA-256, hex."},
    "size": SIZE,
    "path": {
        "type": "string",
        "description": "Path of the file in the checkout (only echoed back here).",
    },
}

_BATCH_FILE_RESULT = _obj(
    ["sha", "size", "status"],
    sha=SHA,
    size=SIZE,
    status={
        "type": "string",
        "enum": ["stored", "exists", "rejected"],
        "description": (
            "`stored`: written by this request; `exists`: was already stored; `rejected`: "
            "the bytes do not match the checksum, nothing was stored for it."
        ),
    },
    message={"type": "string", "description": "Why it was rejected."},
)

SCHEMAS: dict[str, Any] = {
    "Error": _obj(
        ["code", "message"],
        code={"type": "integer", "description": "The HTTP status code."},
        message={"type": "string"},
    ),
    "FlamencoVersion": _obj(
        ["version", "name"], version={"type": "string"}, name={"type": "string"}
    ),
    "ManagerConfiguration": _obj(
        ["storageLocation", "shamanEnabled", "isFirstRun"],
        storageLocation={"type": "string"},
        shamanEnabled={"type": "boolean"},
        isFirstRun={"type": "boolean"},
    ),
    "ShamanFileSpec": _obj(["sha", "size", "path"], **_FILE_SPEC_PROPERTIES),
    "ShamanFileSpecWithStatus": _obj(
        ["sha", "size", "path", "status"],
        **_FILE_SPEC_PROPERTIES,
        # Stored files are left out of a requirements answer.
        status={"type": "string", "enum": ["unknown", "uploading"]},
    ),
    "ShamanRequirementsRequest": _obj(["files"], files=_array_of("ShamanFileSpec")),
    "ShamanRequirementsResponse": _obj(["files"], files=_array_of("ShamanFileSpecWithStatus")),
    "ShamanCheckoutFileSpec": _obj(
        ["sha", "size", "path"],
        **{
            **_FILE_SPEC_PROPERTIES,
            "path": {
                "type": "string",
                "pattern": PATH_PATTERN,
                "description": "Path of the file in the checkout, under the checkout path rules.",
            },
        },
    ),
    "ShamanCheckout": _obj(
        ["files", "checkoutPath"],
        files=_array_of("ShamanCheckoutFileSpec"),
        checkoutPath={
            "type": "string",
            "pattern": CHECKOUT_PATH_PATTERN,
            "description": "Where to create the checkout, relative to the jobs directory.",
        },
    ),
    "ShamanCheckoutResult": _obj(
        ["checkoutPath"],
        checkoutPath={"type": "string"},
        warnings={
            "type": "array",
            "items": {"type": "string"},
            "description": (
                "Only when there is something to say: names in the checkout that Windows or "
                "macOS workers cannot hold as given (shaman.portableNames: warn), one line each."
            ),
        },
    ),
    "ShamanBatchUploadResult": _obj(
        ["files"],
        files={
            "type": "array",
            "description": "One entry per record of the request, in order.",
            "items": _BATCH_FILE_RESULT,
        },
    ),
    "ShamanSingleFileStatus": _obj(
        ["status"], status={"type": "string", "enum": ["unknown", "uploading", "stored"]}
    ),
}
