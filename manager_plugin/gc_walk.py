"""What a garbage-collection sweep sees: the links under the checkout roots and the
blob files in `stored/`, read without following anything it need not follow (see
`gc` for how a sweep uses them)."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from .checkout import TEMP_PREFIX
from .store.layout import BLOB_SUFFIXES

# Errors meaning "this entry is gone, or reaches nothing": no reason to stop a sweep.
GONE = frozenset({errno.ENOENT, errno.ENOTDIR})
REACHES_NOTHING = GONE | {errno.ELOOP, errno.ENAMETOOLONG}


def describe(path: str, exc: OSError) -> str:
    return f"{path}: {exc.strerror or exc} (errno {exc.errno})"


def collect_links(
    root: str,
    links: Links,
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
            if is_root or exc.errno not in GONE:
                errors.append(describe(directory, exc))
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
                            note_stale_temp(entry, start, stale_temps)
            except OSError as exc:
                # Reading the listing (or an entry's type) failed partway: this
                # dir's remaining links are unknown.
                errors.append(describe(directory, exc))
    return seen


@dataclass
class Linked:
    """What the checkouts link to: blobs by path below stored/ (their text-resolved
    links) and by (dev, ino) (the followed ones)."""

    keys: set[str]  # "ab/cdef…/SIZE.blob"
    cut: int  # length of the stored/ path the blob paths asked about start with, plus 1
    inodes: set[tuple[int, int]]

    def has(self, path: str, dev: int, ino: int) -> bool:
        return path[self.cut :] in self.keys or (dev, ino) in self.inodes


class Links:
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
            if exc.errno not in GONE and exc.errno != errno.EINVAL:
                errors.append(describe(link, exc))
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

    def settle(self, blob_keys: set[str], cut: int, errors: list[str]) -> Linked:
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
                if exc.errno not in REACHES_NOTHING:
                    errors.append(describe(link, exc))
                continue
            inodes.add((st.st_dev, st.st_ino))
        return Linked(keys, cut, inodes)


def note_stale_temp(entry: os.DirEntry[str], start: float, stale_temps: list[str]) -> None:
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


def scan_stored(
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
            if exc.errno not in GONE:
                errors.append(describe(top, exc))
            continue
        failed = len(errors)
        blob_dirs = subdirs(top, errors)
        if len(errors) == failed:
            dir_counts[top] = len(blob_dirs)
        for blob_dir in blob_dirs:
            count = 0
            try:
                with os.scandir(blob_dir) as it:
                    for entry in it:
                        count += 1
                        name = entry.name
                        if name.endswith(BLOB_SUFFIXES) and entry.is_file(follow_symlinks=False):
                            blobs.append((entry.path, dev, entry.inode()))
            except OSError as exc:
                if exc.errno not in GONE:
                    errors.append(describe(blob_dir, exc))
                # Its count stays unknown: never removed as empty.
                continue
            dir_counts[blob_dir] = count
    return blobs, dir_counts, errors


def subdirs(path: str, errors: list[str] | None = None) -> list[str]:
    """The real subdirectories of `path`; a listing error other than "gone" is appended
    to `errors` (if given) and yields none."""
    try:
        with os.scandir(path) as it:
            return [e.path for e in it if e.is_dir(follow_symlinks=False)]
    except OSError as exc:
        if errors is not None and exc.errno not in GONE:
            errors.append(describe(path, exc))
        return []
