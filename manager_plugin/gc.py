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
import logging
import os
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from .fstree import remove_tree
from .gc_walk import (
    Linked,
    Links,
    collect_links,
    describe,
    scan_stored,
    subdirs,
)
from .heap import cyclic_collector_paused
from .locking import StorageLock
from .store import STALE_TEMP_AGE, FileStore

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
        with cyclic_collector_paused():  # see `heap`: the walks build big containers
            return self._sweep(dry_run)

    def _sweep(self, dry_run: bool) -> SweepStats:
        stats = SweepStats(dry_run=dry_run)
        try:
            with self.lock.exclusive():
                start = self._fs_now()
        except OSError as exc:
            return self._abort(stats, [describe(str(self.lock.path), exc)])
        cutoff = start - self.max_age.total_seconds()

        stale_checkout_temps: list[str] = []
        stored = str(self.store.stored_dir)
        links = Links(os.path.realpath(stored))
        for root in [self.jobs_dir, *self.extra_checkout_paths]:
            if root == self.jobs_dir and not os.path.lexists(root):
                # No jobs/ at all holds no links: Flamenco Manager, deleting its last
                # job, removes the checkout's empty parent, which may be jobs/ itself.
                # (A jobs/ that is a link to an unmounted place exists, and aborts.)
                continue
            # Temp dirs are only ours to remove under jobs/; extra paths are not ours.
            temps = stale_checkout_temps if root == self.jobs_dir else None
            stats.links_seen += collect_links(str(root), links, temps, start, stats.walk_errors)
        if stats.walk_errors:
            return self._abort(stats, stats.walk_errors)
        # Then stored/, in slices on SCAN_WORKERS threads (its syscalls release the GIL).
        # One after the other: walking the checkouts at the same time made both slower
        # (200,000 blobs and links on 2 cores: 3.5-3.9 s together, 2.9-3.0 s in turn).
        tops = subdirs(stored, stats.store_errors)
        blobs: list[tuple[str, int, int]] = []
        dir_counts: dict[str, int] = {}
        with ThreadPoolExecutor(max_workers=SCAN_WORKERS) as pool:
            for slice_blobs, slice_counts, slice_errors in pool.map(
                scan_stored, [tops[i::SCAN_SLICES] for i in range(SCAN_SLICES)]
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

    def _find_candidates(
        self,
        blobs: list[tuple[str, int, int]],
        linked: Linked,
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
        linked: Linked,
        cutoff: float,
        dry_run: bool,
        stats: SweepStats,
        dir_counts: dict[str, int],
    ) -> None:
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(self.lock.exclusive())
            except OSError as exc:  # out of descriptors, most likely
                raise _LockFailed(describe(str(self.lock.path), exc)) from exc
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
        for top in subdirs(uploading):
            for sub in subdirs(top):
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


class _LockFailed(Exception):
    """The storage lock could not be taken (out of descriptors): stop deleting."""
