"""Checkouts: per-job trees of symlinks under `jobs/` pointing at stored blobs.

A checkout is all or nothing. The tree is built in a hidden sibling directory
(`.shaman-tmp-*`, same depth, so relative link targets stay valid) and renamed
into place; any failure removes it and every parent directory this checkout
created. Nothing is created outside `jobs/`, also not through a symlinked
directory inside it: existing parents are checked with lstat and realpath.

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
import logging
import os
import secrets
import stat
import string
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import TypeVar

from .errors import InvalidPath, MissingFiles, NoFreeCheckoutDir, StorageFull
from .fstree import remove_tree
from .locking import StorageLock
from .models import FileSpec
from .paths import (
    check_depth,
    check_path_bytes,
    validate_checkout_path,
    validate_checksum,
    validate_path,
    validate_size,
)
from .protocol import JOBS_ROOT
from .store import FileStore, is_disk_full

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

TEMP_PREFIX = ".shaman-tmp-"
SUFFIX_ATTEMPTS = 10
MAX_REMEMBERED_PARENTS = 4096  # parent dirs whose latest checkout is kept as a link donor
DONOR_SCAN_LIMIT = 2000  # entries of a parent dir scanned for a donor after a restart
_SUFFIX_ALPHABET = string.ascii_lowercase + string.digits
_MAX_NAME_BYTES = 255  # per path component on the filesystems Flamenco farms use


def _load_renameat2() -> Callable[..., int] | None:
    """renameat2(RENAME_NOREPLACE) so an existing *empty* dir is never replaced."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        func = libc.renameat2
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


_renameat2 = _load_renameat2()
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def rename_noreplace(src: str, dst: str) -> None:
    """Rename `src` to `dst`, raising FileExistsError if `dst` exists (even if empty)."""
    global _renameat2
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


def dedupe_files(files: Iterable[FileSpec]) -> dict[str, tuple[str, int]]:
    """Validate every entry and map path -> (sha, size).

    The same path twice with the same content is fine; with different content, or
    a path that is both a file and a parent directory of another, is a 400.
    """
    by_path: dict[str, tuple[str, int]] = {}
    for index, spec in enumerate(files):
        sha = validate_checksum(spec.sha, f"files[{index}].sha")
        size = validate_size(spec.size, f"files[{index}].size")
        path = validate_path(spec.path, "path", index)
        if TEMP_PREFIX in path:
            _refuse_reserved(path, "path", index)
        known = by_path.setdefault(path, (sha, size))
        if known != (sha, size):
            raise InvalidPath("path", f"{path!r} is listed twice with different content", index)
    dirs: set[str] = set()
    for path in by_path:
        head = path.rpartition("/")[0]
        while head and head not in dirs:
            dirs.add(head)
            head = head.rpartition("/")[0]
    clash = dirs.intersection(by_path)
    if clash:
        path = min(clash)
        raise InvalidPath("files", f"{path!r} is both a file and a directory of other files")
    return by_path


class CheckoutBuilder:
    """Creates checkout directories under `jobs_dir` from blobs in `store`."""

    def __init__(
        self,
        store: FileStore,
        jobs_dir: Path,
        lock: StorageLock,
        *,
        absolute_symlinks: bool = False,
        reuse_links: bool = True,
    ) -> None:
        self.store = store
        self.jobs_dir = Path(jobs_dir)
        self.lock = lock  # the one lock GC also takes: a builder's own would exclude nothing
        self.absolute_symlinks = absolute_symlinks
        self.reuse_links = reuse_links  # shaman.tuning.reuseLinks
        # Links and touches of a big checkout, spread over threads; see `close`.
        self._pool = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="checkout")
        # parent dir of a checkout -> the latest checkout made there (a link donor)
        self._latest: dict[str, str] = {}
        self._latest_lock = threading.Lock()
        self.links_reused = 0  # for logs and tests

    def close(self) -> None:
        """Stop the worker threads (with the app)."""
        self._pool.shutdown(wait=True)

    def create(self, checkout_path: str, files: Iterable[FileSpec]) -> str:
        """Build the checkout; return the path actually used, relative to `jobs_dir`."""
        if checkout_path != JOBS_ROOT:
            checkout_path = validate_checkout_path(checkout_path)
        if TEMP_PREFIX in checkout_path:
            _refuse_reserved(checkout_path, "checkoutPath")
        by_path = dedupe_files(files)
        self._check_fits(checkout_path, by_path)
        parent_rel, _, name = checkout_path.rpartition("/")
        jobs = str(self.jobs_dir)
        os.makedirs(jobs, exist_ok=True)
        created_parents: list[str] = []
        temp = ""
        try:
            with self.lock.shared():
                self._touch_all(by_path)
                parent, temp = self._make_temp_dir(jobs, parent_rel, name, created_parents)
                donor = self._donor(parent) if self.reuse_links else None
                reused = self._build_tree(temp, by_path, donor)
                final_name = self._rename_into_place(temp, parent, name)
                with self._latest_lock:
                    self._latest.pop(parent, None)  # re-insert: newest last
                    self._latest[parent] = f"{parent}/{final_name}"
                    while len(self._latest) > MAX_REMEMBERED_PARENTS:
                        del self._latest[next(iter(self._latest))]
                    self.links_reused += reused
            temp = ""
        except BaseException as exc:
            if temp:
                remove_tree(temp)
            for directory in reversed(created_parents):
                try:
                    os.rmdir(directory)
                except OSError:
                    break  # someone else put something there meanwhile; keep it
            if is_disk_full(exc):
                raise StorageFull("storage is full; checkout not created") from exc
            if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:
                raise InvalidPath("checkoutPath", f"name too long: {checkout_path!r}") from exc
            raise
        used = f"{parent_rel}/{final_name}" if parent_rel else final_name
        log.info(
            "checkout %s created with %d files (%d links reused from an earlier checkout)",
            used,
            len(by_path),
            reused,
        )
        return used

    def _check_fits(self, checkout_path: str, by_path: dict[str, tuple[str, int]]) -> None:
        """Refuse, before anything is made, a checkout deeper than MAX_DEPTH or with a
        link path or link target longer than the OS takes (measured for the temp dir's
        name too, which can be longer than the final one)."""
        levels = checkout_path.count("/") + 1
        check_depth(levels, checkout_path, "checkoutPath")
        jobs = str(self.jobs_dir)
        real_jobs = os.path.realpath(jobs)
        parent_rel, _, name = checkout_path.rpartition("/")
        dir_name = max(
            _nbytes(name) + 5,  # "-xxxx" suffix when the name is taken
            len(TEMP_PREFIX) + 13 + _nbytes(_clip(name, 64)),
        )
        checkout_dir = max(_nbytes(jobs), _nbytes(real_jobs)) + 1 + dir_name
        if parent_rel:
            checkout_dir += _nbytes(parent_rel) + 1
        check_path_bytes(checkout_dir, "the checkout directory's path", "checkoutPath")
        if self.absolute_symlinks:
            target_base, per_level = _nbytes(str(self.store.stored_dir)), 0
        else:
            stored = os.path.relpath(os.path.realpath(self.store.stored_dir), real_jobs)
            target_base, per_level = _nbytes(stored), 3  # "../" per level below jobs/
        blob_part = 1 + 2 + 1 + 62 + 1 + len(".blob")  # "/ab/cdef…/" + SIZE + ".blob"
        for path, (_sha, size) in by_path.items():
            below = path.count("/")
            check_depth(levels + below + 1, path, "files.path")
            check_path_bytes(checkout_dir + 1 + _nbytes(path), "the link's path", "files.path")
            target = target_base + per_level * (levels + below) + blob_part + len(str(size))
            check_path_bytes(target, f"the link target of {path!r:.200}", "files.path")

    def _donor(self, parent: str) -> str | None:
        """The newest checkout next to the one being made (same depth), if any.

        Remembered from our own checkouts; after a restart, the newest directory in
        `parent` (by mtime, temp dirs skipped), looked for only in a parent of modest
        size so that a huge flat jobs dir never slows a checkout down.
        """
        with self._latest_lock:
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

    def _make_temp_dir(
        self, jobs: str, parent_rel: str, name: str, created: list[str]
    ) -> tuple[str, str]:
        """Create the parents and the hidden sibling temp dir; return (parent, temp)."""
        for attempt in range(3):
            parent = self._make_parents(jobs, parent_rel, created)
            temp = f"{parent}/{TEMP_PREFIX}{secrets.token_hex(6)}-{_clip(name, 64)}"
            try:
                os.mkdir(temp)
                return parent, temp
            except FileNotFoundError:
                # A concurrent checkout that failed removed a parent it had created
                # just after we saw it; create it again. So does Flamenco Manager,
                # deleting a job: it removes the checkout's parent, jobs/ itself included,
                # when that is left empty.
                if attempt == 2:
                    raise
                os.makedirs(jobs, exist_ok=True)
        raise AssertionError("unreachable")

    def _make_parents(self, jobs: str, parent_rel: str, created: list[str]) -> str:
        """Create the checkout's parent dirs inside jobs/, refusing symlinks and non-dirs."""
        current = jobs
        if parent_rel:
            for part in parent_rel.split("/"):
                current = f"{current}/{part}"
                try:
                    st = os.lstat(current)
                except FileNotFoundError:
                    try:
                        os.mkdir(current)
                        created.append(current)
                        continue
                    except FileExistsError:
                        st = os.lstat(current)
                if not stat.S_ISDIR(st.st_mode):
                    kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
                    raise InvalidPath(
                        "checkoutPath", f"{os.path.relpath(current, jobs)!r} exists and is {kind}"
                    )
        real_jobs = os.path.realpath(jobs)
        real_parent = os.path.realpath(current)
        if real_parent != real_jobs and not real_parent.startswith(real_jobs + os.sep):
            raise InvalidPath("checkoutPath", f"{parent_rel!r} resolves outside the jobs directory")
        return current

    def _touch_all(self, by_path: dict[str, tuple[str, int]]) -> None:
        """Touch each unique blob (proves it exists and keeps GC off it)."""
        # `FileStore.touch` also checks each blob's size (a wrong one is quarantined).
        store_touch = self.store.touch

        def touch(keys: list[tuple[str, int]]) -> list[tuple[str, int]]:
            return [(sha, size) for sha, size in keys if not store_touch(sha, size)]

        wanted = set(_in_parallel(self._pool, touch, list(set(by_path.values()))))
        if wanted:
            listed = [FileSpec(s, z, p) for p, (s, z) in by_path.items() if (s, z) in wanted]
            raise MissingFiles(listed)

    def _build_tree(
        self, root: str, by_path: dict[str, tuple[str, int]], donor: str | None = None
    ) -> int:
        """Make every link under `root`; returns how many were reused from `donor`.

        Directories first, then the links, on several threads for a big checkout (the
        syscalls release the GIL; each thread gets whole directories where it can, so
        they rarely contend for one directory's lock). Per link one symlink, or with a
        donor that has it, link + readlink (no new inode).
        """
        if self.absolute_symlinks:
            stored = str(self.store.stored_dir)
        else:
            real_stored = os.path.realpath(self.store.stored_dir)
            real_root = os.path.realpath(root)
        made_dirs: set[str] = set()
        prefixes: dict[str, str] = {}  # directory inside the checkout -> link target prefix
        jobs: list[tuple[str, str, str]] = []  # (target, path, directory), grouped below
        for path, (sha, size) in by_path.items():
            head = path.rpartition("/")[0]
            prefix = prefixes.get(head)
            if prefix is None:
                if head:
                    _make_dirs(root, head, made_dirs)
                if self.absolute_symlinks:
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
                    raise InvalidPath(
                        "files", f"{path!r} collides with another file name"
                    ) from None
            return [reused]

        return sum(_in_parallel(self._pool, make_links, jobs))

    def _rename_into_place(self, temp: str, parent: str, name: str) -> str:
        candidate = name
        for attempt in range(SUFFIX_ATTEMPTS + 1):
            try:
                if candidate == JOBS_ROOT:  # always taken: it is jobs/ itself
                    raise FileExistsError(errno.EEXIST, "File exists", parent)
                rename_noreplace(temp, f"{parent}/{candidate}")
                return candidate
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
            if attempt < SUFFIX_ATTEMPTS:
                suffix = "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(4))
                # Clipped so that a valid 255-byte name still gets a free variant.
                candidate = f"{_clip(name, _MAX_NAME_BYTES - 5)}-{suffix}"
        raise NoFreeCheckoutDir(
            f"checkoutPath: {name!r} and {SUFFIX_ATTEMPTS} suffixed variants all exist"
        )


def _refuse_reserved(path: str, field: str, index: int | None = None) -> None:
    """Names starting with TEMP_PREFIX are checkout temp dirs, which GC removes."""
    if any(part.startswith(TEMP_PREFIX) for part in path.split("/")):
        raise InvalidPath(
            field, f"names starting with {TEMP_PREFIX!r} are reserved: {path!r}", index
        )


def _nbytes(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogateescape"))


def _clip(name: str, max_bytes: int) -> str:
    """`name` cut to at most `max_bytes` of UTF-8, never inside a character."""
    return name.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")


_WORKERS = max(2, os.cpu_count() or 1)
PARALLEL_MIN = 2000  # items below which one thread does it all (thread hops cost more)


def _in_parallel(
    pool: ThreadPoolExecutor, func: Callable[[list[T]], list[R]], items: list[T]
) -> list[R]:
    """func over contiguous slices of items on `pool`; results concatenated.

    The first exception of any slice is raised after every slice has finished, so the
    caller can clean up knowing that no thread still works on its files.
    """
    if len(items) < PARALLEL_MIN:
        return func(items)
    step = -(-len(items) // _WORKERS)
    futures = [pool.submit(func, items[i : i + step]) for i in range(0, len(items), step)]
    wait(futures)
    results: list[R] = []
    for future in futures:
        results.extend(future.result())
    return results


def _make_dirs(root: str, head: str, made: set[str]) -> None:
    """mkdir `head` and its missing ancestors under `root`, remembering what exists."""
    missing: list[str] = []
    cur = head
    while cur and cur not in made:
        missing.append(cur)
        cur = cur.rpartition("/")[0]
    for directory in reversed(missing):
        os.mkdir(f"{root}/{directory}")
        made.add(directory)
