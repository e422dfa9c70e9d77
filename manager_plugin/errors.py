"""Failures a caller must tell apart, one exception type each, with their facts as fields.

The core raises these and knows nothing of HTTP: `manager_plugin.http.errors` holds the
one table that maps them to statuses (legacy's overrides beside it).
"""

from __future__ import annotations

from collections.abc import Sequence

from .models import FileSpec

# Files a MissingFiles message names; the rest are counted.
_NAMED_MISSING = 10


class ShamanError(Exception):
    """Base of every expected failure; `str(err)` is the message for the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(ShamanError):
    """Malformed request body (bad JSON, wrong types); the message names the field."""


class InvalidChecksum(InvalidRequest):
    """A checksum that is not 64 lowercase hex characters."""


class InvalidSize(InvalidRequest):
    """A size that is not an integer >= 0."""


class InvalidPath(InvalidRequest):
    """A checkout or file path that breaks the checkout path rules.

    `field` names what was wrong ("checkoutPath", "path" of file number `index`, or
    "files" for the list as a whole); `reason` says why, without the field.
    """

    def __init__(self, field: str, reason: str, index: int | None = None) -> None:
        where = field if index is None else f"files[{index}].{field}"
        super().__init__(f"{where}: {reason}")
        self.field = field
        self.index = index
        self.reason = reason


class SizeMismatch(ShamanError):
    """The received bytes do not have the declared size; nothing was stored."""


class ChecksumMismatch(ShamanError):
    """The received bytes do not hash to the declared SHA-256; nothing was stored."""


class MustDefer(ShamanError):
    """Someone else is uploading this file and the client said it can upload later."""


class MissingFiles(ShamanError):
    """A checkout refers to files that are not stored; nothing was created."""

    def __init__(self, files: Sequence[FileSpec]) -> None:
        names = ", ".join(spec.path for spec in files[:_NAMED_MISSING])
        more = f" and {len(files) - _NAMED_MISSING} more" if len(files) > _NAMED_MISSING else ""
        super().__init__(f"{len(files)} files are not stored: {names}{more}")
        self.files = list(files)


class NoFreeCheckoutDir(ShamanError):
    """Every candidate checkout directory name was taken."""


class StorageFull(ShamanError):
    """The disk or quota is full (ENOSPC / EDQUOT); nothing partial was kept."""


class BodyTimeout(ShamanError):
    """The client stopped sending the request body for too long."""


class ClientDisconnected(ShamanError):
    """The client closed the connection before sending the whole body; nothing was stored.

    Nobody reads the answer; the status (nginx's 499) is for the access log."""

    def __init__(self, received: int, expected: int | None) -> None:
        of = f" of {expected}" if expected is not None else ""
        super().__init__(f"client disconnected after {received}{of} body bytes")
        self.received = received
        self.expected = expected


class UnsupportedEncoding(ShamanError):
    """A body with a Content-Encoding other than identity where bytes are stored as sent."""


class ShamanDisabled(ShamanError):
    """Shaman is switched off in the configuration."""


class Unauthorized(ShamanError):
    """A token is configured and the request did not carry it."""


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key (and YAML line)."""
