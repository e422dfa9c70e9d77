"""Progress reports (Progress) and the thread-safe counters they are made from."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

PHASES = ("tracing", "hashing", "uploading", "checkout", "job", "done")  # job: creating it


@dataclass(frozen=True)
class Progress:
    """One snapshot of a submission, handed to the progress callback."""

    phase: str  # one of PHASES
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    current_file: str = ""


ProgressCallback = Callable[[Progress], None]


class ProgressTracker:
    """Counts what the pipeline threads did and reports it, at most every `interval` seconds.

    Tracing, hashing and uploading overlap. While tracing or hashing, "done" means hashed;
    once uploading, it means settled on the manager (already there or uploaded) plus the
    bytes of uploads in flight.
    """

    def __init__(self, callback: ProgressCallback | None, interval: float = 0.1) -> None:
        self._callback = callback
        self._interval = interval
        self._lock = threading.Lock()
        self._last_report = 0.0
        self.phase = "tracing"
        self.files_total = 0
        self.bytes_total = 0
        self.files_hashed = 0
        self.bytes_hashed = 0
        self.files_settled = 0
        self.bytes_settled = 0
        self.bytes_streaming = 0
        self.files_uploaded = 0
        self.bytes_uploaded = 0
        self.current_file = ""

    def set_phase(self, phase: str) -> None:
        with self._lock:
            self.phase = phase
        self._report(force=True)

    def discovered(self, size: int, name: str) -> None:
        with self._lock:
            self.files_total += 1
            self.bytes_total += size
            self.current_file = name
        self._report()

    def discovered_hashed(self, size: int, name: str, files: int = 1) -> None:
        """discovered() and hashed() at once, for files whose checksums were cached
        (`size` bytes in all; `name` is the last of them)."""
        with self._lock:
            self.files_total += files
            self.bytes_total += size
            self.files_hashed += files
            self.bytes_hashed += size
            self.current_file = name
        self._report()

    def hashing(self, nbytes: int, name: str) -> None:
        with self._lock:
            self.bytes_hashed += nbytes
            self.current_file = name
        self._report()

    def hashed(self) -> None:
        with self._lock:
            self.files_hashed += 1
        self._report()

    def streamed(self, nbytes: int, name: str) -> None:
        """Bytes of an upload in flight; negative to take back an aborted attempt."""
        with self._lock:
            self.bytes_streaming += nbytes
            self.current_file = name
        self._report()

    def settled(self, files: int, nbytes: int) -> None:
        with self._lock:
            self.files_settled += files
            self.bytes_settled += nbytes
        self._report()

    def uploaded(self, nbytes: int) -> None:
        with self._lock:
            self.files_uploaded += 1
            self.bytes_uploaded += nbytes

    def snapshot(self) -> Progress:
        with self._lock:
            if self.phase in ("tracing", "hashing"):
                files_done, bytes_done = self.files_hashed, self.bytes_hashed
            elif self.phase == "uploading":
                files_done = self.files_settled
                bytes_done = self.bytes_settled + self.bytes_streaming
            else:
                files_done, bytes_done = self.files_total, self.bytes_total
            return Progress(
                phase=self.phase,
                files_done=min(files_done, self.files_total),
                files_total=self.files_total,
                bytes_done=max(0, min(bytes_done, self.bytes_total)),
                bytes_total=self.bytes_total,
                current_file=self.current_file,
            )

    def _report(self, force: bool = False) -> None:
        if self._callback is None:
            return
        now = time.monotonic()
        with self._lock:
            if not force and now - self._last_report < self._interval:
                return
            self._last_report = now
        try:
            self._callback(self.snapshot())
        except Exception:  # a broken progress display must not break the submission
            log.exception("progress callback failed")
