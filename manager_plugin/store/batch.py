"""Committing a group of small files received whole in memory (a batch upload's records).

Every record is verified in memory, written to its own temp (anonymous where the
kernel offers it, see `system`; named otherwise), the data of all temps made durable
at once (parallel fsyncs), then each linked by `commit.link_verified` and the links
made durable with a second round. So a .blob still only ever comes from a fully
written, verified, durable temp, at two sync rounds per group instead of two per file.
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor

from ..errors import StorageFull
from .commit import Ledger, link_verified, make_durable, make_read_only
from .layout import Layout
from .temps import discard, is_disk_full, open_anonymous_temp, open_named_temp

log = logging.getLogger(__name__)

Record = tuple[str, int, bytes]  # (sha, size, the bytes)
RecordResult = tuple[str, str]  # ("stored" | "exists" | "rejected", message)


class RecordCommitter:
    """Stores groups of records; `anonymous_temps` turns off for good at the first
    filesystem that cannot make them."""

    def __init__(
        self, layout: Layout, ledger: Ledger, fsync_pool: ThreadPoolExecutor, *, anonymous: bool
    ) -> None:
        self._layout = layout
        self._ledger = ledger
        self._fsync_pool = fsync_pool
        self.anonymous_temps = anonymous

    def commit(self, records: list[Record]) -> list[RecordResult]:
        """One (status, message) per record: "stored" (linked by this call), "exists"
        (already stored, or stored meanwhile) or "rejected" (the bytes do not match the
        declared size or SHA-256; nothing kept). Raises StorageFull (no temp left)."""
        layout = self._layout
        results: list[RecordResult] = [("", "")] * len(records)
        temps: list[tuple[int, int, str, str]] = []  # (record index, fd, temp, final)
        linked_dirs: set[str] = set()
        try:
            for index, (sha, size, data) in enumerate(records):
                rejected = _verify(sha, size, data)
                if rejected:
                    results[index] = ("rejected", rejected)
                    continue
                if layout.touch(sha, size):
                    results[index] = ("exists", "")
                    continue
                fd, temp = self._open_temp(sha, size)
                temps.append((index, fd, temp, layout.blob_path(sha, size)))
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                make_read_only(fd, temp)
            if temps:
                make_durable(self._fsync_pool, [fd for _, fd, _, _ in temps], ())
            for index, _fd, temp, final in temps:
                size = records[index][1]
                if link_verified(layout, temp, final, size):
                    results[index] = ("stored", "")
                    linked_dirs.add(os.path.dirname(final))
                    self._ledger.add(size)
                else:
                    results[index] = ("exists", "")
            return results
        except OSError as exc:
            if is_disk_full(exc):
                raise StorageFull("storage is full; batch records discarded") from exc
            raise
        finally:
            try:
                if linked_dirs:
                    # Also on the way out of an error: what was linked must stay durable.
                    make_durable(self._fsync_pool, (), linked_dirs)
            finally:
                for _, fd, temp, _ in temps:
                    discard(fd, temp)

    def _open_temp(self, sha: str, size: int) -> tuple[int, str]:
        """A temp for one record: anonymous while the filesystem allows it."""
        if self.anonymous_temps:
            made = open_anonymous_temp(self._layout)
            if made is not None:
                return made
            log.info("no anonymous temp files on this filesystem; named ones")
            self.anonymous_temps = False
        return open_named_temp(self._layout, sha, size)


def _verify(sha: str, size: int, data: bytes) -> str:
    """Why the bytes are not the declared record, or "" when they are."""
    if len(data) != size:
        return f"received {len(data)} bytes, declared {size}"
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha:
        return f"received bytes have SHA-256 {digest}, declared {sha}"
    return ""
