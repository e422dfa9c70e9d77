"""The one way a blob appears: a verified temp hard-linked into place, and counted.

A blob is only ever made by `link_verified` from a temp whose bytes were checked
against the declared size and SHA-256: a `.blob` after its data was made durable
(`commit_temp`), a `.pending` before (see `pending`). Counting happens in the same
thread as the link, so it stays exactly-once even when the request that awaited it is
cancelled meanwhile: only the upload whose link made the blob counts.
"""

from __future__ import annotations

import contextlib
import os
import threading

from . import system
from .layout import Layout, make_leaf_dir
from .temps import discard


class Ledger:
    """Blobs and bytes this store wrote (exactly once each), for logs and tests."""

    def __init__(self) -> None:
        self.blobs_written = 0
        self.bytes_written = 0
        self._lock = threading.Lock()

    def add(self, size: int) -> None:
        with self._lock:
            self.blobs_written += 1
            self.bytes_written += size


def link_verified(layout: Layout, temp: str, final: str, size: int) -> bool:
    """Hard-link the verified temp as the blob `final`; False if the blob exists already.

    A bad blob in the way is moved to quarantine by `Layout.holds` and the link retried;
    a missing parent (first blob of this sha, or GC just removed it, possibly halfway
    through our makedirs) is made and the link retried.
    """
    parent = os.path.dirname(final)
    # A new blob's directory is usually missing: make it first rather than fail a link
    # and a stat or two first (an existing one costs one failing mkdir).
    with contextlib.suppress(FileNotFoundError):
        make_leaf_dir(parent, parent_first=False)
    for attempt in range(5):
        try:
            system.link_into_place(temp, final)
            return True
        except FileExistsError:
            if attempt == 4 or layout.holds(final, size):
                return False
        except FileNotFoundError:
            if attempt == 4:
                raise
            with contextlib.suppress(FileNotFoundError):
                make_leaf_dir(parent, parent_first=False)
    raise AssertionError("unreachable")


def commit_temp(layout: Layout, ledger: Ledger, fd: int, temp: str, final: str, size: int) -> bool:
    """Make one verified temp durable, read-only and the blob; False if it existed.
    Owns `fd`: the temp is closed and removed whatever happens."""
    try:
        os.fsync(fd)
        make_read_only(fd, temp)
        if not link_verified(layout, temp, final, size):
            return False
        ledger.add(size)
        fsync_dir(os.path.dirname(final))
        return True
    finally:
        discard(fd, temp)


def make_read_only(fd: int, temp: str) -> None:
    if hasattr(os, "fchmod"):
        os.fchmod(fd, 0o444)
    else:  # pragma: no cover - Windows before Python 3.13
        os.chmod(temp, 0o444)


def fsync_dir(path: str) -> None:
    try:
        dfd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
