"""The server's validators for what clients send: checksums, sizes, checkout and file paths.

The rules themselves are `manager_plugin.protocol`'s (shared with the engine); this
module turns a broken rule into the error that names the field. Each validator returns
the normalized value or raises an `InvalidRequest` subclass.
"""

from __future__ import annotations

from .errors import InvalidChecksum, InvalidPath, InvalidSize
from .protocol import (
    MAX_DEPTH,
    MAX_PATH_BYTES,
    is_checksum,
    path_problem,
    size_problem,
    strip_checkout_path,
)


def validate_checksum(value: object, field: str = "sha") -> str:
    """Return `value` if it is a SHA-256 hex digest: exactly 64 lowercase hex characters."""
    if not is_checksum(value):
        raise InvalidChecksum(f"{field}: expected 64 lowercase hex characters, got {value!r:.80}")
    assert isinstance(value, str)
    return value


def validate_size(value: object, field: str = "size") -> int:
    """Return `value` if it is an integer >= 0 (booleans are not sizes)."""
    problem = size_problem(value)
    if problem is not None:
        raise InvalidSize(f"{field}: {problem}")
    assert isinstance(value, int)
    return value


def parse_size(text: str, field: str = "size") -> int:
    """Parse a size from a URL segment: decimal digits only."""
    if not text.isascii() or not text.isdigit() or len(text) > 20:
        raise InvalidSize(f"{field}: expected a non-negative integer, got {text!r:.80}")
    return validate_size(int(text), field)


def validate_path(value: object, field: str = "path", index: int | None = None) -> str:
    """Return `value` if it is a safe relative path under Flamenco's checkout path rules;
    `index` is the file's place in the request when `value` is one file's path."""
    problem = path_problem(value)
    if problem is not None:
        raise InvalidPath(field, problem, index)
    assert isinstance(value, str)
    return value


def check_depth(levels: int, value: str, field: str) -> None:
    """Refuse `value` if it lies `levels` path components deep, more than MAX_DEPTH."""
    if levels > MAX_DEPTH:
        raise InvalidPath(
            field,
            f"{levels} levels deep (with the checkout path), more than {MAX_DEPTH}: "
            f"{value!r:.200}",
        )


def check_path_bytes(length: int, what: str, field: str) -> None:
    """Refuse a path or link target of `length` bytes the OS cannot hold."""
    if length > MAX_PATH_BYTES:
        raise InvalidPath(
            field, f"{what} would be {length} bytes, more than the OS takes ({MAX_PATH_BYTES})"
        )


def validate_checkout_path(value: object, field: str = "checkoutPath") -> str:
    """Validate a checkout path; trailing slashes are tolerated and removed.

    `protocol.JOBS_ROOT` is not a path here: the checkout builder handles it itself.
    """
    if isinstance(value, str):
        value = strip_checkout_path(value)
    return validate_path(value, field)
