"""The storage-wide lock that keeps garbage collection and checkouts apart.

Checkouts hold it shared while they touch blobs and link them; the collector holds
it exclusive while it re-checks and deletes a batch of blobs. It is an `flock` on
`file-store/.lock`, so it also works between processes sharing one storage; where
`fcntl` is missing (Windows) it degrades to an in-process reader/writer lock.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class _ThreadRWLock:
    """Many readers or one writer, within this process only."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writer)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writer and self._readers == 0)
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class StorageLock:
    """Shared/exclusive lock on `<file-store>/.lock`; blocking, so call it from threads."""

    def __init__(self, lock_path: Path) -> None:
        self.path = Path(lock_path)
        self._fallback = _ThreadRWLock() if fcntl is None else None

    @contextmanager
    def _flock(self, mode: int) -> Iterator[None]:
        assert fcntl is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One open file description per holder: flock locks belong to it, so two
        # holders in one process conflict exactly as two processes would.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    @contextmanager
    def shared(self) -> Iterator[None]:
        if self._fallback is not None:
            with self._fallback.shared():
                yield
        else:
            with self._flock(fcntl.LOCK_SH):
                yield

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        if self._fallback is not None:
            with self._fallback.exclusive():
                yield
        else:
            with self._flock(fcntl.LOCK_EX):
                yield
