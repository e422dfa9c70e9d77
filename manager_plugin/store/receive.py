"""Receiving one upload: the registry of uploads in flight and the way from a body
sink's temp file to a blob.

`Receiver.receive` answers with an outcome: `STORED` (this upload made the blob) or
`ALREADY_STORED` (it was there, or a concurrent upload finished first); failures raise
(MustDefer, SizeMismatch, ChecksumMismatch, BodyTimeout, ClientDisconnected,
StorageFull). Nothing partial ever remains.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import hashlib

from ..errors import BodyTimeout, ChecksumMismatch, MustDefer, SizeMismatch, StorageFull
from .commit import Ledger, commit_temp
from .layout import Layout
from .pending import PendingBlobs, Presence
from .sinks import BodySink, ChunkSink, Reader, SpliceSink, Superseded, Upload
from .splice import SocketSource
from .temps import discard, is_disk_full, live_temp_exists, open_named_temp

# Bodies up to this size are read whole, hashed and stored on the event loop, as pending
# blobs that the checkout linking them makes durable (see _receive_small and `pending`).
SMALL_BODY = 64 * 1024


class Received(enum.Enum):
    """How an upload ended well."""

    STORED = "stored"
    ALREADY_STORED = "already stored"


class Receiver:
    """Uploads of one store; `uploads` is the in-process half of "being uploaded"."""

    def __init__(
        self,
        layout: Layout,
        ledger: Ledger,
        pending: PendingBlobs,
        pool: concurrent.futures.Executor,
        *,
        body_read_timeout: float,
        splice: bool,
    ) -> None:
        self._layout = layout
        self._ledger = ledger
        self._pending = pending
        self._pool = pool
        self.body_read_timeout = body_read_timeout
        self.splice = splice
        self.uploads: dict[tuple[str, int], Upload] = {}

    async def receive(
        self,
        sha: str,
        size: int,
        read: Reader,
        *,
        can_defer: bool = False,
        source: SocketSource | None = None,
    ) -> Received:
        """Stream a body into the store. `read(n)` returns up to n bytes, b"" at the end.
        With a `source` (a body of exactly `size` bytes whose socket can be taken over)
        and splicing on, the body is spliced from the socket instead of read."""
        key = (sha, size)
        if size <= SMALL_BODY and key not in self.uploads and (source is None or not self.splice):
            return await self._receive_small(sha, size, read, can_defer)
        # Who else uploads this file is settled before the first await: a small upload
        # that finishes during it is then either `other` (and supersedes this one) or
        # came after this one registered (and waits for it), never unseen.
        other = self.uploads.get(key)
        if can_defer and other is not None:
            raise MustDefer(f"{sha}/{size} is being uploaded by someone else; upload it later")
        mine = Upload(asyncio.Event())
        if other is None:
            self.uploads[key] = mine
        try:
            presence = await asyncio.to_thread(self._pending.presence, sha, size, touch=True)
            if presence is not Presence.MISSING:
                return Received.ALREADY_STORED
            if can_defer and await asyncio.to_thread(live_temp_exists, self._layout, sha, size):
                raise MustDefer(f"{sha}/{size} is being uploaded by someone else; upload it later")
            final = self._layout.blob_path(sha, size)
            timeout = self.body_read_timeout
            sink: BodySink
            if source is not None and self.splice:
                sink = SpliceSink(source, size, final, other, timeout, self._pool)
            else:
                sink = ChunkSink(read, size, final, other, timeout, self._pool)
            outcome = await self._fill_and_commit(sink, sha, size, final)
            mine.stored = outcome is Received.STORED
            return outcome
        finally:
            self.forget(key, mine)

    async def _fill_and_commit(self, sink: BodySink, sha: str, size: int, final: str) -> Received:
        fd, temp = await asyncio.to_thread(open_named_temp, self._layout, sha, size)
        try:
            hasher = hashlib.sha256()
            try:
                received = await sink.fill(fd, temp, hasher)
            except Superseded:
                raise _Discard(Received.ALREADY_STORED) from None
            check_body(sha, size, received, hasher)
            commit_fd, fd = fd, -1  # commit_temp owns (and closes) it from here on
            stored = await asyncio.to_thread(
                commit_temp, self._layout, self._ledger, commit_fd, temp, final, size
            )
            return Received.STORED if stored else Received.ALREADY_STORED
        except BaseException as exc:
            if fd >= 0:
                # One thread hop that first waits for the sink's threads to be done with
                # fd, submitted right here: even if this task is cancelled again (or the
                # loop is shutting down) before it would start, the temp is still removed.
                loop = asyncio.get_running_loop()
                cleanup = loop.run_in_executor(None, _settle_and_discard, sink, fd, temp)
                await asyncio.shield(cleanup)
            if isinstance(exc, _Discard):
                return exc.outcome
            if is_disk_full(exc):
                raise StorageFull("storage is full; upload discarded") from exc
            raise

    def expect_small(self, sha: str, size: int) -> IncomingSmall | None:
        """Register a small upload whose body is in hand or on its way (see
        IncomingSmall); None, with nothing done, when it must go through `receive`
        instead: too big for a small upload, or another upload of it is in flight here."""
        key = (sha, size)
        if size > SMALL_BODY or key in self.uploads:
            return None
        upload = Upload(asyncio.Event())
        self.uploads[key] = upload
        return IncomingSmall(self, sha, size, upload)

    def store_whole(self, sha: str, size: int, body: bytes, can_defer: bool) -> Received:
        """Check and store a small body read whole (its upload registered by the caller)."""
        if not self._may_store_small(sha, size, can_defer):
            return Received.ALREADY_STORED
        refuse_overlong(size, len(body))
        check_body(sha, size, len(body), hashlib.sha256(body))
        return self._store_small(sha, size, [body])

    def forget(self, key: tuple[str, int], upload: Upload) -> None:
        """`upload` has ended, either way: whoever waits for it goes on."""
        upload.done.set()
        if self.uploads.get(key) is upload:
            del self.uploads[key]

    async def _receive_small(self, sha: str, size: int, read: Reader, can_defer: bool) -> Received:
        """A small upload on the event loop, without a thread hop (its few syscalls cost
        less than handing them to a worker and back): the body is read whole and
        verified here, then written as a `.pending` blob, which the first checkout that
        links it makes durable (see `pending`)."""
        key = (sha, size)
        if not self._may_store_small(sha, size, can_defer):
            return Received.ALREADY_STORED
        mine = Upload(asyncio.Event())
        self.uploads[key] = mine
        try:
            hasher = hashlib.sha256()
            chunks = await _read_small(read, size, self.body_read_timeout, hasher)
            check_body(sha, size, sum(map(len, chunks)), hasher)
            outcome = self._store_small(sha, size, chunks)
            mine.stored = outcome is Received.STORED
            return outcome
        finally:
            self.forget(key, mine)

    def _may_store_small(self, sha: str, size: int, can_defer: bool) -> bool:
        """False if the blob is there already (touched, so GC spares it); MustDefer if
        the client may defer and another process is uploading it."""
        if self._pending.presence(sha, size, touch=True) is not Presence.MISSING:
            return False
        if can_defer and live_temp_exists(self._layout, sha, size):
            raise MustDefer(f"{sha}/{size} is being uploaded by someone else; upload it later")
        return True

    def _store_small(self, sha: str, size: int, chunks: list[bytes]) -> Received:
        """Write a verified small body as a pending blob."""
        try:
            stored = self._pending.write(sha, size, chunks)
        except OSError as exc:
            if is_disk_full(exc):
                raise StorageFull("storage is full; upload discarded") from exc
            raise
        return Received.STORED if stored else Received.ALREADY_STORED


async def _read_small(
    read: Reader, size: int, timeout: float, hasher: hashlib._Hash
) -> list[bytes]:
    """The whole body (at most size + 1 bytes, to tell an overlong one), hashed on the way."""
    chunks: list[bytes] = []
    received = 0
    limit = size + 1
    while received < limit:
        try:
            async with asyncio.timeout(timeout):
                chunk = await read(limit - received)
        except TimeoutError:
            raise BodyTimeout(f"no body data for {timeout:g} s; upload aborted") from None
        if not chunk:
            break
        hasher.update(chunk)
        chunks.append(chunk)
        received += len(chunk)
    refuse_overlong(size, received)
    return chunks


def refuse_overlong(size: int, received: int) -> None:
    """SizeMismatch if more bytes came than the declared size (checked first: the way
    a small body is read tells only that it is longer, not by how much)."""
    if received > size:
        raise SizeMismatch(f"body is longer than the declared size {size}")


class IncomingSmall:
    """A small upload registered as in flight while its body is in hand or on its way
    (the fast lane, `http.fastlane`, holds the start of one until the rest comes), as
    `Receiver._receive_small` registers one while it reads: meanwhile a status GET says
    "uploading", a deferrable upload of the same file gets 425, and another one goes
    the general way of `receive` (whichever ends first stores the blob). It ends with
    `complete` or `end`."""

    def __init__(self, receiver: Receiver, sha: str, size: int, upload: Upload) -> None:
        self._receiver = receiver
        self.sha = sha
        self.size = size
        self._upload = upload

    def complete(self, body: bytes, can_defer: bool) -> Received:
        """Check and store the whole body (raises as `Receiver.receive` does), and end."""
        try:
            outcome = self._receiver.store_whole(self.sha, self.size, body, can_defer)
            self._upload.stored = outcome is Received.STORED
            return outcome
        finally:
            self.end()

    def end(self) -> None:
        """No longer in flight (stored or not); idempotent."""
        self._receiver.forget((self.sha, self.size), self._upload)


class _Discard(Exception):
    """The temp goes, and the upload still ends well (with `outcome`)."""

    def __init__(self, outcome: Received) -> None:
        super().__init__(outcome.value)
        self.outcome = outcome


def check_body(sha: str, size: int, received: int, hasher: hashlib._Hash) -> None:
    """Raise SizeMismatch or ChecksumMismatch unless the body received is the one declared."""
    if received != size:
        raise SizeMismatch(f"received {received} bytes, declared size is {size}")
    digest = hasher.hexdigest()
    if digest != sha:
        raise ChecksumMismatch(f"received bytes have SHA-256 {digest}, declared {sha}")


def _settle_and_discard(sink: BodySink, fd: int, temp: str) -> None:
    sink.settle()
    discard(fd, temp)
