"""Moving a big upload body straight from the socket into the temp file (Linux only;
`system.SPLICE_AVAILABLE` says whether it can be used, `shaman.tuning.splice` whether it is).

The ordinary path copies every byte four times on its way to the disk: socket ->
asyncio's buffer, aiohttp's HTTP parser -> a new bytes object per body piece, that
piece -> the page cache (os.write), and a read by the hasher. On a two-core machine
these copies, not the hash, limited ingest to a third of a plain file copy.

Here one worker thread moves the body with splice(2): socket -> pipe (the kernel
hands over page references, no copy) -> temp file (the one copy that writing a file
needs). A second thread hashes what has been written from a read-only mmap of the
temp file (no copy either), a batch behind the writer. So the hash and the kernel's
copy into the page cache run in parallel, and the event loop is idle meanwhile.

The HTTP layer takes the socket away from its server for the rest of the body and
hands it over as a `SocketSource` (see `manager_plugin.http.bodies.socket_source`);
this module only sees a file descriptor. Everything else about an upload
(size and SHA-256 verified before the link, the timeout between two pieces of the
body, stopping when a concurrent upload stores the file first) stays as it was.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import mmap
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from ..bodypace import BodyPace
from ..errors import BodyTimeout, ClientDisconnected

T = TypeVar("T")

HASH_BATCH = 8 * 1024 * 1024  # bytes handed to the hash thread at a time (page multiple)
PIPE_SIZE = 1024 * 1024  # asked of F_SETPIPE_SZ; the kernel may give less
LINGER = 10.0  # seconds; at most this long an unwanted rest of a body is read and dropped
_POLL_SLICE = 0.2  # seconds; how often a stalled read looks at `stop`
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_SPLICE_F_MOVE = getattr(os, "SPLICE_F_MOVE", 1)
_SPLICE_F_NONBLOCK = getattr(os, "SPLICE_F_NONBLOCK", 2)


class SocketSource(Protocol):
    """A request body that can be read from its socket directly."""

    pace: BodyPace | None  # the slowest the body may arrive (None: no floor)

    def take(self) -> tuple[int, bytes]:
        """Take the socket over (on the event loop): (a dup of the socket's fd, which the
        taker must close, and the body bytes the HTTP layer had buffered already)."""
        ...

    def set_unread(self, unread: int) -> None:
        """Body bytes left unread on the socket: the HTTP layer reads and drops them
        after its answer, so that the client still sending gets it."""
        ...


class Stopped(Exception):
    """The upload was stopped: another one stored the file, or the request was cancelled."""


class SpliceJob:
    """Moves one body from a socket into a temp file and hashes it, in worker threads.

    `run` (in a thread of its own) moves `head`, then at most `size - len(head)` bytes
    from `sock`, into `fd`; hashing of each HASH_BATCH written is handed to `pool`,
    reading through a read-only mmap of `temp`. `consumed` counts the body bytes taken
    from the socket so far (head included), for the caller to know what is left unread.
    `run` closes `sock` when it ends, so that it can never outlive its socket.
    """

    def __init__(
        self,
        sock: int,
        fd: int,
        temp: str,
        head: bytes,
        size: int,
        hasher: hashlib._Hash,
        timeout: float,
        pool: concurrent.futures.Executor,
        superseded: Callable[[int], bool] | None = None,
        pace: BodyPace | None = None,
    ) -> None:
        self.sock = sock
        self.fd = fd
        self.temp = temp
        self.head = head
        self.size = size
        self.hasher = hasher
        self.timeout = timeout
        self.pool = pool
        self.superseded = superseded
        self.pace = pace
        self.consumed = 0
        self.stop = threading.Event()  # set from outside: stop at once (Stopped)

    def run(self) -> int:
        """Returns the number of body bytes received (`size`). Raises ClientDisconnected
        when the client ended the connection before, BodyTimeout when no data came for
        `timeout` seconds or the body is slower than `pace` allows, Stopped when `stop`
        is set or `superseded(fd)` returned True (the blob exists), OSError on socket or
        disk errors (ENOSPC included)."""
        try:
            return self._run()
        finally:
            os.close(self.sock)

    def _run(self) -> int:
        sock, fd, size = self.sock, self.fd, self.size
        view = memoryview(self.head)
        while view:
            view = view[os.write(fd, view) :]
        received = self.consumed = len(self.head)
        hashed = 0
        rfd = os.open(self.temp, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        pipe_r, pipe_w = os.pipe()
        hashing: concurrent.futures.Future[None] | None = None
        try:
            try:
                fcntl.fcntl(pipe_w, _F_SETPIPE_SZ, PIPE_SIZE)
            except OSError:
                pass  # a smaller pipe only means more calls
            poller = select.poll()
            poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
            last_data = time.monotonic()
            while received < size:
                if self.stop.is_set():
                    raise Stopped
                try:
                    moved = os.splice(
                        sock,
                        pipe_w,
                        min(PIPE_SIZE, size - received),
                        flags=_SPLICE_F_MOVE | _SPLICE_F_NONBLOCK,
                    )
                except BlockingIOError:
                    left = self.timeout - (time.monotonic() - last_data)
                    if left <= 0:
                        message = f"no body data for {self.timeout:g} s; upload aborted"
                        raise BodyTimeout(message) from None
                    if self.pace is not None and self.pace.missed(self.consumed):
                        raise self.pace.too_slow(self.consumed) from None
                    poller.poll(min(left, _POLL_SLICE) * 1000)
                    continue
                except ConnectionResetError:
                    raise ClientDisconnected(self.consumed, size) from None
                if moved == 0:
                    raise ClientDisconnected(self.consumed, size)
                self.consumed += moved
                last_data = time.monotonic()
                while moved:
                    written = os.splice(pipe_r, fd, moved, flags=_SPLICE_F_MOVE)
                    moved -= written
                    received += written
                if received - hashed >= HASH_BATCH:
                    if hashing is not None:
                        hashing.result()
                    hashing = self.pool.submit(_hash_range, self.hasher, rfd, hashed, received)
                    hashed = received
                    if self.superseded is not None and self.superseded(fd):
                        raise Stopped
            if hashing is not None:
                hashing.result()
                hashing = None
            if received > hashed:
                _hash_range(self.hasher, rfd, hashed, received)
            return received
        finally:
            if hashing is not None:
                concurrent.futures.wait([hashing])  # it reads rfd: done before rfd closes
            os.close(pipe_r)
            os.close(pipe_w)
            os.close(rfd)


def _hash_range(hasher: hashlib._Hash, rfd: int, start: int, end: int) -> None:
    """Hash bytes [start, end) of the file behind read-only fd `rfd`, without copying them."""
    base = start - start % mmap.ALLOCATIONGRANULARITY
    with mmap.mmap(rfd, end - base, mmap.MAP_SHARED, mmap.PROT_READ, offset=base) as mapped:
        if hasattr(mapped, "madvise"):
            mapped.madvise(mmap.MADV_SEQUENTIAL)
        with memoryview(mapped) as view, view[start - base :] as part:
            hasher.update(part)  # releases the GIL


def drain(sock: int, left: int, linger: float = LINGER) -> None:
    """Read and drop up to `left` bytes of non-blocking `sock`, for at most `linger`
    seconds: what aiohttp does with the unread rest of a body after its answer, so
    that closing the connection does not reset it under a client still sending."""
    sink = bytearray(min(left, PIPE_SIZE))
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
    deadline = time.monotonic() + linger
    while left > 0:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        try:
            got = os.readv(sock, [memoryview(sink)[: min(left, len(sink))]])
        except BlockingIOError:
            poller.poll(min(remaining, _POLL_SLICE) * 1000)
            continue
        except OSError:
            return
        if got == 0:
            return
        left -= got


def start_thread(fn: Callable[[], T]) -> concurrent.futures.Future[T]:
    """Run `fn` in a new daemon thread; its outcome as a future (await it wrapped).

    For long blocking work (a whole body arriving) that must not hold a worker of a
    shared pool for that long. Cancelling the future stops `fn` only if it has not
    started yet.
    """
    done: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        if not done.set_running_or_notify_cancel():
            return
        try:
            done.set_result(fn())
        except BaseException as exc:  # handed to the awaiting task
            done.set_exception(exc)

    threading.Thread(target=run, name="shaman-splice", daemon=True).start()
    return done
