"""Many small files in one request body (the manager's batch-upload extension).

The body is a sequence of records (flamenco_shaman.protocol: a `<sha256 hex> <size>`
line, then the file's bytes). Each file is read from disk only when its record is
written, so memory stays bounded by one file plus one send buffer, and it is checked
against the size and mtime its identity was computed from: a file changed meanwhile is
left out (and re-hashed by the caller), never sent under a wrong identity.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Generic, TypeVar

from .. import protocol
from .upload import UploadCancelled

# Ours, well inside the manager's limits (protocol.BATCH_MAX_RECORDS per request).
MAX_FILES = 500  # per request
MAX_BYTES = 16 << 20  # per request
SERVER_MAX_FILE_SIZE = protocol.BATCH_MAX_RECORD_SIZE  # the manager refuses bigger records
SEND_BUFFER = 256 << 10  # records are gathered into writes about this big

T = TypeVar("T")


def split_batches(items: Sequence[T], size_of: Callable[[T], int]) -> list[list[T]]:
    """Consecutive groups of at most MAX_FILES items and (beyond one item) MAX_BYTES."""
    batches: list[list[T]] = []
    current: list[T] = []
    nbytes = 0
    for item in items:
        size = size_of(item)
        if current and (len(current) >= MAX_FILES or nbytes + size > MAX_BYTES):
            batches.append(current)
            current, nbytes = [], 0
        current.append(item)
        nbytes += size
    if current:
        batches.append(current)
    return batches


class BatchBody(Generic[T]):
    """Iterable request body for a batch; `sent` and `skipped` say what happened to each.

    `files` holds (key, path, sha, size, mtime_ns); `key` is the caller's handle, handed
    back in `sent` (in record order) or `skipped` (changed or unreadable, not sent).
    """

    def __init__(
        self,
        files: Sequence[tuple[T, str | Path, str, int, int]],
        *,
        cancel: threading.Event,
        on_bytes: Callable[[int, str], None] | None = None,
    ) -> None:
        self.files = files
        self.cancel = cancel
        self.on_bytes = on_bytes
        self.sent: list[T] = []
        self.skipped: list[T] = []
        self.streamed = 0  # bytes of file data handed to the connection so far

    def __iter__(self) -> Iterator[bytes]:
        out = bytearray()
        for key, path, sha, size, mtime_ns in self.files:
            if self.cancel.is_set():
                raise UploadCancelled()
            data = _read_unchanged(path, size, mtime_ns)
            if data is None:
                self.skipped.append(key)
                continue
            out += protocol.batch_record_header(sha, size)
            out += data
            self.sent.append(key)
            self.streamed += size
            if self.on_bytes is not None:
                self.on_bytes(size, str(path))
            if len(out) >= SEND_BUFFER:
                yield bytes(out)
                out.clear()
        if self.cancel.is_set():
            raise UploadCancelled()
        if out:
            yield bytes(out)


def _read_unchanged(path: str | Path, size: int, mtime_ns: int) -> bytes | None:
    """The file's bytes if it still has this size and mtime, else None."""
    try:
        with open(path, "rb", buffering=0) as f:
            st = os.fstat(f.fileno())
            if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
                return None
            data = f.read(size) if size else b""
    except OSError:
        return None
    if len(data) != size:
        return None
    return data
