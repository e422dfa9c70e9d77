"""Garbage collection: delete blobs nobody links to and nobody used for `maxAge`.

"Linked" is decided by the file a symlink resolves to (device, inode), so
relative, absolute and differently-mounted links all count. A sweep:

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
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from .checkout import TEMP_PREFIX
from .filestore import STALE_TEMP_AGE, FileStore
from .locking import StorageLock

log = logging.getLogger(__name__)

BATCH = 1000  # blobs re-checked and deleted per exclusive-lock hold
LINK_BATCH = 512
LINK_STAT_WORKERS = 2


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

        linked: set[tuple[int, int]] = set()
        stale_checkout_temps: list[str] = []
        # Syscalls dominate and release the GIL: walk stored/ in one thread while this
        # one walks the checkouts and other threads stat (follow) the links found.
        with ThreadPoolExecutor(max_workers=1 + LINK_STAT_WORKERS) as pool:
            scan = pool.submit(self._scan_stored)
            for root in [self.jobs_dir, *self.extra_checkout_paths]:
                # Temp dirs are only ours to remove under jobs/; extra paths are not ours.
                temps = stale_checkout_temps if root == self.jobs_dir else None
                stats.links_seen += self._collect_links(str(root), linked, temps, start, pool)
            blobs, dir_counts = scan.result()

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
        root: str,
        linked: set[tuple[int, int]],
        stale_temps: list[str] | None,
        start: float,
        pool: ThreadPoolExecutor,
    ) -> int:
        seen = 0
        batch: list[str] = []
        futures: list[Future[list[tuple[int, int]]]] = []
        stack = [root]
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
                        batch.append(entry.path)
                        if len(batch) >= LINK_BATCH:
                            futures.append(pool.submit(_link_targets, batch))
                            batch = []
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
        if batch:
            futures.append(pool.submit(_link_targets, batch))
        for future in futures:
            linked.update(future.result())
        return seen

    def _scan_stored(self) -> tuple[list[tuple[str, int, int]], dict[str, int]]:
        """Every blob as (path, dev, inode from readdir), and the entry count of each dir."""
        stored = str(self.store.stored_dir)
        try:
            dev = os.stat(stored).st_dev
        except FileNotFoundError:
            return [], {}
        blobs: list[tuple[str, int, int]] = []
        dir_counts: dict[str, int] = {}
        for top in _subdirs(stored):
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
                        if entry.name.endswith(".blob"):
                            blobs.append((entry.path, dev, entry.inode()))
                dir_counts[blob_dir] = count
        return blobs, dir_counts

    def _find_candidates(
        self,
        blobs: list[tuple[str, int, int]],
        linked: set[tuple[int, int]],
        cutoff: float,
        stats: SweepStats,
    ) -> list[tuple[str, int, int]]:
        """Old, unlinked blobs as (path, dev, ino)."""
        candidates: list[tuple[str, int, int]] = []
        for path, dev, ino in blobs:
            # d_ino came free from readdir: linked blobs need no stat at all.
            if (dev, ino) in linked:
                continue
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if st.st_mtime < cutoff and (st.st_dev, st.st_ino) not in linked:
                candidates.append((path, st.st_dev, st.st_ino))
        stats.blobs_checked = len(blobs)
        return candidates

    def _delete_batch(
        self,
        batch: list[tuple[str, int, int]],
        linked: set[tuple[int, int]],
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
                if st.st_mtime >= cutoff or (st.st_dev, st.st_ino) in linked:
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


def _link_targets(paths: list[str]) -> list[tuple[int, int]]:
    """(dev, ino) of what each symlink resolves to; dangling links are skipped."""
    found: list[tuple[int, int]] = []
    stat = os.stat
    for path in paths:
        try:
            st = stat(path)  # follows the link
        except OSError:
            continue
        found.append((st.st_dev, st.st_ino))
    return found


def _subdirs(path: str) -> list[str]:
    try:
        with os.scandir(path) as it:
            return [e.path for e in it if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []
