"""The Shaman rules both sides share: checksums, sizes, checkout and file paths, batch records.

Stdlib only and free of imports from either side, so the add-on zip carries it as part
of the package and the manager re-exports it as `manager_plugin.protocol`. Every rule
is written here once: each check returns the reason a value breaks it (or None), and
each side turns reasons into its own errors (the server: `InvalidPath` and friends with
the field; the engine: a one-line message before anything is uploaded).
"""

from __future__ import annotations

import re

# -- identities -------------------------------------------------------------------

# SHA-256 as hex, lowercase only, as Flamenco's Go server stores and compares it.
SHA_PATTERN = "[0-9a-f]{64}"
_SHA = re.compile(SHA_PATTERN)
# Flamenco (Go) carries sizes as int64; anything larger cannot come from a real client.
MAX_SIZE = 2**63 - 1


def is_checksum(value: object) -> bool:
    """True for a SHA-256 hex digest: exactly 64 lowercase hex characters."""
    return isinstance(value, str) and _SHA.fullmatch(value) is not None


def size_problem(value: object) -> str | None:
    """Why `value` is not a file size (an int from 0 to MAX_SIZE; bools are not sizes)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"expected integer, got {value!r:.80}"
    if value < 0:
        return f"must be >= 0, got {value}"
    if value > MAX_SIZE:
        return f"must be at most {MAX_SIZE}, got {value}"
    return None


# -- paths --------------------------------------------------------------------------

# Flamenco forbids `\ ? * : ;  { }` (which also rules out drive letters); control
# characters are refused too, since no filesystem a farm uses wants them.
FORBIDDEN_CHARS = "\\?*:;{}"
_FORBIDDEN = re.compile(r"[\\?*:;{}\x00-\x1f\x7f]")
MAX_COMPONENT_BYTES = 255
# Directory levels of a checkout path and a file path together. Far beyond any real
# project, and low enough that a checkout's relative link targets ("../" per level)
# stay well inside the OS limit below.
MAX_DEPTH = 256
# Longest path (and symlink target) the OS takes, in bytes: Linux PATH_MAX less its NUL.
MAX_PATH_BYTES = 4095
# Flamenco's 3.9 add-on asks for checkout path "." when a script submits without a job
# name; Go accepts it, finds the directory (jobs/ itself) taken and makes it ".-xxxx".
JOBS_ROOT = "."

# The same rules as far as a regex states them (the OpenAPI document's patterns); the
# byte limits are checked by code only.
_BAD = "\\\\?*:;{}\\x00-\\x1f\\x7f"
_SEGMENT = f"(?:[^./{_BAD}]|\\.[^./{_BAD}]|\\.\\.[^/{_BAD}])[^/{_BAD}]*"
PATH_PATTERN = f"^{_SEGMENT}(?:/{_SEGMENT})*$"
# Trailing slashes are tolerated on a checkout path, and "." is jobs/ itself.
CHECKOUT_PATH_PATTERN = f"^(?:{_SEGMENT}(?:/{_SEGMENT})*/*|\\.)$"


def path_problem(value: object) -> str | None:
    """Why `value` is not a safe relative path inside a checkout, or None.

    Refused: non-strings, empty, a leading '/', any forbidden or control character,
    empty, '.' and '..' components, components over 255 bytes of UTF-8, and strings
    that are not valid Unicode.
    """
    if not isinstance(value, str):
        return f"expected string, got {type(value).__name__}"
    if not value:
        return "must not be empty"
    if value[0] == "/":
        return f"must be relative, got {value!r:.200}"
    bad = _FORBIDDEN.search(value)
    if bad is not None:
        return f"forbidden character {bad.group()!r} in {value!r:.200}"
    # One string test instead of splitting: catches '', '.' and '..' components anywhere.
    wrapped = f"/{value}/"
    if "//" in wrapped or "/./" in wrapped or "/../" in wrapped:
        return f"empty, '.' or '..' component in {value!r:.200}"
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:
        return f"not valid Unicode: {value!r:.200}"
    if len(encoded) > MAX_COMPONENT_BYTES and any(
        len(part) > MAX_COMPONENT_BYTES for part in encoded.split(b"/")
    ):
        return f"a component is longer than {MAX_COMPONENT_BYTES} bytes in {value!r:.200}"
    return None


def strip_checkout_path(value: str) -> str:
    """A checkout path without its trailing slashes ("a/b/" -> "a/b"; "/" stays "/")."""
    return (value.rstrip("/") or value) if len(value) > 1 else value


def checkout_path_problem(value: object) -> str | None:
    """Why a manager refuses `value` as a checkout path, or None (JOBS_ROOT is fine)."""
    if value == JOBS_ROOT:
        return None
    return path_problem(strip_checkout_path(value) if isinstance(value, str) else value)


# -- batch upload records (our extension: POST /api/v3/shaman/batch-upload) -----------

# The body is a sequence of records: an ASCII line "<sha256> <size>\n", then exactly
# `size` bytes.
BATCH_CONTENT_TYPE = "application/x-shaman-batch"
BATCH_MAX_RECORD_SIZE = 4 * 1024 * 1024  # bigger files use the single-file upload
BATCH_MAX_RECORDS = 10_000  # per request
BATCH_MAX_HEADER_LINE = 200  # bytes, newline included


def batch_record_header(sha: str, size: int) -> bytes:
    """The line that opens one record of a batch upload."""
    return f"{sha} {size}\n".encode("ascii")
