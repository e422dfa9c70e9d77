"""Streaming one file to the manager: a request body with constant memory that counts
progress and stops at the next block when cancelled or when the file changes."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

BLOCK_SIZE = 1 << 20


class FileChanged(Exception):
    """The file no longer has the size/mtime its identity was computed from."""


class UploadCancelled(Exception):
    """Raised inside the body iterator to abort the request (and drop its connection)."""


class FileBody:
    """Iterable request body of exactly `size` bytes, read in blocks into one buffer.

    It has a length, so requests sends Content-Length instead of chunked encoding, and
    no read(), so urllib3 sends the blocks as we yield them (1 MiB, not 16 KiB).
    """

    def __init__(
        self,
        path: str | Path,
        size: int,
        mtime_ns: int,
        *,
        cancel: threading.Event,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        self.path = path
        self.size = size
        self.mtime_ns = mtime_ns
        self.cancel = cancel
        self.on_bytes = on_bytes
        self.sent = 0

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[memoryview]:
        buf = memoryview(bytearray(min(BLOCK_SIZE, max(self.size, 1))))
        try:
            f = open(self.path, "rb", buffering=0)
        except OSError as ex:
            raise FileChanged(str(ex)) from None
        with f:
            st = os.fstat(f.fileno())
            if (st.st_size, st.st_mtime_ns) != (self.size, self.mtime_ns):
                raise FileChanged(str(self.path))
            remaining = self.size
            while remaining > 0:
                if self.cancel.is_set():
                    raise UploadCancelled()
                try:
                    n = f.readinto(buf[: min(len(buf), remaining)])
                except OSError as ex:
                    raise FileChanged(str(ex)) from None
                if not n:
                    raise FileChanged(f"{self.path} got shorter while it was sent")
                remaining -= n
                self.sent += n
                if self.on_bytes is not None:
                    self.on_bytes(n)
                # sendall() is done with the block before the next readinto() reuses it.
                yield buf[:n]
        if self.cancel.is_set():
            raise UploadCancelled()
