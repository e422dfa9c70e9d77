"""Body sinks: the two ways an upload body gets from the client into its temp file.

Both write the body into an open temp and hash it on the way, and both stop early
with `Superseded` when a concurrent upload of the same file stores it first.
`ChunkSink` takes the pieces the HTTP layer reads (`Reader`); `SpliceSink` takes the
socket itself (a `SocketSource`) and moves the bytes with splice(2) (see `splice`).
`receive` verifies what they wrote and makes it the blob.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import os
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from ..errors import BodyTimeout, SizeMismatch
from . import system
from .splice import SocketSource, SpliceJob, Stopped, start_thread

BATCH_SIZE = 2 * 1024 * 1024  # network chunks are gathered into buffers this big

Reader = Callable[[int], Awaitable[bytes]]


class Superseded(Exception):
    """Another upload stored the file while this one was still receiving it."""


@dataclass
class Upload:
    """One in-process upload of a (sha, size); `done` is set when it ends either way."""

    done: asyncio.Event
    stored: bool = False


class BodySink(Protocol):
    async def fill(self, fd: int, temp: str, hasher: hashlib._Hash) -> int:
        """Write the whole body into `fd` (the temp `temp`), hashing it into `hasher`;
        return the number of bytes received. Raises Superseded, BodyTimeout,
        SizeMismatch (overlong), ClientDisconnected or OSError."""
        ...

    def settle(self) -> None:
        """Block until no thread of this sink uses the temp's fd any more (for cleanup)."""
        ...


class ChunkSink:
    """A body read piece by piece; each buffer is hashed and written by two pool threads
    (both release the GIL) while the event loop reads the next one."""

    def __init__(
        self,
        read: Reader,
        size: int,
        final: str,
        other: Upload | None,
        timeout: float,
        pool: concurrent.futures.Executor,
    ) -> None:
        self._read, self._size, self._final = read, size, final
        self._other, self._timeout, self._pool = other, timeout, pool
        self._pending: list[concurrent.futures.Future[bool | None]] = []

    async def fill(self, fd: int, temp: str, hasher: hashlib._Hash) -> int:
        size, other = self._size, self._other
        received = 0
        limit = size + 1  # read one byte past the declared size to detect overlong bodies
        while True:
            # Chunks are handed over as they came, as a list the workers hash and write
            # one by one: gathering them into one buffer cost a full copy on the loop.
            chunks: list[bytes] = []
            filled = 0
            eof = False
            while filled < BATCH_SIZE and received + filled < limit:
                chunk = await self._read_chunk(min(BATCH_SIZE - filled, limit - received - filled))
                if not chunk:
                    eof = True
                    break
                chunks.append(chunk)
                filled += len(chunk)
            await self._wait_pending()
            if other is not None and other.done.is_set() and other.stored:
                raise Superseded
            received += filled
            if received > size:
                raise SizeMismatch(f"body is longer than the declared size {size}")
            if chunks:
                self._pending = [
                    self._pool.submit(_hash_all, hasher, chunks),
                    self._pool.submit(_write_all, fd, chunks, self._final),
                ]
            if eof:
                break
            # Not at the end yet; once `size` bytes are in, the next read must see EOF.
        await self._wait_pending()
        return received

    async def _wait_pending(self) -> None:
        """Wait for the buffer in the workers; Superseded if the blob appeared meanwhile."""
        if not self._pending:
            return
        # gather retrieves both outcomes: an asyncio wrapper whose exception nobody
        # fetched would be logged as "Future exception was never retrieved" (a full disk).
        outcomes = await asyncio.gather(
            *(asyncio.wrap_future(f) for f in self._pending), return_exceptions=True
        )
        self._pending = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        if outcomes[1]:
            raise Superseded

    def settle(self) -> None:
        concurrent.futures.wait(self._pending)

    async def _read_chunk(self, want: int) -> bytes:
        """Next piece of the body, within the timeout.

        While another upload of the same file runs, also wait for it: when it
        stores the blob first, stop at once (Superseded), even if this client is
        slow or stalled.
        """
        timeout, other = self._timeout, self._other
        if other is None or other.done.is_set():
            # asyncio.timeout is one timer handle; wait_for made a Task for every chunk.
            try:
                async with asyncio.timeout(timeout):
                    return await self._read(want)
            except TimeoutError:
                raise _timed_out(timeout) from None
        read_task = asyncio.ensure_future(self._read(want))
        other_task = asyncio.ensure_future(other.done.wait())
        try:
            finished, _ = await asyncio.wait(
                {read_task, other_task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if read_task in finished:
                return read_task.result()
            if other_task in finished and other.stored:
                raise Superseded
            if other_task in finished:
                # The other upload failed; this one carries on alone.
                return await asyncio.wait_for(asyncio.shield(read_task), timeout)
            raise _timed_out(timeout)
        except TimeoutError:
            raise _timed_out(timeout) from None
        finally:
            other_task.cancel()
            if not read_task.done():
                read_task.cancel()


class SpliceSink:
    """A body of exactly `size` bytes moved from its socket by a thread of its own."""

    def __init__(
        self,
        source: SocketSource,
        size: int,
        final: str,
        other: Upload | None,
        timeout: float,
        pool: concurrent.futures.Executor,
    ) -> None:
        self._source, self._size, self._final = source, size, final
        self._other, self._timeout, self._pool = other, timeout, pool
        self._job: SpliceJob | None = None
        self._running: concurrent.futures.Future[int] | None = None

    async def fill(self, fd: int, temp: str, hasher: hashlib._Hash) -> int:
        final = self._final

        def superseded(out_fd: int) -> bool:
            system.hint_writeback(out_fd)  # see _write_all
            return os.path.exists(final)  # stored by someone else meanwhile: stop

        watcher: asyncio.Task[None] | None = None
        try:
            sock, head = self._source.take()
            job = self._job = SpliceJob(
                sock, fd, temp, head, self._size, hasher, self._timeout, self._pool,
                superseded, pace=self._source.pace,
            )  # fmt: skip
            if self._other is not None:
                watcher = asyncio.ensure_future(_flag_when_stored(self._other, job.stop))
            self._running = start_thread(job.run)
            try:
                return await asyncio.wrap_future(self._running)
            except Stopped:
                raise Superseded from None
        except BaseException:
            if self._job is not None:
                self._job.stop.set()  # if it still runs (we were cancelled): stop now
                if self._running is None:
                    os.close(self._job.sock)  # never started, so it will not close it
            raise
        finally:
            if watcher is not None:
                watcher.cancel()
            if self._job is not None:
                self._source.set_unread(self._size - self._job.consumed)

    def settle(self) -> None:
        if self._running is not None:
            concurrent.futures.wait([self._running])


def _write_all(fd: int, chunks: list[bytes], final: str) -> bool:
    """Worker-thread part of receiving: write one batch of chunks, in order.

    Returns True if the final blob appeared meanwhile (someone else stored it), so
    the caller can stop early; checking here keeps the stat off the event loop.
    """
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]
    # Start writing back while the rest arrives, so the fsync before the link is short.
    system.hint_writeback(fd)
    return os.path.exists(final)


def _hash_all(hasher: hashlib._Hash, chunks: list[bytes]) -> None:
    for chunk in chunks:
        hasher.update(chunk)  # releases the GIL for all but tiny chunks


async def _flag_when_stored(other: Upload, flag: threading.Event) -> None:
    await other.done.wait()
    if other.stored:
        flag.set()


def _timed_out(timeout: float) -> BodyTimeout:
    return BodyTimeout(f"no body data for {timeout:g} s; upload aborted")
