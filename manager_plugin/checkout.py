"""Checkouts: per-job trees of symlinks under `jobs/` pointing at stored blobs.

A checkout is all or nothing. The tree is built in a hidden sibling directory
(`.shaman-tmp-*`, same depth, so relative link targets stay valid) and renamed
into place; any failure removes it and every parent directory this checkout
created. Nothing is created outside `jobs/`, also not through a symlinked
directory inside it: existing parents are checked with lstat and realpath.
The tree itself, and link reuse (`shaman.tuning.reuseLinks`), are `checkout_tree`'s.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import stat
import string
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .checkout_tree import (
    TEMP_PREFIX,
    WORKERS,
    LinkDonors,
    build_tree,
    in_parallel,
    rename_noreplace,
)
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
from .store import FileStore, Presence, is_disk_full

log = logging.getLogger(__name__)

SUFFIX_ATTEMPTS = 10
_SUFFIX_ALPHABET = string.ascii_lowercase + string.digits
_MAX_NAME_BYTES = 255  # per path component on the filesystems Flamenco farms use


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
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="checkout")
        self._donors = LinkDonors()
        self._count_lock = threading.Lock()
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
                donor = self._donors.find(parent) if self.reuse_links else None
                reused = build_tree(
                    self._pool,
                    temp,
                    by_path,
                    self.store.stored_dir,
                    absolute_symlinks=self.absolute_symlinks,
                    donor=donor,
                )
                final_name = self._rename_into_place(temp, parent, name)
                self._donors.remember(parent, f"{parent}/{final_name}")
                with self._count_lock:
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
        """Touch each unique blob (proves it exists and keeps GC off it) and make the
        pending ones durable (see `store.pending`): a checkout links synced blobs only."""
        # Each blob's size is checked too (a wrong one is quarantined); see `FileStore`.
        states = in_parallel(self._pool, self.store.touch_expected, list(set(by_path.values())))
        wanted = {key for key, state in states if state is Presence.MISSING}
        pending = [key for key, state in states if state is Presence.PENDING]
        if pending and not wanted:
            wanted.update(self.store.make_durable(pending))
        if wanted:
            listed = [FileSpec(s, z, p) for p, (s, z) in by_path.items() if (s, z) in wanted]
            raise MissingFiles(listed)

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
