"""Where blobs and temps live, and what "stored" means.

Flamenco's layout under `<storage>/file-store`:

    stored/{sha[:2]}/{sha[2:]}/{size}.blob            verified, durable, read-only
    stored/{sha[:2]}/{sha[2:]}/{size}.pending         verified, maybe not on disk yet
    uploading/{sha[:2]}/{sha[2:]}/{size}-{rand}.tmp   being received (see `temps`)
    quarantine/{stamp}-{rand}/...                     bad blobs moved aside, never deleted

A blob counts as stored only when it is a regular file of exactly its size (`holds`);
anything else at a blob's path is moved to quarantine when it is noticed. A `.pending`
blob is a small upload answered before its bytes were synced; checkouts only link
`.blob`s, and `pending` owns when one may become the other.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import stat
import time
from pathlib import Path

from ..protocol import is_checksum

log = logging.getLogger(__name__)

BLOB_SUFFIXES = (".blob", ".pending")  # a durable blob, a pending one (see `pending`)
_BLOB_NAME = re.compile(r"(0|[1-9][0-9]*)\.(?:blob|pending)")


def parse_blob_path(rel_dir: tuple[str, ...], name: str) -> tuple[str, int] | None:
    """(sha, size) of the entry `name` in directory `rel_dir` (relative to stored/), or
    None when that is not where a blob of the layout lives (`.blob` or `.pending`)."""
    if len(rel_dir) != 2:
        return None
    head, tail = rel_dir
    match = _BLOB_NAME.fullmatch(name)
    if match is None or len(head) != 2 or not is_checksum(head + tail):
        return None
    return head + tail, int(match.group(1))


def is_blob(st: os.stat_result, size: int) -> bool:
    """Whether what lstat saw can be the blob of `size` bytes: a regular file that long."""
    return stat.S_ISREG(st.st_mode) and st.st_size == size


def make_leaf_dir(directory: str, *, parent_first: bool) -> None:
    """Make `directory` ({sha[:2]}/{sha[2:]} under stored/ or uploading/) and its parent,
    with as few (failing) syscalls as the usual case allows: `parent_first` when the
    parent is usually missing too (uploading/, pruned after each upload), else the leaf
    first (stored/, whose 256 parents stay). Existing directories are fine; anything
    missing higher up is made by makedirs. Raises OSError (e.g. ENOSPC)."""
    parent = os.path.dirname(directory)
    if parent_first:
        with contextlib.suppress(FileExistsError):
            os.mkdir(parent)
    try:
        os.mkdir(directory)
        return
    except FileExistsError:
        return
    except FileNotFoundError:
        pass
    os.makedirs(directory, exist_ok=True)


class Layout:
    """Paths of one file store, and the checks every "is it stored?" goes through."""

    def __init__(self, storage_root: Path) -> None:
        self.storage_root = Path(storage_root)
        self.root = self.storage_root / "file-store"
        self.stored_dir = self.root / "stored"
        self.uploading_dir = self.root / "uploading"
        # String forms, for hot loops (a Path per file costs more than the syscall).
        self.stored = str(self.stored_dir)
        self.uploading = str(self.uploading_dir)

    def blob_path(self, sha: str, size: int) -> str:
        return f"{self.stored}/{sha[:2]}/{sha[2:]}/{size}.blob"

    def pending_path(self, sha: str, size: int) -> str:
        return f"{self.stored}/{sha[:2]}/{sha[2:]}/{size}.pending"

    def upload_dir(self, sha: str) -> str:
        return f"{self.uploading}/{sha[:2]}/{sha[2:]}"

    def ensure_dirs(self) -> None:
        self.stored_dir.mkdir(parents=True, exist_ok=True)
        self.uploading_dir.mkdir(parents=True, exist_ok=True)

    def is_stored(self, sha: str, size: int) -> bool:
        return self.holds(self.blob_path(sha, size), size)

    def touch(self, sha: str, size: int) -> bool:
        """Set the blob's mtime to now (GC spares it); True if it is stored (see `holds`)."""
        path = self.blob_path(sha, size)
        if not self.holds(path, size):
            return False
        try:
            os.utime(path)
            return True
        except FileNotFoundError:
            return False

    def touch_many(self, keys: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """`touch` for many blobs, in one tight loop: the keys whose `.blob` is not there
        as a regular file of the right size, untouched, for the caller to ask about one
        by one (`held` quarantines a wrong one, a `.pending` may stand in for it)."""
        lstat, utime = os.lstat, os.utime
        rest: list[tuple[str, int]] = []
        for key in keys:
            sha, size = key
            path = self.blob_path(sha, size)
            try:
                if is_blob(lstat(path), size):
                    utime(path)
                    continue
            except FileNotFoundError:
                pass
            rest.append(key)
        return rest

    def holds(self, path: str, size: int) -> bool:
        """True if the blob at `path` is a regular file of `size` bytes (see `held`)."""
        return self.held(path, size) is not None

    def held(self, path: str, size: int) -> os.stat_result | None:
        """The lstat of the blob at `path` if it is a regular file of `size` bytes.

        Checked wherever a blob is declared stored (requirements, file status, checkout,
        upload). One that exists but is not (truncated or grown on disk, replaced by a
        FIFO or a link) is moved to quarantine: it is not stored any more, and the
        next upload of the right bytes is accepted instead of answered 208.
        """
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        if is_blob(st, size):
            return st
        self.quarantine(path, st, size)
        return None

    def quarantine(self, path: str, st: os.stat_result, size: int, what: str | None = None) -> None:
        """Move the bad blob `path` (as `st` saw it) to quarantine/; never deletes it.
        `what` says what is wrong with it (default: its type or size)."""
        rel = path[len(self.stored) + 1 :]
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        dest = f"{self.root}/quarantine/{stamp}-{secrets.token_hex(4)}/{rel}"
        if what is None:
            what = (
                "not a regular file"
                if not stat.S_ISREG(st.st_mode)
                else f"{st.st_size} bytes, not {size}"
            )
        try:
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            os.rename(path, dest)  # same filesystem: nothing is opened or copied
        except FileNotFoundError:
            return  # someone else moved it already
        except OSError as exc:
            log.error("blob %s is %s, and cannot be quarantined: %s", path, what, exc)
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
            "blob %s is %s: moved to %s; the next upload of it is accepted", path, what, dest
        )
