"""Failures a caller must tell apart, one exception type each.

The core raises these; `manager_plugin.http.errors` maps them to HTTP statuses in
one place. `status` is the HTTP status the protocol prescribes for the failure.
"""

from __future__ import annotations

from collections.abc import Sequence


class ShamanError(Exception):
    """Base of every expected failure; `str(err)` is the message for the client."""

    status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(ShamanError):
    """Malformed request body (bad JSON, wrong types); the message names the field."""

    status = 400


class InvalidChecksum(InvalidRequest):
    """A checksum that is not 64 lowercase hex characters."""


class InvalidSize(InvalidRequest):
    """A size that is not an integer >= 0."""


class InvalidPath(InvalidRequest):
    """A checkout or file path that breaks the checkout path rules."""


class SizeMismatch(ShamanError):
    """The received bytes do not have the declared size; nothing was stored."""

    status = 417


class ChecksumMismatch(ShamanError):
    """The received bytes do not hash to the declared SHA-256; nothing was stored."""

    status = 417


class AlreadyStored(ShamanError):
    """The file is stored already (possibly by a concurrent upload that finished first)."""

    status = 208


class MustDefer(ShamanError):
    """Someone else is uploading this file and the client said it can upload later."""

    status = 425


class MissingFiles(ShamanError):
    """A checkout refers to files that are not stored; nothing was created."""

    status = 424

    def __init__(self, message: str, missing: Sequence[object]) -> None:
        super().__init__(message)
        self.missing = list(missing)


class NoFreeCheckoutDir(ShamanError):
    """Every candidate checkout directory name was taken."""

    status = 409


class StorageFull(ShamanError):
    """The disk or quota is full (ENOSPC / EDQUOT); nothing partial was kept."""

    status = 507


class BodyTimeout(ShamanError):
    """The client stopped sending the request body for too long."""

    status = 408


class ClientDisconnected(ShamanError):
    """The client closed the connection before sending the whole body; nothing was stored.

    Nobody reads the answer; the status (nginx's 499) is for the access log."""

    status = 499

    def __init__(self, received: int, expected: int | None) -> None:
        of = f" of {expected}" if expected is not None else ""
        super().__init__(f"client disconnected after {received}{of} body bytes")
        self.received = received
        self.expected = expected


class UnsupportedEncoding(ShamanError):
    """A body with a Content-Encoding other than identity where bytes are stored as sent."""

    status = 415


class ShamanDisabled(ShamanError):
    """Shaman is switched off in the configuration."""

    status = 503


class Unauthorized(ShamanError):
    """A token is configured and the request did not carry it."""

    status = 401


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key (and YAML line)."""
