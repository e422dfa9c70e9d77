"""Pure validators for what clients send: checksums, sizes, checkout and file paths.

Flamenco's checkout path rules are applied to checkout paths and to every per-file
path, so that nothing a client sends can point outside the checkout directory.
Each validator returns the normalized value or raises an `InvalidRequest` subclass
whose message names the offending field.
"""

from __future__ import annotations

import re

from .errors import InvalidChecksum, InvalidPath, InvalidSize

_HEX64 = re.compile(r"[0-9a-f]{64}")
# Characters Flamenco forbids, plus NUL/control characters that no filesystem wants.
_FORBIDDEN = re.compile(r"[\\?*:;{}\x00-\x1f\x7f]")
_MAX_COMPONENT_BYTES = 255
# Flamenco (Go) carries sizes as int64; anything larger cannot come from a real client.
MAX_SIZE = 2**63 - 1
# Directory levels of a checkout path and a file path together. Far beyond any real
# project, and low enough that a checkout's relative link targets ("../" per level)
# stay well inside the OS limit below.
MAX_DEPTH = 256
# Longest path (and symlink target) the OS takes, in bytes: Linux PATH_MAX less its NUL.
MAX_PATH_BYTES = 4095


def validate_checksum(value: object, field: str = "sha") -> str:
    """Return `value` if it is a SHA-256 hex digest: exactly 64 lowercase hex characters."""
    if not isinstance(value, str) or _HEX64.fullmatch(value) is None:
        raise InvalidChecksum(f"{field}: expected 64 lowercase hex characters, got {value!r:.80}")
    return value


def validate_size(value: object, field: str = "size") -> int:
    """Return `value` if it is an integer >= 0 (booleans are not sizes)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSize(f"{field}: expected integer, got {value!r:.80}")
    if value < 0:
        raise InvalidSize(f"{field}: must be >= 0, got {value}")
    if value > MAX_SIZE:
        raise InvalidSize(f"{field}: must be at most {MAX_SIZE}, got {value}")
    return value


def parse_size(text: str, field: str = "size") -> int:
    """Parse a size from a URL segment: decimal digits only."""
    if not text.isascii() or not text.isdigit() or len(text) > 20:
        raise InvalidSize(f"{field}: expected a non-negative integer, got {text!r:.80}")
    return validate_size(int(text), field)


def validate_path(value: object, field: str = "path") -> str:
    """Return `value` if it is a safe relative path under Flamenco's checkout path rules.

    Rejected: non-strings, empty, a leading '/', backslashes, any of ``? * : ; { }``
    (which also rules out drive letters), control characters, empty, '.' and '..'
    components, components over 255 bytes of UTF-8, and unencodable strings.
    """
    if not isinstance(value, str):
        raise InvalidPath(f"{field}: expected string, got {type(value).__name__}")
    if not value:
        raise InvalidPath(f"{field}: must not be empty")
    if value[0] == "/":
        raise InvalidPath(f"{field}: must be relative, got {value!r:.200}")
    bad = _FORBIDDEN.search(value)
    if bad is not None:
        raise InvalidPath(f"{field}: forbidden character {bad.group()!r} in {value!r:.200}")
    # One string test instead of splitting: catches '', '.' and '..' components anywhere.
    wrapped = f"/{value}/"
    if "//" in wrapped or "/./" in wrapped or "/../" in wrapped:
        raise InvalidPath(f"{field}: empty, '.' or '..' component in {value!r:.200}")
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidPath(f"{field}: not valid Unicode: {value!r:.200}") from None
    if len(encoded) > _MAX_COMPONENT_BYTES and any(
        len(part) > _MAX_COMPONENT_BYTES for part in encoded.split(b"/")
    ):
        raise InvalidPath(f"{field}: a component is longer than 255 bytes in {value!r:.200}")
    return value


def check_depth(levels: int, value: str, field: str) -> None:
    """Refuse `value` if it lies `levels` path components deep, more than MAX_DEPTH."""
    if levels > MAX_DEPTH:
        raise InvalidPath(
            f"{field}: {levels} levels deep (with the checkout path), more than {MAX_DEPTH}: "
            f"{value!r:.200}"
        )


def check_path_bytes(length: int, what: str, field: str) -> None:
    """Refuse a path or link target of `length` bytes the OS cannot hold."""
    if length > MAX_PATH_BYTES:
        raise InvalidPath(
            f"{field}: {what} would be {length} bytes, more than the OS takes ({MAX_PATH_BYTES})"
        )


def validate_checkout_path(value: object, field: str = "checkoutPath") -> str:
    """Validate a checkout path; trailing slashes are tolerated and removed."""
    if isinstance(value, str) and len(value) > 1:
        value = value.rstrip("/") or value
    return validate_path(value, field)
