"""Linux-only kernel features the store uses when present (see `system` for the choice).

- `sync_file_range` to start writeback of an upload while the rest still arrives;
- `O_TMPFILE` temps, linked into place through `/proc/self/fd` (no name, no per-file
  directory, gone by themselves if the process dies);
- `splice(2)`, for moving a body from the socket to the temp file (see `splice`);
- `syncfs(2)`, to make a checkout's pending blobs durable in one call (see `pending`).

ctypes and the C library are loaded on first use, not at import.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import select
import threading
from collections.abc import Callable

try:
    import fcntl
except ImportError:  # pragma: no cover - not Linux after all
    fcntl = None  # type: ignore[assignment]

PROC_FD = "/proc/self/fd/"
_O_TMPFILE = getattr(os, "O_TMPFILE", 0)
_SYNC_FILE_RANGE_WRITE = 2
# O_TMPFILE unsupported by the filesystem (NFS, SMB, old kernels): use named temps.
NO_TMPFILE_ERRNOS = frozenset({errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOTSUP})

SPLICE_AVAILABLE = hasattr(os, "splice") and hasattr(select, "poll") and fcntl is not None
ANONYMOUS_TEMPS_AVAILABLE = bool(_O_TMPFILE) and os.path.isdir("/proc/self/fd")


@functools.cache
def _sync_file_range() -> Callable[..., int] | None:
    try:
        func = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):  # pragma: no cover - no such libc function
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return func


@functools.cache
def _syncfs() -> Callable[..., int] | None:
    try:
        func = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):  # pragma: no cover - no such libc function
        return None
    func.argtypes = [ctypes.c_int]
    return func


def sync_filesystem(path: str) -> bool:
    """Flush everything dirty on the filesystem holding `path` (one syscall instead of
    an fsync per file); False if that is not possible here (the caller then fsyncs
    file by file). Raises OSError if the flush itself failed (EIO, ENOSPC)."""
    func = _syncfs()
    if func is None:  # pragma: no cover
        return False
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if func(fd) != 0:
            err = ctypes.get_errno()
            if err == errno.ENOSYS:  # pragma: no cover - kernel without syncfs
                return False
            raise OSError(err, os.strerror(err), path)
    finally:
        os.close(fd)
    return True


def hint_writeback(fd: int) -> None:
    """Start (not wait for) writing what is dirty of `fd` to disk, so that the fsync
    before the link has little left to do. Only a hint: errors are moot."""
    func = _sync_file_range()
    if func is not None:
        func(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)


def open_anonymous(directory: str) -> tuple[int, str]:
    """An unnamed temp in `directory`: (fd, the /proc name `link_into_place` links by).
    Raises OSError (errno in NO_TMPFILE_ERRNOS when the filesystem cannot)."""
    fd = os.open(directory, _O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    return fd, f"{PROC_FD}{fd}"


def is_anonymous(temp: str) -> bool:
    return temp.startswith(PROC_FD)


def link_into_place(temp: str, final: str) -> None:
    """os.link, also for an anonymous temp's /proc name.

    link() would link /proc's magic symlink itself (EXDEV); linkat with
    AT_SYMLINK_FOLLOW links the file. os.link uses linkat only when given a dir fd,
    hence "/" as one.
    """
    if temp.startswith(PROC_FD):
        os.link(temp[1:], final, src_dir_fd=_root_fd(), follow_symlinks=True)
    else:
        os.link(temp, final)


_ROOT_FD: list[int] = []
_ROOT_FD_LOCK = threading.Lock()


def _root_fd() -> int:
    """A directory fd of "/", opened once."""
    with _ROOT_FD_LOCK:
        if not _ROOT_FD:
            _ROOT_FD.append(os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
        return _ROOT_FD[0]
