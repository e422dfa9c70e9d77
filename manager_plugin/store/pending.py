"""Small uploads answered before their bytes are synced, and the rule that makes them
durable before any checkout links them.

A 4 KiB upload's two fsyncs (its data, its directory) cost more than everything else
it does, and Flamenco's add-on sends one file per request. So a small verified upload
becomes `{size}.pending` beside where its `.blob` goes, unsynced. The promise that
matters is `checkout/create`'s: a checkout answered 200 links only durable blobs. Before
it links them, `make_durable` syncs the checkout's pending blobs as one group (one
`syncfs` for many, an fsync each for a few), renames each to its `.blob` name and syncs
those renames.

While small uploads keep coming, every FLUSH_EVERY of them start one `syncfs` on a
worker thread (at most one at a time, nobody waits for it): the kernel writes their
bytes out while the uploads go on, so the checkout's own sync finds little left to do
(2,500 pending blobs: the checkout's make_durable took 40 ms instead of 85). It is only
a head start: what makes a blob durable is still make_durable's sync, and a failed
early flush is left for that one to report.

After a crash or power cut a `.pending` may hold anything: its name reached the disk,
its bytes perhaps not. So one counts as stored only if this process wrote it (the same
inode: no crash can have happened since) or its bytes are hashed again and match; one
that does not match goes to quarantine. A `.pending` is never linked by a checkout.
"""

from __future__ import annotations

import enum
import errno
import hashlib
import logging
import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from . import system
from .commit import Ledger, fsync_dir, link_verified, make_read_only
from .layout import Layout
from .temps import discard, open_anonymous_temp, open_named_temp, open_regular

log = logging.getLogger(__name__)

SYNCFS_MIN = 32  # pending blobs from which one syncfs is cheaper than an fsync each
FLUSH_EVERY = 512  # pending blobs written between two early flushes (see above)
READ_SIZE = 1 << 20  # hashlib releases the GIL on large updates: threads hash in parallel


class Presence(enum.Enum):
    """What the store holds of one (sha, size)."""

    DURABLE = "durable"  # the .blob
    PENDING = "pending"  # only a trusted .pending
    MISSING = "missing"


def hash_blob(path: str) -> tuple[int, str]:
    """(bytes read, SHA-256 hex) of the regular file `path`; never opens anything else.
    Raises OSError (EINVAL if it is not a regular file)."""
    fd = open_regular(path)
    if fd is None:
        raise OSError(errno.EINVAL, "not a regular file (anymore)", path)
    digest = hashlib.sha256()
    buf = bytearray(READ_SIZE)
    view = memoryview(buf)
    size = 0
    with open(fd, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            digest.update(view[:n])
            size += n
    return size, digest.hexdigest()


class PendingBlobs:
    """The `.pending` blobs of one store, and which of them this process wrote."""

    def __init__(
        self, layout: Layout, ledger: Ledger, pool: ThreadPoolExecutor, *, anonymous: bool
    ) -> None:
        self._layout = layout
        self._ledger = ledger
        self._pool = pool  # for the fsyncs of a few pending blobs, issued at once
        # Temps without a name (see `system`) while the tuning and the filesystem allow.
        self.anonymous_temps = anonymous
        # (sha, size) -> (st_dev, st_ino) of the .pending this process wrote and verified.
        self._mine: dict[tuple[str, int], tuple[int, int]] = {}
        self._unflushed = 0  # pending blobs written since the last early flush started
        self._flushing: Future[None] | None = None

    def presence(self, sha: str, size: int, *, touch: bool) -> Presence:
        """DURABLE, PENDING or MISSING; with `touch`, what is there gets mtime now (GC
        spares it). A wrong blob of either form is moved to quarantine on the way."""
        layout = self._layout
        # A file never sent has no directory: one check that raises nothing, instead of
        # two lstats that each raise (a first upload asks twice per file, GET and POST).
        if not os.access(f"{layout.stored}/{sha[:2]}/{sha[2:]}", os.F_OK):
            self._mine.pop((sha, size), None)
            return Presence.MISSING
        return self._present(sha, size, touch)

    def touch_expected(self, keys: list[tuple[str, int]]) -> list[tuple[tuple[str, int], Presence]]:
        """`presence(touch=True)` of blobs a checkout expects stored: the keys that are
        not DURABLE, with what they are. The durable ones, nearly always all of them,
        cost one lstat and one utime each (no check of their directory first)."""
        return [(key, self._present(*key, True)) for key in self._layout.touch_many(keys)]

    def _present(self, sha: str, size: int, touch: bool) -> Presence:
        """`presence` once the blob's directory may exist: its `.blob`, else its `.pending`."""
        if self._layout.touch(sha, size) if touch else self._layout.is_stored(sha, size):
            return Presence.DURABLE
        return Presence.PENDING if self._trusted(sha, size, touch) else Presence.MISSING

    def _trusted(self, sha: str, size: int, touch: bool) -> bool:
        key = (sha, size)
        path = self._layout.pending_path(sha, size)
        st = self._layout.held(path, size)  # the one "is it stored?" check, as for .blob
        if st is None:
            self._mine.pop(key, None)
            return False
        if self._mine.get(key) != (st.st_dev, st.st_ino) and not self._verify(path, sha, st):
            return False
        if touch:
            try:
                os.utime(path)
            except FileNotFoundError:
                return False
        return True

    def _verify(self, path: str, sha: str, st: os.stat_result) -> bool:
        """Hash a pending blob this process did not write; quarantine it if wrong."""
        try:
            nbytes, digest = hash_blob(path)
        except OSError:
            return False  # gone meanwhile, or unreadable: not stored
        if nbytes == st.st_size and digest == sha:
            self._mine[(sha, st.st_size)] = (st.st_dev, st.st_ino)
            return True
        what = f"{nbytes} bytes with SHA-256 {digest} (left unsynced before a crash?)"
        self._layout.quarantine(path, st, st.st_size, what)
        return False

    def write(self, sha: str, size: int, chunks: Sequence[bytes]) -> bool:
        """Store a verified small body as `.pending` (unsynced); False if a blob of it
        (either form) appeared meanwhile. Raises OSError (ENOSPC...)."""
        fd, temp = self.written_temp(sha, size, chunks)
        return self.link(sha, size, fd, temp)

    def written_temp(self, sha: str, size: int, chunks: Sequence[bytes]) -> tuple[int, str]:
        """A read-only temp holding the verified `chunks`, for `link`: (fd, name).
        Raises OSError (ENOSPC...) with nothing left behind."""
        layout = self._layout
        opened = open_anonymous_temp(layout) if self.anonymous_temps else None
        if opened is None:
            if self.anonymous_temps:
                log.info("no anonymous temp files on this filesystem; named ones")
                self.anonymous_temps = False
            opened = open_named_temp(layout, sha, size)
        fd, temp = opened
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
            make_read_only(fd, temp)
        except BaseException:
            discard(fd, temp)
            raise
        return fd, temp

    def link(self, sha: str, size: int, fd: int, temp: str) -> bool:
        """Link a `written_temp` as the pending blob; False if a blob of it (either
        form) appeared meanwhile. Owns `fd`: the temp is closed and removed either way."""
        layout = self._layout
        try:
            if not link_verified(layout, temp, layout.pending_path(sha, size), size):
                return False
            st = os.fstat(fd)
            self._mine[(sha, size)] = (st.st_dev, st.st_ino)
            self._ledger.add(size)
            self._unflushed += 1
            if self._unflushed >= FLUSH_EVERY:
                self._flush_early()
            return True
        finally:
            discard(fd, temp)

    def _flush_early(self) -> None:
        """Start a syncfs on a worker thread unless one is still running."""
        if self._flushing is not None and not self._flushing.done():
            return
        self._unflushed = 0
        try:
            self._flushing = self._pool.submit(_flush_quietly, self._layout.stored)
        except RuntimeError:  # the pool is shut down: the store is closing
            self._flushing = None

    def make_durable(self, keys: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
        """Sync these pending blobs, rename each to its `.blob` name and sync the
        renames; the keys whose pending blob vanished meanwhile (quarantined by
        someone else) and that have no `.blob` either. Raises OSError if a sync fails
        (nothing is renamed then)."""
        layout = self._layout
        pending = [(key, layout.pending_path(*key)) for key in keys]
        by_syncfs = len(pending) >= SYNCFS_MIN and system.sync_filesystem(layout.stored)
        if not by_syncfs:
            for _ in self._pool.map(_fsync_file, [path for _key, path in pending]):
                pass
        missing: list[tuple[str, int]] = []
        dirs: set[str] = set()
        for key, path in pending:
            final = layout.blob_path(*key)
            try:
                os.rename(path, final)  # over an identical .blob made meanwhile: harmless
            except FileNotFoundError:
                if not layout.is_stored(*key):
                    missing.append(key)
                continue
            self._mine.pop(key, None)
            dirs.add(os.path.dirname(final))
        if not by_syncfs or not system.sync_filesystem(layout.stored):
            for _ in self._pool.map(fsync_dir, sorted(dirs)):
                pass
        return missing


def _flush_quietly(directory: str) -> None:
    """An early flush: a failure is for the checkout's own sync to report."""
    try:
        system.sync_filesystem(directory)
    except OSError as exc:
        log.debug("early flush of pending blobs failed (the checkout's sync decides): %s", exc)


def _fsync_file(path: str) -> None:
    """fsync a pending blob by name; one that is gone is the caller's to notice."""
    fd = open_regular(path)
    if fd is None:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
