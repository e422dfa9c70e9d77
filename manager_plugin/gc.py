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
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from .checkout import TEMP_PREFIX
from .filestore import STALE_TEMP_AGE, FileStore
from .locking import StorageLock

log = logging.getLogger(__name__)

BATCH = 1000  # blobs re-checked and deleted per exclusive-lock hold
SCAN_WORKERS = min(2, os.cpu_count() or 1)  # threads walking stored/ (more: GIL-bound)
SCAN_SLICES = 16  # stored/ is walked in this many slices of its two-letter dirs


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

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        return (
            f"blobs checked={self.blobs_checked} links seen={self.links_seen} "
            f"{verb} files={self.files_deleted} bytes={self.bytes_deleted} "
            f"temps removed={self.temps_removed} dirs removed={self.dirs_removed}"
        )


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
        with self.lock.exclusive():
            start = self._fs_now()
        cutoff = start - self.max_age.total_seconds()

        stale_checkout_temps: list[str] = []
        stored = str(self.store.stored_dir)
        links = _Links(os.path.realpath(stored))
        for root in [self.jobs_dir, *self.extra_checkout_paths]:
            # Temp dirs are only ours to remove under jobs/; extra paths are not ours.
            temps = stale_checkout_temps if root == self.jobs_dir else None
            stats.links_seen += self._collect_links(str(root), links, temps, start)
        # Then stored/, in slices on SCAN_WORKERS threads (its syscalls release the GIL).
        # One after the other: walking the checkouts at the same time made both slower
        # (200,000 blobs and links on 2 cores: 3.5-3.9 s together, 2.9-3.0 s in turn).
        tops = _subdirs(stored)
        blobs: list[tuple[str, int, int]] = []
        dir_counts: dict[str, int] = {}
        with ThreadPoolExecutor(max_workers=SCAN_WORKERS) as pool:
            for slice_blobs, slice_counts in pool.map(
                _scan_stored, [tops[i::SCAN_SLICES] for i in range(SCAN_SLICES)]
            ):
                blobs += slice_blobs
                dir_counts.update(slice_counts)
        cut = len(stored) + 1
        linked = links.settle({path[cut:] for path, _, _ in blobs}, cut)

        candidates = self._find_candidates(blobs, linked, cutoff, stats)
        for i in range(0, len(candidates), BATCH):
            self._delete_batch(
                candidates[i : i + BATCH], linked, cutoff, dry_run, stats, dir_counts
            )

        if not dry_run:
            for path in stale_checkout_temps:
                shutil.rmtree(path, ignore_errors=True)
                stats.dirs_removed += 1
            stats.temps_removed += len(self.store.remove_stale_temps(STALE_TEMP_AGE))
            stats.dirs_removed += self._remove_empty_dirs(dir_counts)
        log.info("shaman gc: %s", stats.summary())
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
        root: str, links: _Links, stale_temps: list[str] | None, start: float
    ) -> int:
        seen = 0
        # A physical path, so that ".." in a link target means the textual parent.
        stack = [os.path.realpath(root)]
        while stack:
            directory = stack.pop()
            try:
                it = os.scandir(directory)
            except OSError:
                continue
            with it:
                for entry in it:
                    if entry.is_symlink():
                        seen += 1
                        links.add(directory, entry.path)
                    elif entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                        if stale_temps is not None and entry.name.startswith(TEMP_PREFIX):
                            # A checkout builds its temp dir under the shared lock, and
                            # the sweep's start was taken under the exclusive one: a temp
                            # dir last changed before the start belongs to a builder that
                            # had finished by then, so it is a crash leftover (kill -9).
                            try:
                                mtime = entry.stat(follow_symlinks=False).st_mtime
                            except OSError:
                                continue
                            if mtime < start:
                                stale_temps.append(entry.path)
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
        with self.lock.exclusive():
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

    def add(self, directory: str, link: str) -> None:
        """A symlink at `link`, in the physical directory `directory`."""
        try:
            target = os.readlink(link)
        except OSError:
            return  # gone meanwhile
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
        base: str | None = directory
        for _ in range(ups):
            parent = os.path.dirname(base)
            if parent == base:
                base = None  # above the root: let the kernel say where that goes
                break
            base = parent
        self._parents[key] = base
        return base

    def settle(self, blob_keys: set[str], cut: int) -> _Linked:
        """The linked set, given the regular blob files the walk of stored/ found (as
        paths below it) and the length of the path prefix `has` will cut off.

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
            except OSError:
                continue  # dangling
            inodes.add((st.st_dev, st.st_ino))
        return _Linked(keys, cut, inodes)


def _scan_stored(tops: list[str]) -> tuple[list[tuple[str, int, int]], dict[str, int]]:
    """The regular blob files below these two-letter dirs of stored/ as (path, dev,
    inode from readdir), and the entry count of each dir. Symlinked dirs are not entered."""
    blobs: list[tuple[str, int, int]] = []
    dir_counts: dict[str, int] = {}
    for top in tops:
        try:
            dev = os.stat(top).st_dev
        except OSError:
            continue
        dir_counts[top] = 0
        for blob_dir in _subdirs(top):
            dir_counts[top] += 1
            count = 0
            try:
                it = os.scandir(blob_dir)
            except OSError:
                continue
            with it:
                for entry in it:
                    count += 1
                    if entry.name.endswith(".blob") and entry.is_file(follow_symlinks=False):
                        blobs.append((entry.path, dev, entry.inode()))
            dir_counts[blob_dir] = count
    return blobs, dir_counts


def _subdirs(path: str) -> list[str]:
    try:
        with os.scandir(path) as it:
            return [e.path for e in it if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []
