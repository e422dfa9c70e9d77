"""The file store: blobs identified by (SHA-256, size), received by streaming.

Layout (Flamenco's):
    file-store/stored/{sha[:2]}/{sha[2:]}/{size}.blob           verified, read-only
    file-store/uploading/{sha[:2]}/{sha[2:]}/{size}-{rand}.tmp  being received

A temp file is exclusively `flock`ed for its whole life, so cleanup (at startup
and in GC) can tell a live upload from the leftover of a crash: stale means
"lock obtainable and older than STALE_TEMP_AGE". A blob only appears through
`os.link` of a fully received, verified, fsynced temp file.

Small files of a batch upload arrive whole in memory and are written, fsynced and
linked within one call. Where the kernel offers it (Linux `O_TMPFILE`, with /proc
to link it by), their temp file is anonymous: an inode in `uploading/` with no name,
which never appears in a listing and vanishes by itself if the process dies. That
also spares a per-file `uploading/{sha[:2]}/{sha[2:]}/` directory created and removed
again for every small file: on ext4 a burst of freed inodes makes the next inode
allocations (the checkout's symlinks, right after) scan past them for minutes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import errno
import hashlib
import logging
import os
import secrets
import stat
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import (
    AlreadyStored,
    BodyTimeout,
    ChecksumMismatch,
    MustDefer,
    SizeMismatch,
    StorageFull,
)
from .fstree import walk
from .models import FileStatus
from .zerocopy import SocketSource, SpliceJob, Stopped, start_thread

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True) if os.name == "posix" else None
except OSError:  # pragma: no cover - no C library to load
    _LIBC = None

_sync_file_range = getattr(_LIBC, "sync_file_range", None)  # Linux only
if _sync_file_range is not None:
    _sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
_SYNC_FILE_RANGE_WRITE = 2

STALE_TEMP_AGE = 60.0  # seconds; a live upload's temp is flocked, this guards the create race
BATCH_SIZE = 2 * 1024 * 1024  # network chunks are gathered into buffers this big
_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_O_TMPFILE = getattr(os, "O_TMPFILE", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# O_TMPFILE unsupported by the filesystem (NFS, SMB, old kernels): use named temps.
_NO_TMPFILE_ERRNOS = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOTSUP}

Reader = Callable[[int], Awaitable[bytes]]

# Hashing and writing of upload buffers; two threads per upload in flight.
_IO_POOL = concurrent.futures.ThreadPoolExecutor(
    max_workers=max(4, 2 * (os.cpu_count() or 1)), thread_name_prefix="shaman-upload"
)


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS


def open_regular(path: str) -> int | None:
    """A read-only descriptor of `path` if it is a regular file, else None.

    Nothing else in the store is ever opened: opening a FIFO blocks until a writer
    comes (a FIFO named like a temp or a blob hung startup, GC, fsck and shutdown), a
    device may act on open, a symlink may lead anywhere. lstat first, then open with
    O_NONBLOCK and O_NOFOLLOW and check again with fstat, so a swap in between
    cannot make it block either.
    """
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | _O_CLOEXEC)
    except OSError:
        return None
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def temp_is_live(path: str) -> bool:
    """The one definition of "being uploaded", used by requirements, checkouts that
    wait for uploads, GC and fsck alike: a regular temp file whose flock someone holds
    right now. A temp nobody holds (a crashed manager's, even a young one) is not."""
    if fcntl is None:  # pragma: no cover - Windows: no flock; a temp that exists counts
        return os.path.isfile(path)
    fd = open_regular(path)
    if fd is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
    finally:
        os.close(fd)  # releases our lock, if we got it
    return False


def remove_temp_if_stale(path: str, cutoff: float) -> bool:
    """Unlink the temp file `path` if it is a regular file nobody holds the flock of,
    last changed before `cutoff` (a live upload may not have locked it yet just
    after creating it); our lock is held while unlinking. True if removed."""
    fd = open_regular(path)
    if fd is None:
        return False
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return False  # a live upload owns it
        if os.fstat(fd).st_mtime >= cutoff:
            return False
        os.unlink(path)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


@dataclass
class _Upload:
    """One in-process upload of a (sha, size); `done` is set when it ends either way."""

    done: asyncio.Event
    stored: bool = False


class FileStore:
    """Blobs under `<storage>/file-store`; see the module docstring for the layout."""

    def __init__(self, storage_root: Path, *, body_read_timeout: float = 60.0) -> None:
        self.storage_root = Path(storage_root)
        self.root = self.storage_root / "file-store"
        self.stored_dir = self.root / "stored"
        self.uploading_dir = self.root / "uploading"
        self._stored = str(self.stored_dir)
        self._uploading = str(self.uploading_dir)
        self.body_read_timeout = body_read_timeout
        # Exactly-once accounting: only the upload whose link created the blob counts.
        self.blobs_written = 0
        self.bytes_written = 0
        self._count_lock = threading.Lock()
        self._uploads: dict[tuple[str, int], _Upload] = {}
        self.anonymous_temps = bool(_O_TMPFILE) and os.path.isdir("/proc/self/fd")

    # ---- paths -------------------------------------------------------------

    def stored_path(self, sha: str, size: int) -> Path:
        return Path(self.blob_path(sha, size))

    def blob_path(self, sha: str, size: int) -> str:
        """String form of `stored_path`, for hot loops."""
        return f"{self._stored}/{sha[:2]}/{sha[2:]}/{size}.blob"

    def _upload_dir(self, sha: str) -> str:
        return f"{self._uploading}/{sha[:2]}/{sha[2:]}"

    def ensure_dirs(self) -> None:
        self.stored_dir.mkdir(parents=True, exist_ok=True)
        self.uploading_dir.mkdir(parents=True, exist_ok=True)

    # ---- status ------------------------------------------------------------

    def touch(self, sha: str, size: int) -> bool:
        """Set the blob's mtime to now; True if it is stored (see `holds`)."""
        path = self.blob_path(sha, size)
        if not self.holds(path, size):
            return False
        try:
            os.utime(path)
            return True
        except FileNotFoundError:
            return False

    def is_stored(self, sha: str, size: int) -> bool:
        return self.holds(self.blob_path(sha, size), size)

    def holds(self, path: str, size: int) -> bool:
        """True if the blob at `path` is a regular file of `size` bytes.

        Checked wherever a blob is declared stored (requirements, file status, checkout,
        upload). One that exists but is not (truncated or grown on disk, replaced by a
        FIFO or a link) is moved to quarantine: it is not stored any more, and the
        next upload of the right bytes is accepted instead of answered 208.
        """
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        if stat.S_ISREG(st.st_mode) and st.st_size == size:
            return True
        self._quarantine(path, st, size)
        return False

    def _quarantine(self, path: str, st: os.stat_result, size: int) -> None:
        """Move the bad blob `path` (as `st` saw it) to quarantine/; never deletes it."""
        rel = path[len(self._stored) + 1 :]
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        dest = f"{self.root}/quarantine/{stamp}-{secrets.token_hex(4)}/{rel}"
        what = "not a regular file" if not stat.S_ISREG(st.st_mode) else f"{st.st_size} bytes"
        try:
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            os.rename(path, dest)  # same filesystem: nothing is opened or copied
        except FileNotFoundError:
            return  # someone else moved it already
        except OSError as exc:
            log.error(
                "blob %s is %s, not %d bytes, and cannot be quarantined: %s", path, what, size, exc
            )
            return
        moved = os.lstat(dest)
        if (moved.st_dev, moved.st_ino) != (st.st_dev, st.st_ino):
            # An upload put the right blob there between our lstat and the rename: back.
            with contextlib.suppress(FileExistsError):
                os.link(dest, path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(dest)
            return
        log.warning(
            "blob %s is %s, not %d bytes: moved to %s; the next upload of it is accepted",
            path,
            what,
            size,
            dest,
        )

    def is_uploading(self, sha: str, size: int) -> bool:
        """An upload of this process, or a live temp (see `temp_is_live`) of any process
        sharing the storage."""
        return (sha, size) in self._uploads or self._live_temp_exists(sha, size)

    def _live_temp_exists(self, sha: str, size: int) -> bool:
        prefix = f"{size}-"
        directory = self._upload_dir(sha)
        try:
            names = os.listdir(directory)
        except OSError:
            return False
        return any(
            n.startswith(prefix) and n.endswith(".tmp") and temp_is_live(f"{directory}/{n}")
            for n in names
        )

    def status(self, sha: str, size: int) -> FileStatus:
        """Status for a requirements request; a stored blob is touched (GC spares it)."""
        if self.touch(sha, size):
            return "stored"
        return "uploading" if self.is_uploading(sha, size) else "unknown"

    def statuses(self, keys: Iterable[tuple[str, int]]) -> list[FileStatus]:
        """`status` for many files at once, as a requirements request needs.

        Instead of one listdir per unknown file, each `uploading/{sha[:2]}` dir is
        listed at most once per call: a first submission of 100k files stays cheap.
        """
        subdirs: dict[str, set[str]] = {}
        result: list[FileStatus] = []
        for sha, size in keys:
            if self.touch(sha, size):
                result.append("stored")
                continue
            if (sha, size) in self._uploads:
                result.append("uploading")
                continue
            present = subdirs.get(sha[:2])
            if present is None:
                try:
                    present = set(os.listdir(f"{self._uploading}/{sha[:2]}"))
                except OSError:
                    present = set()
                subdirs[sha[:2]] = present
            uploading = sha[2:] in present and self.is_uploading(sha, size)
            result.append("uploading" if uploading else "unknown")
        return result

    def peek_status(self, sha: str, size: int) -> FileStatus:
        """Status without touching anything (for GET files/{sha}/{size})."""
        if self.is_stored(sha, size):
            return "stored"
        return "uploading" if self.is_uploading(sha, size) else "unknown"

    # ---- receiving ---------------------------------------------------------

    async def receive(
        self,
        sha: str,
        size: int,
        read: Reader,
        *,
        can_defer: bool = False,
        source: SocketSource | None = None,
    ) -> None:
        """Stream a body into the store; return when the blob is stored by this call.

        `read(n)` returns up to n bytes, b"" at the end. With a `source` (a body of
        exactly `size` bytes whose socket can be taken over) the body is spliced from
        the socket instead of read; see `manager_plugin.zerocopy`. Raises AlreadyStored (also
        when a concurrent upload finished first), MustDefer, SizeMismatch,
        ChecksumMismatch, BodyTimeout or StorageFull. Nothing partial ever remains.
        """
        key = (sha, size)
        if await asyncio.to_thread(self.touch, sha, size):
            raise AlreadyStored(f"{sha}/{size} is already stored")
        other = self._uploads.get(key)
        if can_defer and (
            other is not None or await asyncio.to_thread(self._live_temp_exists, sha, size)
        ):
            raise MustDefer(f"{sha}/{size} is being uploaded by someone else; upload it later")
        mine = _Upload(asyncio.Event())
        if other is None:
            self._uploads[key] = mine
        try:
            if source is not None:
                await self._receive_spliced(sha, size, source, other)
            else:
                await self._receive(sha, size, read, other)
            mine.stored = True
        finally:
            mine.done.set()
            if self._uploads.get(key) is mine:
                del self._uploads[key]

    async def _receive(self, sha: str, size: int, read: Reader, other: _Upload | None) -> None:
        final = self.blob_path(sha, size)
        fd, temp = await asyncio.to_thread(self._open_temp, sha, size)
        hasher = hashlib.sha256()
        received = 0
        pending: _BufferJob | None = None
        try:
            limit = size + 1  # read one byte past the declared size to detect overlong bodies
            while True:
                # Chunks are handed over as they came, as a list the workers hash and write
                # one by one: gathering them into one buffer cost a full copy on the loop.
                chunks: list[bytes] = []
                filled = 0
                eof = False
                while filled < BATCH_SIZE and received + filled < limit:
                    want = min(BATCH_SIZE - filled, limit - received - filled)
                    chunk = await self._read_chunk(read, want, other, f"{sha}/{size}")
                    if not chunk:
                        eof = True
                        break
                    chunks.append(chunk)
                    filled += len(chunk)
                if pending is not None and await pending.result():
                    raise AlreadyStored(f"{sha}/{size} was stored by another upload meanwhile")
                pending = None
                if other is not None and other.done.is_set() and other.stored:
                    raise AlreadyStored(f"{sha}/{size} was stored by another upload meanwhile")
                received += filled
                if received > size:
                    raise SizeMismatch(f"body is longer than the declared size {size}")
                if chunks:
                    pending = _BufferJob(hasher, fd, chunks, final)
                if eof:
                    break
                # Not at the end yet; once `size` bytes are in, the next read must see EOF.
            if pending is not None:
                if await pending.result():
                    raise AlreadyStored(f"{sha}/{size} was stored by another upload meanwhile")
                pending = None
            _check_body(sha, size, received, hasher)
            commit_fd, fd = fd, -1  # _commit owns (and closes) it from here on
            if not await asyncio.to_thread(self._commit, commit_fd, temp, final, size):
                raise AlreadyStored(f"{sha}/{size} was stored by another upload meanwhile")
        except BaseException as exc:
            if pending is not None:
                # The workers must be done with fd before it is closed.
                await asyncio.shield(asyncio.to_thread(pending.settle))
            if fd >= 0:
                await asyncio.to_thread(_discard, fd, temp)
            if is_disk_full(exc):
                raise StorageFull("storage is full; upload discarded") from exc
            raise

    async def _receive_spliced(
        self, sha: str, size: int, source: SocketSource, other: _Upload | None
    ) -> None:
        """`_receive` for a body read straight from its socket by a worker thread."""
        final = self.blob_path(sha, size)
        name = f"{sha}/{size}"
        fd, temp = await asyncio.to_thread(self._open_temp, sha, size)
        job: SpliceJob | None = None
        running: concurrent.futures.Future[int] | None = None
        watcher: asyncio.Task[None] | None = None

        def on_batch(out_fd: int) -> bool:
            if _sync_file_range is not None:
                _sync_file_range(out_fd, 0, 0, _SYNC_FILE_RANGE_WRITE)  # see _write_all
            return os.path.exists(final)  # stored by someone else meanwhile: stop

        try:
            sock, head = source.take()
            hasher = hashlib.sha256()
            timeout = self.body_read_timeout
            job = SpliceJob(
                sock, fd, temp, head, size, hasher, timeout, _IO_POOL, on_batch, pace=source.pace
            )
            if other is not None:
                watcher = asyncio.ensure_future(_flag_when_stored(other, job.stop))
            running = start_thread(job.run)
            try:
                received = await asyncio.wrap_future(running)
            except Stopped:
                raise AlreadyStored(f"{name} was stored by another upload meanwhile") from None
            _check_body(sha, size, received, hasher)
            commit_fd, fd = fd, -1  # _commit owns (and closes) it from here on
            if not await asyncio.to_thread(self._commit, commit_fd, temp, final, size):
                raise AlreadyStored(f"{name} was stored by another upload meanwhile")
        except BaseException as exc:
            if job is not None:
                job.stop.set()  # if it still runs (we were cancelled): stop now
                if running is None:
                    os.close(job.sock)  # never started, so it will not close it
            if fd >= 0:
                # One thread hop that first waits for the job to be done with fd, submitted
                # right here: even if this task is cancelled again (or the loop is shutting
                # down) before it would start, the temp is still removed.
                loop = asyncio.get_running_loop()
                cleanup = loop.run_in_executor(None, _settle_and_discard, running, fd, temp)
                await asyncio.shield(cleanup)
            if is_disk_full(exc):
                raise StorageFull("storage is full; upload discarded") from exc
            raise
        finally:
            if watcher is not None:
                watcher.cancel()
            if job is not None:
                source.set_unread(size - job.consumed)

    async def _read_chunk(self, read: Reader, want: int, other: _Upload | None, name: str) -> bytes:
        """Next piece of the body, within the timeout.

        While another upload of the same file runs, also wait for it: when it
        stores the blob first, stop at once with AlreadyStored, even if this
        client is slow or stalled.
        """
        timeout = self.body_read_timeout
        if other is None or other.done.is_set():
            # asyncio.timeout is one timer handle; wait_for made a Task for every chunk.
            try:
                async with asyncio.timeout(timeout):
                    return await read(want)
            except TimeoutError:
                raise BodyTimeout(f"no body data for {timeout:g} s; upload aborted") from None
        read_task = asyncio.ensure_future(read(want))
        other_task = asyncio.ensure_future(other.done.wait())
        try:
            finished, _ = await asyncio.wait(
                {read_task, other_task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if read_task in finished:
                return read_task.result()
            if other_task in finished and other.stored:
                raise AlreadyStored(f"{name} was stored by another upload meanwhile")
            if other_task in finished:
                # The other upload failed; this one carries on alone.
                return await asyncio.wait_for(asyncio.shield(read_task), timeout)
            raise BodyTimeout(f"no body data for {timeout:g} s; upload aborted")
        except TimeoutError:
            raise BodyTimeout(f"no body data for {timeout:g} s; upload aborted") from None
        finally:
            other_task.cancel()
            if not read_task.done():
                read_task.cancel()

    def _open_temp(self, sha: str, size: int) -> tuple[int, str]:
        directory = self._upload_dir(sha)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        for attempt in range(5):
            temp = f"{directory}/{size}-{secrets.token_hex(8)}.tmp"
            try:
                fd = os.open(temp, flags, 0o600)
            except FileNotFoundError:
                if attempt == 4:
                    raise
                # Finished uploads and GC prune empty directories, also halfway through
                # our makedirs (parent gone before its child is made): just try again.
                with contextlib.suppress(FileNotFoundError):
                    os.makedirs(directory, exist_ok=True)
                continue
            except OSError as exc:
                if is_disk_full(exc):
                    raise StorageFull("storage is full") from exc
                raise
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            return fd, temp
        raise AssertionError("unreachable")

    def _commit(self, fd: int, temp: str, final: str, size: int) -> bool:
        """Make the verified temp the blob. False if the blob existed already.

        Counting happens here, in the thread, so that it stays exactly-once even
        if the awaiting request is cancelled while the link is being made.
        """
        try:
            os.fsync(fd)
            if hasattr(os, "fchmod"):
                os.fchmod(fd, 0o444)
            else:  # pragma: no cover - Windows before Python 3.13
                os.chmod(temp, 0o444)
            parent = os.path.dirname(final)
            for attempt in range(5):
                try:
                    os.link(temp, final)
                    break
                except FileExistsError:
                    if attempt == 4 or self.holds(final, size):
                        return False
                    # A bad blob was in the way; `holds` moved it to quarantine.
                    continue
                except FileNotFoundError:
                    if attempt == 4:
                        raise
                    # Parent missing (first blob of this sha, or GC just removed it,
                    # possibly halfway through our makedirs): try again.
                    with contextlib.suppress(FileNotFoundError):
                        os.makedirs(parent, exist_ok=True)
            with self._count_lock:
                self.blobs_written += 1
                self.bytes_written += size
            _fsync_dir(parent)
            return True
        finally:
            _discard(fd, temp)

    def commit_records(self, records: list[tuple[str, int, bytes]]) -> list[tuple[str, str]]:
        """Store a group of small files received whole in memory, in one thread hop.

        Returns one (status, message) per record: "stored" (linked by this call),
        "exists" (already stored, or stored meanwhile) or "rejected" (the bytes do not
        match the declared size or SHA-256; nothing kept). The data of every temp is
        made durable (parallel fsyncs) before any of them is linked,
        and the links with a second one, so a .blob still only ever comes from a
        fully written, verified, durable temp. Raises StorageFull (no temp left).
        """
        results: list[tuple[str, str]] = [("", "")] * len(records)
        temps: list[tuple[int, int, str, str]] = []  # (record index, fd, temp, final)
        linked_dirs: set[str] = set()
        try:
            for index, (sha, size, data) in enumerate(records):
                if len(data) != size:
                    results[index] = ("rejected", f"received {len(data)} bytes, declared {size}")
                    continue
                digest = hashlib.sha256(data).hexdigest()
                if digest != sha:
                    results[index] = (
                        "rejected",
                        f"received bytes have SHA-256 {digest}, declared {sha}",
                    )
                    continue
                if self.touch(sha, size):
                    results[index] = ("exists", "")
                    continue
                fd, temp = self._open_record_temp(sha, size)
                temps.append((index, fd, temp, self.blob_path(sha, size)))
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if hasattr(os, "fchmod"):
                    os.fchmod(fd, 0o444)
            if temps:
                _make_durable([fd for _, fd, _, _ in temps], None)
            for index, _fd, temp, final in temps:
                sha, size, _ = records[index]
                if self._link(temp, final, size):
                    results[index] = ("stored", "")
                    linked_dirs.add(os.path.dirname(final))
                    with self._count_lock:
                        self.blobs_written += 1
                        self.bytes_written += size
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
                    _make_durable([fd for _, fd, _, _ in temps], linked_dirs)
            finally:
                for _, fd, temp, _ in temps:
                    _discard(fd, temp)

    def _open_record_temp(self, sha: str, size: int) -> tuple[int, str]:
        """A temp for a small file received whole: anonymous where possible.

        Returns (fd, temp); an anonymous temp's name is its /proc/self/fd link, which
        `_link` hard-links by and `_discard` has nothing to remove for.
        """
        if self.anonymous_temps:
            flags = _O_TMPFILE | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)
            for attempt in range(2):
                try:
                    fd = os.open(self._uploading, flags, 0o600)
                    return fd, f"{_PROC_FD}{fd}"
                except FileNotFoundError:
                    if attempt:
                        raise
                    os.makedirs(self._uploading, exist_ok=True)
                except OSError as exc:
                    if is_disk_full(exc):
                        raise StorageFull("storage is full") from exc
                    if exc.errno not in _NO_TMPFILE_ERRNOS:
                        raise
                    log.info("no anonymous temp files on this filesystem (%s); named ones", exc)
                    self.anonymous_temps = False
                    break
        return self._open_temp(sha, size)

    def _link(self, temp: str, final: str, size: int) -> bool:
        """Hard-link a verified temp as the blob; False if the blob exists already."""
        parent = os.path.dirname(final)
        for attempt in range(5):
            try:
                if temp.startswith(_PROC_FD):
                    # link() would link /proc's magic symlink itself (EXDEV); linkat with
                    # AT_SYMLINK_FOLLOW links the file. os.link uses linkat only when given
                    # a dir fd, hence "/" as one.
                    os.link(temp[1:], final, src_dir_fd=_root_fd(), follow_symlinks=True)
                else:
                    os.link(temp, final)
                return True
            except FileExistsError:
                if attempt == 4 or self.holds(final, size):
                    return False
                # A bad blob was in the way; `holds` moved it to quarantine.
            except FileNotFoundError:
                if attempt == 4:
                    raise
                with contextlib.suppress(FileNotFoundError):
                    os.makedirs(parent, exist_ok=True)
        raise AssertionError("unreachable")

    # ---- maintenance -------------------------------------------------------

    def remove_stale_temps(self, min_age: float = STALE_TEMP_AGE) -> list[str]:
        """Delete temp files nobody holds a lock on and older than `min_age` seconds.
        Entries that are not regular files are left alone (and never opened)."""
        removed: list[str] = []
        cutoff = time.time() - min_age
        for _directory, entries in walk(self._uploading):
            for entry in entries:
                if not entry.name.endswith(".tmp"):
                    continue
                if remove_temp_if_stale(entry.path, cutoff):
                    removed.append(entry.path)
        return removed


def _write_all(fd: int, chunks: list[bytes], final: str) -> bool:
    """Worker-thread part of receiving: write one batch of chunks, in order.

    Returns True if the final blob appeared meanwhile (someone else stored it), so
    the caller can stop early; checking here keeps the stat off the event loop.
    """
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]
    if _sync_file_range is not None:
        # Start (not wait for) writing what is dirty to disk while the rest arrives, so
        # the fsync before the link has little left to do. Only a hint: errors are moot.
        _sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)
    return os.path.exists(final)


def _hash_all(hasher: hashlib._Hash, chunks: list[bytes]) -> None:
    for chunk in chunks:
        hasher.update(chunk)  # releases the GIL for all but tiny chunks


class _BufferJob:
    """One buffer being hashed and written at once by two pool threads.

    Both release the GIL (hashlib for big buffers, os.write), so they overlap with
    each other and with the event loop reading the next buffer.
    """

    def __init__(self, hasher: hashlib._Hash, fd: int, chunks: list[bytes], final: str) -> None:
        self.hashing = _IO_POOL.submit(_hash_all, hasher, chunks)
        self.writing = _IO_POOL.submit(_write_all, fd, chunks, final)

    async def result(self) -> bool:
        """Wait for both; True if the blob appeared meanwhile (see `_write_all`)."""
        # gather retrieves both outcomes: an asyncio wrapper whose exception nobody
        # fetched would be logged as "Future exception was never retrieved" (a full disk).
        hashed, written = await asyncio.gather(
            asyncio.wrap_future(self.hashing),
            asyncio.wrap_future(self.writing),
            return_exceptions=True,
        )
        for outcome in (hashed, written):
            if isinstance(outcome, BaseException):
                raise outcome
        return bool(written)

    def settle(self) -> None:
        """Block until both threads are done, whatever happened (for cleanup)."""
        concurrent.futures.wait([self.hashing, self.writing])


_PROC_FD = "/proc/self/fd/"
_ROOT_FD: list[int] = []
_ROOT_FD_LOCK = threading.Lock()


def _root_fd() -> int:
    """A directory fd of "/", opened once (see `FileStore._link`)."""
    with _ROOT_FD_LOCK:
        if not _ROOT_FD:
            _ROOT_FD.append(os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
        return _ROOT_FD[0]


def _check_body(sha: str, size: int, received: int, hasher: hashlib._Hash) -> None:
    """Raise SizeMismatch or ChecksumMismatch unless the body received is the one declared."""
    if received != size:
        raise SizeMismatch(f"received {received} bytes, declared size is {size}")
    digest = hasher.hexdigest()
    if digest != sha:
        raise ChecksumMismatch(f"received bytes have SHA-256 {digest}, declared {sha}")


def _settle_and_discard(running: concurrent.futures.Future[int] | None, fd: int, temp: str) -> None:
    if running is not None:
        concurrent.futures.wait([running])
    _discard(fd, temp)


async def _flag_when_stored(other: _Upload, flag: threading.Event) -> None:
    await other.done.wait()
    if other.stored:
        flag.set()


def _discard(fd: int, temp: str) -> None:
    """Close and remove a temp file (after its link, or instead of one)."""
    # Close first: Windows cannot unlink an open file. A closed young temp is still
    # safe from cleanup, which also requires an age of STALE_TEMP_AGE.
    os.close(fd)
    if temp.startswith(_PROC_FD):
        return  # anonymous: closing it was all
    try:
        os.unlink(temp)
    except FileNotFoundError:
        pass
    _prune_upload_dirs(temp)


def _prune_upload_dirs(temp: str) -> None:
    """Remove the temp's now-empty directories (fails harmlessly while others upload)."""
    directory = os.path.dirname(temp)
    for _ in range(2):
        try:
            os.rmdir(directory)
        except OSError:
            return
        directory = os.path.dirname(directory)


# fsyncs of many small files issued at once share the filesystem's journal commits.
# (syncfs(2) would be one call, but it also waits for every other writer's dirty data
# on the filesystem: one small batch would stall behind a concurrent multi-GB upload.)
_FSYNC_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="fsync")


def _make_durable(fds: list[int], dirs: set[str] | None) -> None:
    """Flush the files' data (dirs None) or the directories' entries, in parallel."""
    if dirs is None:
        for _ in _FSYNC_POOL.map(os.fsync, fds):
            pass
    else:
        for _ in _FSYNC_POOL.map(_fsync_dir, dirs):
            pass


def _fsync_dir(path: str) -> None:
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
