"""Consistency check of a Shaman storage: re-hash blobs, find stray temps and bad links.

Owns `shaman-manager fsck`'s logic (the CLI only formats the report). It works on
the storage directory alone, so it runs with the server stopped or running:

- every `file-store/stored/{sha[:2]}/{sha[2:]}/{size}.blob` is re-hashed (on all
  cores) and must have exactly the size and SHA-256 its path claims; so must every
  `.pending` beside them (a small upload no checkout has synced yet: after a crash
  or power cut, exactly where wrong bytes can be, see `store.pending`);
- temp files in `file-store/uploading/` are reported; a temp is *stale* when no
  live upload holds its flock (`store.temps.temp_is_live`, the server's own
  definition) and it is older than `STALE_TEMP_AGE` seconds (the server's too);
- anything in the store that is not a regular file (a FIFO, a socket, a device,
  a symlink) is reported and never opened;
- symlinks under `jobs/` (and extra checkout paths) must resolve to a blob
  inside `file-store/stored/`.

`repair=True` moves bad blobs and non-regular entries of `stored/` to
`file-store/quarantine/<timestamp>/...` (never deletes them: a human decides),
removes stale temps, and removes non-regular entries of `uploading/` (a FIFO or a
link holds no data). Links are only reported, after the quarantine, so the links
that lost their blob to it are among them.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from .fsck_report import (
    BAD_CHECKSUM,
    BAD_SIZE,
    DANGLING_LINK,
    NOT_REGULAR,
    OUTSIDE_LINK,
    STALE_TEMP,
    STRAY_FILE,
    UNREADABLE,
    FsckReport,
    Problem,
)
from .fstree import dirs_bottom_up, walk
from .store.layout import Layout, parse_blob_path
from .store.pending import hash_blob
from .store.temps import STALE_TEMP_AGE, remove_temp_if_stale, temp_is_live


def run_fsck(
    storage_root: Path,
    *,
    extra_checkout_paths: Sequence[Path] = (),
    repair: bool = False,
    workers: int | None = None,
    stale_after: float = STALE_TEMP_AGE,
) -> FsckReport:
    """Check the whole storage under `storage_root`; repair when asked."""
    layout = Layout(Path(storage_root))
    report = FsckReport(storage_root=layout.storage_root)

    _check_blobs(layout.stored_dir, report, workers)
    _check_temps(layout.uploading_dir, report, repair=repair, stale_after=stale_after)
    if repair:
        _quarantine(layout.root, report)
    # After any quarantine: a job linking a blob just moved aside has lost that file.
    link_roots = [layout.storage_root / "jobs", *(Path(p) for p in extra_checkout_paths)]
    _check_links(link_roots, layout.stored_dir, report)
    return report


# -- blobs ---------------------------------------------------------------------


def _iter_stored(stored: Path, report: FsckReport) -> Iterator[tuple[Path, str | None, int | None]]:
    """Yield (path, sha, size) for every file in stored/; sha None = unparseable name.
    Symlinks (to dirs too) are yielded as unparseable, never entered."""
    if not stored.is_dir():
        return
    top = str(stored)
    for dirpath, entries in walk(top, _reporter(report)):
        rel = Path(dirpath).relative_to(stored).parts
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                continue
            path = Path(entry.path)
            key = None if entry.is_symlink() else parse_blob_path(rel, entry.name)
            if key is not None:
                yield path, key[0], key[1]
            else:
                yield path, None, None


def _reporter(report: FsckReport) -> Callable[[str, OSError], None]:
    """An on_error for the walks: a dir that cannot be listed is a problem to report."""

    def on_error(path: str, exc: OSError) -> None:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR):  # not just gone meanwhile
            report.problems.append(Problem(UNREADABLE, Path(path), f"cannot list: {exc.strerror}"))

    return on_error


def _verify_blob(item: tuple[Path, str | None, int | None]) -> tuple[int, Problem | None]:
    path, sha, size = item
    try:
        st = path.lstat()
    except FileNotFoundError:
        return 0, None  # garbage-collected while we walked: not a problem
    except OSError as exc:
        return 0, Problem(UNREADABLE, path, f"cannot read: {exc.strerror or exc}")
    if not stat.S_ISREG(st.st_mode) and not stat.S_ISLNK(st.st_mode):
        return 0, Problem(NOT_REGULAR, path, f"{_kind(st.st_mode)} in the store; not opened")
    if sha is None or size is None:
        return 0, Problem(
            STRAY_FILE, path, "not a {sha[:2]}/{sha[2:]}/{size}.blob (or .pending) file"
        )
    # Size first: cheap, and a wrong size is reported precisely even if huge.
    if st.st_size != size:
        return 0, Problem(BAD_SIZE, path, f"size is {st.st_size}, name says {size}")
    try:
        hashed, digest = hash_blob(str(path))
    except FileNotFoundError:
        return 0, None
    except OSError as exc:
        return 0, Problem(UNREADABLE, path, f"cannot read: {exc.strerror or exc}")
    if hashed != size:
        return hashed, Problem(BAD_SIZE, path, f"read {hashed} bytes, name says {size}")
    if digest != sha:
        return hashed, Problem(BAD_CHECKSUM, path, f"sha256 is {digest}")
    return hashed, None


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISLNK(mode):
        return "a symlink"
    return "not a regular file"


def _check_blobs(stored: Path, report: FsckReport, workers: int | None) -> None:
    workers = workers or os.cpu_count() or 1
    in_flight: deque[Future[tuple[int, Problem | None]]] = deque()

    def collect(future: Future[tuple[int, Problem | None]]) -> None:
        nbytes, problem = future.result()
        report.blobs_checked += 1
        report.bytes_checked += nbytes
        if problem is not None:
            report.problems.append(problem)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fsck-hash") as pool:
        # A bounded window instead of pool.map, which would queue every blob of a
        # million-blob store at once; results stay in walk order (deterministic report).
        for item in _iter_stored(stored, report):
            in_flight.append(pool.submit(_verify_blob, item))
            if len(in_flight) >= workers * 4:
                collect(in_flight.popleft())
        while in_flight:
            collect(in_flight.popleft())


# -- temp files ----------------------------------------------------------------


def _iter_temps(uploading: Path) -> Iterable[Path]:
    if not uploading.is_dir():
        return []
    paths: list[Path] = []
    for dirpath, entries in walk(str(uploading)):
        paths.extend(Path(dirpath, e.name) for e in entries if not e.is_dir(follow_symlinks=False))
    return sorted(paths)


def _check_temps(uploading: Path, report: FsckReport, *, repair: bool, stale_after: float) -> None:
    for path in _iter_temps(uploading):
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue  # its upload just finished
        if not stat.S_ISREG(st.st_mode):
            problem = Problem(NOT_REGULAR, path, f"{_kind(st.st_mode)} among upload temps")
            if repair:
                try:
                    path.unlink()  # never opened; a FIFO or link holds no data
                    problem.repaired, problem.action = True, "removed"
                except OSError as exc:
                    problem.action = f"could not remove: {exc.strerror or exc}"
            report.problems.append(problem)
            continue
        if temp_is_live(str(path)):
            report.live_temps += 1
            continue
        age = time.time() - st.st_mtime
        if age < stale_after:
            continue  # unlocked but young: its uploader may be about to lock it
        problem = Problem(STALE_TEMP, path, f"temp file no upload owns, {age:.0f} s old")
        if repair and remove_temp_if_stale(str(path), time.time() - stale_after):
            problem.repaired, problem.action = True, "removed"
        report.problems.append(problem)
    if repair:
        _prune_empty_dirs(uploading)


def _prune_empty_dirs(root: Path) -> None:
    """Remove empty directories below `root` (not root itself); races are harmless."""
    if not root.is_dir():
        return
    for directory in dirs_bottom_up(str(root)):
        try:
            os.rmdir(directory)
        except OSError:
            pass  # not empty, or an uploader just created something in it


# -- links ---------------------------------------------------------------------


def _check_links(roots: Sequence[Path], stored: Path, report: FsckReport) -> None:
    stored_real = os.path.realpath(stored)
    for root in roots:
        if not root.is_dir():
            continue
        for _dirpath, entries in walk(str(root), _reporter(report)):
            for entry in entries:
                if not entry.is_symlink():
                    continue
                report.links_checked += 1
                problem = _check_link(Path(entry.path), stored_real)
                if problem is not None:
                    report.problems.append(problem)


def _check_link(path: Path, stored_real: str) -> Problem | None:
    target = os.readlink(path)
    real = os.path.realpath(path)
    if os.path.commonpath([real, stored_real]) != stored_real:
        missing = "" if os.path.exists(real) else " (and does not exist)"
        return Problem(
            OUTSIDE_LINK, path, f"points to {target}, outside file-store/stored{missing}"
        )
    if not os.path.exists(real):
        return Problem(DANGLING_LINK, path, f"target {target} does not exist")
    if not os.path.isfile(real):
        return Problem(OUTSIDE_LINK, path, f"points to {target}, which is not a blob")
    return None


# -- repair --------------------------------------------------------------------


def _quarantine(store: Path, report: FsckReport) -> None:
    """Move bad and stray blobs aside, keeping their path under stored/."""
    stored = store / "stored"
    to_move = [
        p
        for p in report.problems
        if p.kind in (BAD_SIZE, BAD_CHECKSUM, STRAY_FILE, NOT_REGULAR)
        and p.path.is_relative_to(stored)
    ]
    if not to_move:
        return
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    qdir = store / "quarantine" / stamp
    for problem in to_move:
        dest = qdir / problem.path.relative_to(stored)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(problem.path, dest)  # same filesystem: atomic, nothing copied
        except OSError as exc:
            problem.action = f"could not quarantine: {exc.strerror or exc}"
            continue
        problem.repaired, problem.action = True, f"moved to {dest}"
        report.quarantine_dir = qdir
        for parent in (problem.path.parent, problem.path.parent.parent):
            try:
                parent.rmdir()
            except OSError:
                break  # still holds other blobs
