"""Temp files: how an upload's bytes wait until verified, and when one is left over.

A named temp (`uploading/{sha[:2]}/{sha[2:]}/{size}-{rand}.tmp`) is exclusively
`flock`ed for its whole life, so anyone sharing the storage (this server at startup
and in GC, another manager, fsck) can tell a live upload from a crash's leftover.
This module holds the one definition of "being uploaded" (`temp_is_live`) and of
"stale" (nobody holds the lock, and older than STALE_TEMP_AGE). Anonymous temps
(see `system`) have no name, so they are never live, stale or left over.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import time

from ..errors import StorageFull
from ..fstree import walk
from . import system
from .layout import Layout, make_leaf_dir

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

STALE_TEMP_AGE = 60.0  # seconds; a live upload's temp is flocked, this guards the create race
_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


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


def live_temp_exists(layout: Layout, sha: str, size: int) -> bool:
    """True if any process sharing the storage is uploading (sha, size) right now."""
    prefix = f"{size}-"
    directory = layout.upload_dir(sha)
    if not os.access(directory, os.F_OK):  # the usual answer, without raising
        return False
    try:
        names = os.listdir(directory)
    except OSError:
        return False
    return any(
        n.startswith(prefix) and n.endswith(".tmp") and temp_is_live(f"{directory}/{n}")
        for n in names
    )


def remove_stale_temps(layout: Layout, min_age: float = STALE_TEMP_AGE) -> list[str]:
    """Delete temp files nobody holds a lock on and older than `min_age` seconds.
    Entries that are not regular files are left alone (and never opened)."""
    removed: list[str] = []
    cutoff = time.time() - min_age
    for _directory, entries in walk(layout.uploading):
        for entry in entries:
            if entry.name.endswith(".tmp") and remove_temp_if_stale(entry.path, cutoff):
                removed.append(entry.path)
    return removed


def open_named_temp(layout: Layout, sha: str, size: int) -> tuple[int, str]:
    """A new, locked temp for (sha, size): (fd, path). Raises StorageFull."""
    directory = layout.upload_dir(sha)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC
    for attempt in range(5):
        temp = f"{directory}/{size}-{secrets.token_hex(8)}.tmp"
        try:
            # Usually missing (finished uploads prune it): make it first instead of
            # failing an open, a stat per level and only then making it.
            make_leaf_dir(directory, parent_first=True)
            fd = os.open(temp, flags, 0o600)
        except FileNotFoundError:
            if attempt == 4:
                raise
            # Finished uploads and GC prune empty directories, also halfway through
            # our mkdirs (parent gone before its child is made): just try again.
            continue
        except OSError as exc:
            if is_disk_full(exc):
                raise StorageFull("storage is full") from exc
            raise
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        return fd, temp
    raise AssertionError("unreachable")


def open_anonymous_temp(layout: Layout) -> tuple[int, str] | None:
    """An anonymous temp in uploading/ (see `system`), or None when the filesystem
    cannot make one (the caller then uses a named temp). Raises StorageFull."""
    for attempt in range(2):
        try:
            return system.open_anonymous(layout.uploading)
        except FileNotFoundError:
            if attempt:
                raise
            os.makedirs(layout.uploading, exist_ok=True)
        except OSError as exc:
            if is_disk_full(exc):
                raise StorageFull("storage is full") from exc
            if exc.errno not in system.NO_TMPFILE_ERRNOS:
                raise
            return None
    raise AssertionError("unreachable")


def discard(fd: int, temp: str) -> None:
    """Close and remove a temp file (after its link, or instead of one)."""
    # Close first: Windows cannot unlink an open file. A closed young temp is still
    # safe from cleanup, which also requires an age of STALE_TEMP_AGE.
    os.close(fd)
    if system.is_anonymous(temp):
        return  # anonymous: closing it was all
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp)
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
