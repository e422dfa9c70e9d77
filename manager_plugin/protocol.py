"""The Shaman rules shared with the engine, re-exported from the add-on package.

The rules live in `flamenco_shaman/protocol.py` so the add-on zip carries them without
any of the manager; both packages are installed together, so the manager imports them
from there and code on this side says `from manager_plugin.protocol import ...`.
"""

from flamenco_shaman.protocol import (
    BATCH_CONTENT_TYPE,
    BATCH_MAX_HEADER_LINE,
    BATCH_MAX_RECORD_SIZE,
    BATCH_MAX_RECORDS,
    CHECKOUT_PATH_PATTERN,
    FORBIDDEN_CHARS,
    JOBS_ROOT,
    MAX_COMPONENT_BYTES,
    MAX_DEPTH,
    MAX_PATH_BYTES,
    MAX_SIZE,
    PATH_PATTERN,
    SHA_PATTERN,
    batch_record_header,
    checkout_path_problem,
    is_checksum,
    path_problem,
    size_problem,
    strip_checkout_path,
)

__all__ = [
    "BATCH_CONTENT_TYPE",
    "BATCH_MAX_HEADER_LINE",
    "BATCH_MAX_RECORDS",
    "BATCH_MAX_RECORD_SIZE",
    "CHECKOUT_PATH_PATTERN",
    "FORBIDDEN_CHARS",
    "JOBS_ROOT",
    "MAX_COMPONENT_BYTES",
    "MAX_DEPTH",
    "MAX_PATH_BYTES",
    "MAX_SIZE",
    "PATH_PATTERN",
    "SHA_PATTERN",
    "batch_record_header",
    "checkout_path_problem",
    "is_checksum",
    "path_problem",
    "size_problem",
    "strip_checkout_path",
]
