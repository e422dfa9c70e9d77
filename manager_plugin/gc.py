"""Garbage collection: delete blobs nobody links to and nobody used for `maxAge`.

"Linked" is decided by the file a symlink resolves to, so relative, absolute
and differently-mounted links all count. Most links are resolved without
following them: the target is read and joined in text to the link's own
physical directory; when that names a regular blob the walk of `stored/` found
(through real directories only), it is the file the kernel would reach. Any
other link is followed with stat and counted by (device, inode). Reading the
link's own target is cheaper than following it, and on a cold cache it spares
a read of every blob's inode. A sweep:

1. takes the storage lock exclusively for a moment (a barrier: checkouts in
   flight finish first) and records the start time T from the filesystem clock;
2. walks `jobs/` and every extra checkout path, collecting link targets;
3. walks `stored/`; candidates are unlinked blobs with mtime < T - maxAge;
4. per batch, under the exclusive lock, re-stats and re-checks each candidate
   and unlinks it. A checkout started after T touched its blobs (mtime >= T),
   so it never ends up with a dangling link;
5. removes stale temp files, stale checkout temp dirs and empty directories.

A sweep that could not see every link deletes nothing (as Flamenco's collector
aborts on any walk error): a directory under `jobs/` or an extra checkout path
that cannot be listed (out of descriptors, permissions, an unmounted share, an
I/O error), or a link that cannot be read or followed for any reason but "it is
gone", would otherwise make the blobs it links to look unused. Only entries that
vanished meanwhile (a checkout being erased) are no reason to stop: what is
created meanwhile touched its blobs after the start, see step 4. Such a sweep is
logged in one line and reported in `SweepStats.walk_errors`. A directory of
`stored/` that cannot be listed is safe (its blobs are simply no candidates) and
reported in `SweepStats.store_errors`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from .checkout import TEMP_PREFIX
from .fstree import remove_tree
from .locking import StorageLock
from .store import STALE_TEMP_AGE, FileStore

log = logging.getLogger(__name__)

BATCH = 1000  # blobs re-checked and deleted per exclusive-lock hold
SCAN_WORKERS = min(2, os.cpu_count() or 1)  # threads walking stored/ (more: GIL-bound)
SCAN_SLICES = 16  # stored/ is walked in this many slices of its two-letter dirs
# Errors meaning "this entry is gone, or reaches nothing": no reason to stop a sweep.
_GONE = frozenset({errno.ENOENT, errno.ENOTDIR})
_REACHES_NOTHING = _GONE | {errno.ELOOP, errno.ENAMETOOLONG}


def _describe(path: str, exc: OSError) -> str:
    return f"{path}: {exc.strerror or exc} (errno {exc.errno})"


@dataclass
class SweepStats:
    """What one sweep saw and did."""

    blobs_checked: int = 0
    links_seen: int = 0
    files_deleted: int = 0
    bytes_deleted: int = 0
    temps_removed: int = 0
    dirs_removed: int = 0
    dry_run: bool = False
    deleted: list[str] = field(default_factory=list)
    # "path: error" for each place where links may live that could not be read; any
    # of them aborts the sweep before anything is deleted.
    walk_errors: list[str] = field(default_factory=list)
    # "path: error" for each dir of stored/ that could not be listed (its blobs were
    # no candidates: safe, but the sweep did not cover them).
    store_errors: list[str] = field(default_factory=list)

    @property
    def aborted(self) -> bool:
        """True if the sweep could not see every link and so deleted nothing."""
        return bool(self.walk_errors)

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        text = (
            f"blobs checked={self.blobs_checked} links seen={self.links_seen} "
            f"{verb} files={self.files_deleted} bytes={self.bytes_deleted} "
            f"temps removed={self.temps_removed} dirs removed={self.dirs_removed}"
        )
        if self.store_errors:
            text += f" unreadable store dirs={len(self.store_errors)}"
        if self.aborted:
            text = f"ABORTED, nothing deleted: walk errors={len(self.walk_errors)} {text}"
        return text


class GarbageCollector:
    """Sweeps one storage; safe to run while the server serves uploads and checkouts."""

    def __init__(
        self,
        store: FileStore,
        jobs_dir: Path,
        lock: StorageLock,
        *,
        max_age: timedelta,
        extra_checkout_paths: Iterable[Path] = (),
    ) -> None:
        self.store = store
        self.jobs_dir = Path(jobs_dir)
        self.lock = lock
        self.max_age = max_age
        self.extra_checkout_paths = [Path(p) for p in extra_checkout_paths]

    def sweep(self, dry_run: bool = False) -> SweepStats:
        stats = SweepStats(dry_run=dry_run)
        try:
            with self.lock.exclusive():
                start = self._fs_now()
        except OSError as exc:
            return self._abort(stats, [_describe(str(self.lock.path), exc)])
        cutoff = start - self.max_age.total_seconds()

        stale_checkout_temps: list[str] = []
        stored = str(self.store.stored_dir)
        links = _Links(os.path.realpath(stored))
        for root in [self.jobs_dir, *self.extra_checkout_paths]:
            if root == self.jobs_dir and not os.path.lexists(root):
                # No jobs/ at all holds no links: Flamenco Manager, deleting its last
                # job, removes the checkout's empty parent, which may be jobs/ itself.
                # (A jobs/ that is a link to an unmounted place exists, and aborts.)
                continue
            # Temp dirs are only ours to remove under jobs/; extra paths are not ours.
            temps = stale_checkout_temps if root == self.jobs_dir else None
            stats.links_seen += self._collect_links(
                str(root), links, temps, start, stats.walk_errors
            )
        if stats.walk_errors:
            return self._abort(stats, stats.walk_errors)
        # Then stored/, in slices on SCAN_WORKERS threads (its syscalls release the GIL).
        # One after the other: walking the checkouts at the same time made both slower
        # (200,000 blobs and links on 2 cores: 3.5-3.9 s together, 2.9-3.0 s in turn).
        tops = _subdirs(stored, stats.store_errors)
        blobs: list[tuple[str, int, int]] = []
        dir_counts: dict[str, int] = {}
        with ThreadPoolExecutor(max_workers=SCAN_WORKERS) as pool:
            for slice_blobs, slice_counts, slice_errors in pool.map(
                _scan_stored, [tops[i::SCAN_SLICES] for i in range(SCAN_SLICES)]
            ):
                blobs += slice_blobs
                dir_counts.update(slice_counts)
                stats.store_errors += slice_errors
        if stats.store_errors:
            log.warning(
                "shaman gc: %d dirs of the store could not be read (their blobs are kept): "
                "first %s",
                len(stats.store_errors),
                stats.store_errors[0],
            )
        cut = len(stored) + 1
        linked = links.settle({path[cut:] for path, _, _ in blobs}, cut, stats.walk_errors)
        if stats.walk_errors:
            return self._abort(stats, stats.walk_errors)

        candidates = self._find_candidates(blobs, linked, cutoff, stats)
        try:
            for i in range(0, len(candidates), BATCH):
                self._delete_batch(
                    candidates[i : i + BATCH], linked, cutoff, dry_run, stats, dir_counts
                )
        except _LockFailed as exc:
            # Stop deleting: what was deleted so far was re-checked under the lock.
            stats.walk_errors.append(str(exc))
            log.error("shaman gc: sweep stopped early: cannot take the storage lock: %s", exc)
            return stats

        if not dry_run:
            for path in stale_checkout_temps:
                remove_tree(path)
                stats.dirs_removed += 1
            stats.temps_removed += len(self.store.remove_stale_temps(STALE_TEMP_AGE))
            stats.dirs_removed += self._remove_empty_dirs(dir_counts)
        log.info("shaman gc: %s", stats.summary())
        return stats

    @staticmethod
    def _abort(stats: SweepStats, errors: list[str]) -> SweepStats:
        """End a sweep that could not see every link: nothing is deleted, one line says why."""
        if errors is not stats.walk_errors:
            stats.walk_errors += errors
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        log.error(
            "shaman gc: sweep aborted, nothing deleted: cannot see every checkout link: %s%s",
            errors[0],
            more,
        )
        return stats

    def _fs_now(self) -> float:
        """The filesystem's idea of now (its clock can lag time.time() by a tick)."""
        lock_path = str(self.lock.path)
        try:
            os.utime(lock_path)
            return os.stat(lock_path).st_mtime
        except OSError:
            return time.time()

    @staticmethod
    def _collect_links(
        root: str,
        links: _Links,
        stale_temps: list[str] | None,
        start: float,
        errors: list[str],
    ) -> int:
        """Add every link below `root` to `links`; append to `errors` what could not be
        read. The root itself must be readable (a missing extra path may be an
        unmounted share); below it, a dir that vanished meanwhile is simply gone."""
        seen = 0
        # A physical path, so that ".." in a link target means the textual parent.
        stack = [os.path.realpath(root)]
        is_root = True
        while stack:
            directory = stack.pop()
            try:
                it = os.scandir(directory)
            except OSError as exc:
                if is_root or exc.errno not in _GONE:
                    errors.append(_describe(directory, exc))
                is_root = False
                continue
            is_root = False
            with it:
                try:
                    for entry in it:
                        if entry.is_symlink():
                            seen += 1
                            links.add(directory, entry.path, errors)
                        elif entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                            if stale_temps is not None and entry.name.startswith(TEMP_PREFIX):
                                _note_stale_temp(entry, start, stale_temps)
                except OSError as exc:
                    # Reading the listing (or an entry's type) failed partway: this
                    # dir's remaining links are unknown.
                    errors.append(_describe(directory, exc))
        return seen

    def _find_candidates(
        self,
        blobs: list[tuple[str, int, int]],
        linked: _Linked,
        cutoff: float,
        stats: SweepStats,
    ) -> list[tuple[str, int, int]]:
        """Old, unlinked blobs as (path, dev, ino)."""
        candidates: list[tuple[str, int, int]] = []
        for path, dev, ino in blobs:
            # d_ino came free from readdir: linked blobs need no stat at all.
            if linked.has(path, dev, ino):
                continue
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if st.st_mtime < cutoff and not linked.has(path, st.st_dev, st.st_ino):
                candidates.append((path, st.st_dev, st.st_ino))
        stats.blobs_checked = len(blobs)
        return candidates

    def _delete_batch(
        self,
        batch: list[tuple[str, int, int]],
        linked: _Linked,
        cutoff: float,
        dry_run: bool,
        stats: SweepStats,
        dir_counts: dict[str, int],
    ) -> None:
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(self.lock.exclusive())
            except OSError as exc:  # out of descriptors, most likely
                raise _LockFailed(_describe(str(self.lock.path), exc)) from exc
            for path, _dev, _ino in batch:
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                # Touched or re-created since the walk: a checkout or request wants it.
                if st.st_mtime >= cutoff or linked.has(path, st.st_dev, st.st_ino):
                    continue
                if not dry_run:
                    try:
                        os.unlink(path)
                    except OSError as exc:
                        log.warning("shaman gc: cannot delete %s: %s", path, exc)
                        continue
                    parent = os.path.dirname(path)
                    if parent in dir_counts:
                        dir_counts[parent] -= 1
                stats.files_deleted += 1
                stats.bytes_deleted += st.st_size
                stats.deleted.append(path)

    def _remove_empty_dirs(self, dir_counts: dict[str, int]) -> int:
        removed = 0
        # Blob dirs first (deepest), then their two-letter parents.
        for directory in sorted(dir_counts, key=len, reverse=True):
            if dir_counts[directory] > 0:
                continue
            try:
                os.rmdir(directory)  # fails harmlessly if an upload just put a blob there
            except OSError:
                continue
            removed += 1
            parent = os.path.dirname(directory)
            if parent in dir_counts:
                dir_counts[parent] -= 1
        uploading = str(self.store.uploading_dir)
        for top in _subdirs(uploading):
            for sub in _subdirs(top):
                try:
                    os.rmdir(sub)
                    removed += 1
                except OSError:
                    pass
            try:
                os.rmdir(top)
                removed += 1
            except OSError:
                pass
        return removed


@dataclass
class _Linked:
    """What the checkouts link to: blobs by path below stored/ (their text-resolved
    links) and by (dev, ino) (the followed ones)."""

    keys: set[str]  # "ab/cdef…/SIZE.blob"
    cut: int  # length of the stored/ path the blob paths asked about start with, plus 1
    inodes: set[tuple[int, int]]

    def has(self, path: str, dev: int, ino: int) -> bool:
        return path[self.cut :] in self.keys or (dev, ino) in self.inodes


class _Links:
    """Collects the targets of the links found by the walk, then resolves them."""

    def __init__(self, stored: str) -> None:
        self._prefix = stored + os.sep  # `stored` is the physical path of stored/
        self._textual: list[tuple[str, str]] = []  # (target key below stored/, link path)
        self._others: list[str] = []  # links to follow with stat
        self._parents: dict[tuple[str, int], str | None] = {}

    def add(self, directory: str, link: str, errors: list[str]) -> None:
        """A symlink at `link`, in the physical directory `directory`; a link that
        cannot be read (and is not just gone) is appended to `errors`."""
        try:
            target = os.readlink(link)
        except OSError as exc:
            # Gone meanwhile (ENOENT), or replaced by something not a link (EINVAL).
            if exc.errno not in _GONE and exc.errno != errno.EINVAL:
                errors.append(_describe(link, exc))
            return
        if not target.startswith(os.sep):
            ups = 0
            while target.startswith("../", ups * 3):
                ups += 1
            base = self._ancestor(directory, ups)
            if base is None:
                self._others.append(link)
                return
            target = f"{base}{os.sep}{target[ups * 3 :]}"
        if target.startswith(self._prefix):
            self._textual.append((target[len(self._prefix) :], link))
        else:
            self._others.append(link)

    def _ancestor(self, directory: str, ups: int) -> str | None:
        key = (directory, ups)
        try:
            return self._parents[key]
        except KeyError:
            pass
        base = directory
        found: str | None = directory
        for _ in range(ups):
            parent = os.path.dirname(base)
            if parent == base:
                found = None  # above the root: let the kernel say where that goes
                break
            base = found = parent
        self._parents[key] = found
        return found

    def settle(self, blob_keys: set[str], cut: int, errors: list[str]) -> _Linked:
        """The linked set, given the regular blob files the walk of stored/ found (as
        paths below it) and the length of the path prefix `has` will cut off. A link
        that cannot be followed for another reason than reaching nothing (dangling, a
        loop) is appended to `errors`: it might reach a blob.

        A text-resolved target that is one of them is the file the link reaches (every
        component is a real directory, the last a regular file); any other is followed.
        """
        keys: set[str] = set()
        others = self._others
        for key, link in self._textual:
            if key in blob_keys:
                keys.add(key)
            else:
                others.append(link)
        inodes: set[tuple[int, int]] = set()
        for link in others:
            try:
                st = os.stat(link)  # follows the link
            except OSError as exc:
                if exc.errno not in _REACHES_NOTHING:
                    errors.append(_describe(link, exc))
                continue
            inodes.add((st.st_dev, st.st_ino))
        return _Linked(keys, cut, inodes)


def _note_stale_temp(entry: os.DirEntry[str], start: float, stale_temps: list[str]) -> None:
    """Add a checkout temp dir to `stale_temps` if it was last changed before `start`.

    A checkout builds its temp dir under the shared lock, and the sweep's start was
    taken under the exclusive one: a temp dir last changed before the start belongs to
    a builder that had finished by then, so it is a crash leftover (kill -9).
    """
    try:
        mtime = entry.stat(follow_symlinks=False).st_mtime
    except OSError:
        return  # gone, or unknown: left for a later sweep
    if mtime < start:
        stale_temps.append(entry.path)


def _scan_stored(
    tops: list[str],
) -> tuple[list[tuple[str, int, int]], dict[str, int], list[str]]:
    """The regular blob files below these two-letter dirs of stored/ as (path, dev,
    inode from readdir), the entry count of each dir, and the dirs that could not be
    read ("path: error"; their blobs are left out, so kept). Symlinked dirs are not
    entered."""
    blobs: list[tuple[str, int, int]] = []
    dir_counts: dict[str, int] = {}
    errors: list[str] = []
    for top in tops:
        try:
            dev = os.stat(top).st_dev
        except OSError as exc:
            if exc.errno not in _GONE:
                errors.append(_describe(top, exc))
            continue
        failed = len(errors)
        blob_dirs = _subdirs(top, errors)
        if len(errors) == failed:
            dir_counts[top] = len(blob_dirs)
        for blob_dir in blob_dirs:
            count = 0
            try:
                with os.scandir(blob_dir) as it:
                    for entry in it:
                        count += 1
                        if entry.name.endswith(".blob") and entry.is_file(follow_symlinks=False):
                            blobs.append((entry.path, dev, entry.inode()))
            except OSError as exc:
                if exc.errno not in _GONE:
                    errors.append(_describe(blob_dir, exc))
                # Its count stays unknown: never removed as empty.
                continue
            dir_counts[blob_dir] = count
    return blobs, dir_counts, errors


def _subdirs(path: str, errors: list[str] | None = None) -> list[str]:
    """The real subdirectories of `path`; a listing error other than "gone" is appended
    to `errors` (if given) and yields none."""
    try:
        with os.scandir(path) as it:
            return [e.path for e in it if e.is_dir(follow_symlinks=False)]
    except OSError as exc:
        if errors is not None and exc.errno not in _GONE:
            errors.append(_describe(path, exc))
        return []


class _LockFailed(Exception):
    """The storage lock could not be taken (out of descriptors): stop deleting."""
