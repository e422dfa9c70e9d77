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
2. walks `jobs/` and every extra checkout path, collecting link targets, while a
   child process walks a big `stored/` (see `gc_scan`: two cores, not one);
3. candidates are the blobs no link resolves to with mtime < T - maxAge;
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
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from .fstree import remove_tree
from .gc_scan import ChildScan, StoreScan, describe, scan_stored, subdir_names
from .gc_walk import Linked, Links, collect_links
from .heap import cyclic_collector_paused
from .locking import StorageLock
from .store import STALE_TEMP_AGE, FileStore
from .store.layout import BLOB_SUFFIXES

log = logging.getLogger(__name__)

BATCH = 1000  # blobs re-checked and deleted per exclusive-lock hold
# Below this many blobs (in the last sweep) stored/ is scanned in the manager itself:
# a child takes ~50 ms to start, which is what scanning 5,000-10,000 blobs takes here.
CHILD_SCAN_MIN_BLOBS = 10_000


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
        scan_in_child: bool = True,
    ) -> None:
        self.store = store
        self.jobs_dir = Path(jobs_dir)
        self.lock = lock
        self.max_age = max_age
        self.extra_checkout_paths = [Path(p) for p in extra_checkout_paths]
        self.scan_in_child = scan_in_child  # False: stored/ is scanned in this process
        self._blobs_seen: int | None = None  # by the last sweep (None: no sweep yet)

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

        stored = str(self.store.stored_dir)
        child = ChildScan(stored, BLOB_SUFFIXES) if self._scan_in_child() else None
        try:
            stale_checkout_temps: list[str] = []
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
            scan = self._scan_store(stored, child)
        finally:
            if child is not None:
                child.close()
        self._blobs_seen = len(scan.blobs)
        stats.store_errors += scan.errors
        if stats.store_errors:
            log.warning(
                "shaman gc: %d dirs of the store could not be read (their blobs are kept): "
                "first %s",
                len(stats.store_errors),
                stats.store_errors[0],
            )
        linked = links.settle(scan.blobs, stats.walk_errors)
        if stats.walk_errors:
            return self._abort(stats, stats.walk_errors)

        candidates = self._find_candidates(scan, linked, cutoff, stats)
        emptied: set[str] = set()  # dirs of deleted blobs
        try:
            for i in range(0, len(candidates), BATCH):
                self._delete_batch(
                    candidates[i : i + BATCH], linked, cutoff, dry_run, stats, emptied
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
            stats.dirs_removed += self._remove_empty_dirs([*scan.empty, *emptied])
        log.info("shaman gc: %s", stats.summary())
        return stats

    def _scan_in_child(self) -> bool:
        """Whether this sweep scans stored/ in a child: unless told not to, or the last
        sweep found a store small enough to scan here quicker than a child starts."""
        seen = self._blobs_seen
        return self.scan_in_child and (seen is None or seen >= CHILD_SCAN_MIN_BLOBS)

    @staticmethod
    def _scan_store(stored: str, child: ChildScan | None) -> StoreScan:
        """The child's scan of stored/, or this process's own if it gave none."""
        if child is not None:
            scan = child.result()
            if scan is not None:
                return scan
            log.warning(
                "shaman gc: scanning the store in a child process failed (%s); "
                "scanning it in the manager instead",
                child.failure,
            )
        return scan_stored(stored, BLOB_SUFFIXES)

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
        scan: StoreScan,
        linked: Linked,
        cutoff: float,
        stats: SweepStats,
    ) -> list[tuple[str, str]]:
        """Old, unlinked blobs as (key, path), in key order."""
        stored = str(self.store.stored_dir)
        candidates: list[tuple[str, str]] = []
        # Linked by key needs no stat at all, and d_ino came free from readdir.
        for key in sorted(scan.blobs.keys() - linked.keys):
            if (scan.dev(key), scan.blobs[key]) in linked.inodes:
                continue
            path = f"{stored}/{key}"
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if st.st_mtime < cutoff and not linked.has(key, st.st_dev, st.st_ino):
                candidates.append((key, path))
        stats.blobs_checked = len(scan.blobs)
        return candidates

    def _delete_batch(
        self,
        batch: list[tuple[str, str]],
        linked: Linked,
        cutoff: float,
        dry_run: bool,
        stats: SweepStats,
        emptied: set[str],
    ) -> None:
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(self.lock.exclusive())
            except OSError as exc:  # out of descriptors, most likely
                raise _LockFailed(describe(str(self.lock.path), exc)) from exc
            for key, path in batch:
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                # Touched or re-created since the walk: a checkout or request wants it.
                if st.st_mtime >= cutoff or linked.has(key, st.st_dev, st.st_ino):
                    continue
                if not dry_run:
                    try:
                        os.unlink(path)
                    except OSError as exc:
                        log.warning("shaman gc: cannot delete %s: %s", path, exc)
                        continue
                    emptied.add(os.path.dirname(path))
                stats.files_deleted += 1
                stats.bytes_deleted += st.st_size
                stats.deleted.append(path)

    def _remove_empty_dirs(self, dirs: list[str]) -> int:
        """rmdir these dirs of stored/ (found empty, or emptied by the sweep), and the
        two-letter dir of each one removed; one that is not empty (an upload just put
        a blob there) fails harmlessly and is kept."""
        removed = 0
        stored = str(self.store.stored_dir)
        tops: set[str] = set()
        for directory in sorted(dirs, key=len, reverse=True):  # blob dirs first
            try:
                os.rmdir(directory)
            except OSError:
                continue
            removed += 1
            parent = os.path.dirname(directory)
            if parent != stored:
                tops.add(parent)
        for top in tops:
            try:
                os.rmdir(top)
                removed += 1
            except OSError:
                pass
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


def _subdirs(path: str) -> list[str]:
    """The real subdirectories of `path` (none if it cannot be listed)."""
    return [f"{path}/{name}" for name in subdir_names(path, []) or []]


class _LockFailed(Exception):
    """The storage lock could not be taken (out of descriptors): stop deleting."""
