"""`FileStore`: the store's one facade (keys, status, receive, batch commit, cleanup).

It wires the parts together and owns their worker threads: `close()` shuts them
down with the app. See `layout` for where things are, `temps` for uploads in flight,
`commit` for how a blob appears, `pending` for small uploads not synced yet, `receive`
and `sinks` for uploads, `batch` for records.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..models import FileStatus
from ..tuning import Tuning
from . import system
from .batch import Record, RecordCommitter, RecordResult
from .commit import Ledger
from .layout import Layout
from .pending import PendingBlobs, Presence
from .receive import IncomingSmall, Received, Receiver
from .sinks import Reader
from .splice import SocketSource
from .temps import STALE_TEMP_AGE, live_temp_exists, remove_stale_temps


class FileStore:
    """Blobs under `<storage>/file-store`; see `layout` for the layout."""

    def __init__(
        self,
        storage_root: Path,
        *,
        body_read_timeout: float = 60.0,
        tuning: Tuning | None = None,
    ) -> None:
        tuning = tuning or Tuning()
        self.layout = Layout(storage_root)
        self.storage_root = self.layout.storage_root
        self.root = self.layout.root
        self.stored_dir = self.layout.stored_dir
        self.uploading_dir = self.layout.uploading_dir
        self._ledger = Ledger()
        # Hashing and writing of upload buffers: two threads per upload in flight.
        self._io_pool = ThreadPoolExecutor(
            max_workers=max(4, 2 * (os.cpu_count() or 1)), thread_name_prefix="shaman-upload"
        )
        # fsyncs of a checkout's few pending blobs, issued at once (see `pending`).
        self._fsync_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="fsync")
        self._pending = PendingBlobs(
            self.layout,
            self._ledger,
            self._fsync_pool,
            anonymous=tuning.anonymous_temps and system.ANONYMOUS_TEMPS_AVAILABLE,
        )
        self._receiver = Receiver(
            self.layout,
            self._ledger,
            self._pending,
            self._io_pool,
            body_read_timeout=body_read_timeout,
            splice=tuning.splice and system.SPLICE_AVAILABLE,
        )
        self._records = RecordCommitter(self._pending)

    def close(self) -> None:
        """Stop the worker threads (uploads still running finish their buffers first)."""
        self._io_pool.shutdown(wait=True, cancel_futures=False)
        self._fsync_pool.shutdown(wait=True)

    # ---- paths and counters ------------------------------------------------

    def blob_path(self, sha: str, size: int) -> Path:
        return Path(self.layout.blob_path(sha, size))

    def ensure_dirs(self) -> None:
        self.layout.ensure_dirs()

    @property
    def blobs_written(self) -> int:
        """Blobs this store made (each exactly once, whoever raced for it)."""
        return self._ledger.blobs_written

    @property
    def bytes_written(self) -> int:
        return self._ledger.bytes_written

    @property
    def splice(self) -> bool:
        """Whether bodies offered with a socket are spliced (tuning and kernel allow)."""
        return self._receiver.splice

    @property
    def anonymous_temps(self) -> bool:
        """Whether small uploads and batch records go through anonymous temps (tuning,
        kernel, filesystem)."""
        return self._pending.anonymous_temps

    # ---- status ------------------------------------------------------------

    def presence(self, sha: str, size: int, *, touch: bool = True) -> Presence:
        """Durable, pending (answered, not synced yet) or missing; see `pending`."""
        return self._pending.presence(sha, size, touch=touch)

    def touch_expected(self, keys: list[tuple[str, int]]) -> list[tuple[tuple[str, int], Presence]]:
        """Touch the blobs a checkout links; those not durable, with what they are
        (see `pending.PendingBlobs.touch_expected`)."""
        return self._pending.touch_expected(keys)

    def touch(self, sha: str, size: int) -> bool:
        """Stored (either form)? If so its mtime becomes now (GC spares it)."""
        return self._pending.presence(sha, size, touch=True) is not Presence.MISSING

    def is_stored(self, sha: str, size: int) -> bool:
        return self._pending.presence(sha, size, touch=False) is not Presence.MISSING

    def make_durable(self, keys: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """Turn these pending blobs into durable ones before a checkout links them;
        the keys that turned out missing. See `pending.PendingBlobs.make_durable`."""
        return self._pending.make_durable(keys)

    def is_uploading(self, sha: str, size: int) -> bool:
        """An upload of this process, or a live temp (see `temps.temp_is_live`) of any
        process sharing the storage."""
        return (sha, size) in self._receiver.uploads or live_temp_exists(self.layout, sha, size)

    def status(self, sha: str, size: int) -> FileStatus:
        """Status without touching anything (for GET files/{sha}/{size})."""
        if self.is_stored(sha, size):
            return "stored"
        return "uploading" if self.is_uploading(sha, size) else "unknown"

    def touch_status(self, sha: str, size: int) -> FileStatus:
        """Status for a requirements request: a stored blob is touched (GC spares it)."""
        return self.touch_statuses([(sha, size)])[0]

    def touch_statuses(self, keys: Iterable[tuple[str, int]]) -> list[FileStatus]:
        """`touch_status` for many files at once, as a requirements request needs.

        Instead of one listdir per unknown file, each `uploading/{sha[:2]}` dir is
        listed at most once per call: a first submission of 100k files stays cheap.
        """
        uploading = self.layout.uploading
        subdirs: dict[str, set[str]] = {}
        result: list[FileStatus] = []
        for sha, size in keys:
            if self.touch(sha, size):
                result.append("stored")
                continue
            if (sha, size) in self._receiver.uploads:
                result.append("uploading")
                continue
            present = subdirs.get(sha[:2])
            if present is None:
                try:
                    present = set(os.listdir(f"{uploading}/{sha[:2]}"))
                except OSError:
                    present = set()
                subdirs[sha[:2]] = present
            live = sha[2:] in present and self.is_uploading(sha, size)
            result.append("uploading" if live else "unknown")
        return result

    # ---- receiving ---------------------------------------------------------

    async def receive(
        self,
        sha: str,
        size: int,
        read: Reader,
        *,
        can_defer: bool = False,
        source: SocketSource | None = None,
    ) -> Received:
        """Stream one body into the store; see `receive.Receiver.receive`."""
        return await self._receiver.receive(sha, size, read, can_defer=can_defer, source=source)

    def expect_small(self, sha: str, size: int) -> IncomingSmall | None:
        """Register a small upload whose body is in hand or on its way; None (nothing
        done) when it must go through `receive`. See `receive.IncomingSmall`."""
        return self._receiver.expect_small(sha, size)

    def commit_records(self, records: list[Record]) -> list[RecordResult]:
        """Store a group of small files received whole, in one thread hop; see `batch`."""
        return self._records.commit(records)

    # ---- maintenance -------------------------------------------------------

    def remove_stale_temps(self, min_age: float = STALE_TEMP_AGE) -> list[str]:
        return remove_stale_temps(self.layout, min_age)
