"""A checkout's tree: its directories and links, built on threads, and moved into place.

Link reuse: a job is usually submitted again next to its previous checkout, with
mostly the same files. Each link whose exact target string a sibling checkout
already has (same parent, so the same relative target) is made as a hard link to
that sibling's symlink inode instead of a new symlink. A symlink's target can never
change, and every reused link is read back (readlink) after linking, so the result
is exactly the symlink we would have created: same target, same path. It just costs
no new inode, which on ext4 is the expensive part of a symlink, and keeps inode use
flat when a project is resubmitted many times. Deleting either checkout leaves the
other intact (it only lowers the link count).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import stat
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import TypeVar

from .errors import InvalidPath

T = TypeVar("T")
R = TypeVar("R")

TEMP_PREFIX = ".shaman-tmp-"  # a checkout being built; GC removes crash leftovers
MAX_REMEMBERED_PARENTS = 4096  # parent dirs whose latest checkout is kept as a link donor
DONOR_SCAN_LIMIT = 2000  # entries of a parent dir scanned for a donor after a restart


class LinkDonors:
    """The latest checkout made in each parent dir: the sibling whose links the next
    checkout there hard-links instead of making new symlinks."""

    def __init__(self) -> None:
        self._latest: dict[str, str] = {}  # parent dir -> its latest checkout
        self._lock = threading.Lock()

    def remember(self, parent: str, checkout: str) -> None:
        with self._lock:
            self._latest.pop(parent, None)  # re-insert: newest last
            self._latest[parent] = checkout
            while len(self._latest) > MAX_REMEMBERED_PARENTS:
                del self._latest[next(iter(self._latest))]

    def find(self, parent: str) -> str | None:
        """The newest checkout next to the one being made (same depth), if any.

        Remembered from our own checkouts; after a restart, the newest directory in
        `parent` (by mtime, temp dirs skipped), looked for only in a parent of modest
        size so that a huge flat jobs dir never slows a checkout down.
        """
        with self._lock:
            latest = self._latest.get(parent)
        if latest is not None:
            try:
                if stat.S_ISDIR(os.lstat(latest).st_mode):
                    return latest
            except OSError:
                pass
        best: tuple[int, str] | None = None
        try:
            with os.scandir(parent) as entries:
                for count, entry in enumerate(entries):
                    if count >= DONOR_SCAN_LIMIT:
                        return None
                    if entry.name.startswith(TEMP_PREFIX) or not entry.is_dir(
                        follow_symlinks=False
                    ):
                        continue
                    mtime = entry.stat(follow_symlinks=False).st_mtime_ns
                    if best is None or mtime > best[0]:
                        best = (mtime, entry.path)
        except OSError:
            return None
        return best[1] if best else None


def build_tree(
    pool: ThreadPoolExecutor,
    root: str,
    by_path: dict[str, tuple[str, int]],
    stored_dir: Path,
    *,
    absolute_symlinks: bool,
    donor: str | None = None,
) -> int:
    """Make every link under `root`; returns how many were reused from `donor`.

    Directories first, then the links, on several threads for a big checkout (the
    syscalls release the GIL; each thread gets whole directories where it can, so
    they rarely contend for one directory's lock). Per link one symlink, or with a
    donor that has it, link + readlink (no new inode).
    """
    if absolute_symlinks:
        stored = str(stored_dir)
    else:
        real_stored = os.path.realpath(stored_dir)
        real_root = os.path.realpath(root)
    made_dirs: set[str] = set()
    prefixes: dict[str, str] = {}  # directory inside the checkout -> link target prefix
    jobs: list[tuple[str, str, str]] = []  # (target, path, directory), grouped below
    for path, (sha, size) in by_path.items():
        head = path.rpartition("/")[0]
        prefix = prefixes.get(head)
        if prefix is None:
            if head:
                make_dirs(root, head, made_dirs)
            if absolute_symlinks:
                prefix = stored
            else:
                # The temp dir is a sibling of the final dir, so this relative
                # prefix is also right after the rename.
                linkdir = f"{real_root}/{head}" if head else real_root
                prefix = os.path.relpath(real_stored, linkdir)
            prefixes[head] = prefix
        jobs.append((head, path, f"{prefix}/{sha[:2]}/{sha[2:]}/{size}.blob"))
    jobs.sort()

    def make_links(part: list[tuple[str, str, str]]) -> list[int]:
        symlink, link, readlink, unlink = os.symlink, os.link, os.readlink, os.unlink
        reused = 0
        for _head, path, target in part:
            dest = f"{root}/{path}"
            try:
                if donor is not None:
                    try:
                        link(f"{donor}/{path}", dest, follow_symlinks=False)
                    except FileExistsError:
                        raise
                    except OSError:
                        pass  # not in the donor, link count full, other filesystem, ...
                    else:
                        # What now sits in our own temp dir is what counts: a symlink's
                        # target never changes, so this check cannot go stale.
                        try:
                            same = readlink(dest) == target
                        except OSError:  # not a symlink at all
                            same = False
                        if same:
                            reused += 1
                            continue
                        unlink(dest)
                symlink(target, dest)
            except FileExistsError:
                # Only where names differ but the filesystem folds them (case).
                raise InvalidPath("files", f"{path!r} collides with another file name") from None
        return [reused]

    return sum(in_parallel(pool, make_links, jobs))


_UNLOADED: Callable[..., int] = lambda *_args: 0  # noqa: E731 - a sentinel, never called


def _load_renameat2() -> Callable[..., int] | None:
    """renameat2(RENAME_NOREPLACE) so an existing *empty* dir is never replaced; the
    C library is loaded at the first checkout, not at import."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        func = libc.renameat2
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


_renameat2: Callable[..., int] | None = _UNLOADED
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def rename_noreplace(src: str, dst: str) -> None:
    """Rename `src` to `dst`, raising FileExistsError if `dst` exists (even if empty)."""
    global _renameat2
    if _renameat2 is _UNLOADED:
        _renameat2 = _load_renameat2()
    if _renameat2 is not None:
        res = _renameat2(
            _AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE
        )
        if res == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS):
            raise OSError(err, os.strerror(err), dst)
        _renameat2 = None  # filesystem/kernel without support: fall back for good
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "File exists", dst)
    os.rename(src, dst)


WORKERS = max(2, os.cpu_count() or 1)
PARALLEL_MIN = 2000  # items below which one thread does it all (thread hops cost more)


def in_parallel(
    pool: ThreadPoolExecutor, func: Callable[[list[T]], list[R]], items: list[T]
) -> list[R]:
    """func over contiguous slices of items on `pool`; results concatenated.

    The first exception of any slice is raised after every slice has finished, so the
    caller can clean up knowing that no thread still works on its files.
    """
    if len(items) < PARALLEL_MIN:
        return func(items)
    step = -(-len(items) // WORKERS)
    futures = [pool.submit(func, items[i : i + step]) for i in range(0, len(items), step)]
    wait(futures)
    results: list[R] = []
    for future in futures:
        results.extend(future.result())
    return results


def make_dirs(root: str, head: str, made: set[str]) -> None:
    """mkdir `head` and its missing ancestors under `root`, remembering what exists."""
    missing: list[str] = []
    cur = head
    while cur and cur not in made:
        missing.append(cur)
        cur = cur.rpartition("/")[0]
    for directory in reversed(missing):
        os.mkdir(f"{root}/{directory}")
        made.add(directory)
