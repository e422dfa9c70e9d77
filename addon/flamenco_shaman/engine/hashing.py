"""SHA-256 of files: streamed in large blocks into a per-thread buffer, cache-aware,
and never trusting a file that changed while it was read."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .cache import ChecksumCache
from .errors import SubmitCancelled, SubmitError

BLOCK_SIZE = 1 << 20
MAX_ATTEMPTS = 5  # a file still changing after this many reads is an error

_local = threading.local()


@dataclass(frozen=True)
class Identity:
    """What the manager knows a file by, plus the stat it was computed from."""

    sha: str
    size: int
    mtime_ns: int
    from_cache: bool = False


def _buffer() -> memoryview:
    buf = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = memoryview(bytearray(BLOCK_SIZE))
    return buf


def stat_key(path: str | Path) -> tuple[int, int]:
    """(size, mtime_ns); raises SubmitError when the file is gone."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise SubmitError(f"file vanished before it could be sent: {path}") from None
    except OSError as ex:
        raise SubmitError(f"cannot read {path}: {ex.strerror or ex}") from None
    return st.st_size, st.st_mtime_ns


def sha256_of(
    path: str | Path,
    cancel: threading.Event | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> str:
    """Hex SHA-256 of the file's bytes; hashlib releases the GIL, so threads use all cores."""
    digest = hashlib.sha256()
    buf = _buffer()
    try:
        with open(path, "rb", buffering=0) as f:
            while True:
                if cancel is not None and cancel.is_set():
                    raise SubmitCancelled()
                n = f.readinto(buf)
                if not n:
                    break
                digest.update(buf[:n])
                if on_bytes is not None:
                    on_bytes(n)
    except FileNotFoundError:
        raise SubmitError(f"file vanished while it was read: {path}") from None
    except OSError as ex:
        raise SubmitError(f"cannot read {path}: {ex.strerror or ex}") from None
    return digest.hexdigest()


def identify(
    path: str | Path,
    cache: ChecksumCache | None = None,
    cancel: threading.Event | None = None,
    on_bytes: Callable[[int], None] | None = None,
    st: os.stat_result | None = None,
) -> Identity:
    """The file's identity, from the cache when its size and mtime are unchanged.

    `st`, when given, is a stat the caller just took of the file; the first attempt uses
    it instead of statting again. A file whose size or mtime differs after reading than
    before is read again: its bytes may be a mix of two versions.
    """
    abspath = os.path.abspath(path)
    for _ in range(MAX_ATTEMPTS):
        if st is not None:
            size, mtime_ns = st.st_size, st.st_mtime_ns
            st = None
        else:
            size, mtime_ns = stat_key(path)
        if cache is not None:
            sha = cache.lookup(abspath, size, mtime_ns)
            if sha is not None:
                return Identity(sha, size, mtime_ns, from_cache=True)
        sha = sha256_of(path, cancel, on_bytes)
        if stat_key(path) == (size, mtime_ns):
            if cache is not None:
                cache.store(abspath, size, mtime_ns, sha)
            return Identity(sha, size, mtime_ns)
    raise SubmitError(f"file keeps changing while it is read: {path}")
