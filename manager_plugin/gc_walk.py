"""What a garbage-collection sweep sees of the checkouts: the links under their roots,
read without following anything it need not follow (see `gc` for how a sweep uses
them, and `gc_scan` for what it sees of `stored/`)."""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from dataclasses import dataclass

from .checkout import TEMP_PREFIX
from .gc_scan import GONE, describe

# Errors meaning "this link reaches nothing": no reason to stop a sweep.
REACHES_NOTHING = GONE | {errno.ELOOP, errno.ENAMETOOLONG}

# In a link target naming a blob, "ab/" and the 62 characters of its dir come right
# before the last "/": the blob's key starts this many characters before that "/".
_KEY_HEAD = 2 + 1 + 62


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
        found: list[str] = []
        with it:
            try:
                for entry in it:
                    if entry.is_symlink():
                        found.append(entry.path)
                    elif entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                        if stale_temps is not None and entry.name.startswith(TEMP_PREFIX):
                            note_stale_temp(entry, start, stale_temps)
            except OSError as exc:
                # Reading the listing (or an entry's type) failed partway: this
                # dir's remaining links are unknown.
                errors.append(describe(directory, exc))
        seen += len(found)
        links.add(directory, found, errors)
    return seen


@dataclass
class Linked:
    """What the checkouts link to: blobs by key below stored/ (the text-resolved
    links) and by (dev, ino) (the followed ones)."""

    keys: set[str]  # "ab/cdef…/SIZE.blob"
    inodes: set[tuple[int, int]]

    def has(self, key: str, dev: int, ino: int) -> bool:
        return key in self.keys or (dev, ino) in self.inodes


class Links:
    """Collects the links the walk finds; `settle` resolves them against the blobs.

    A link whose target, joined in text to the link's own physical directory, names a
    regular blob the scan of stored/ found (through real directories only) reaches that
    very file. Any other link is followed with stat.
    """

    def __init__(self, stored: str) -> None:
        self._stored = stored  # the physical path of stored/
        # Key below stored/ -> one link whose target names it in text. One per key is
        # enough: links naming the same path in text all reach the same file.
        self._textual: dict[str, str] = {}
        self._others: list[str] = []  # links to follow with stat
        self._parents: dict[tuple[str, int], str | None] = {}

    def add(self, directory: str, links: list[str], errors: list[str]) -> None:
        """The symlinks `links`, all in the physical directory `directory`; a link
        that cannot be read (and is not just gone) is appended to `errors`."""
        readlink, textual, others = os.readlink, self._textual, self._others
        # The part of a target before a blob's key -> whether it means stored/ from
        # here; all links of one checkout dir share it.
        means_stored: dict[str, bool] = {}
        for link in links:
            try:
                target = readlink(link)
            except OSError as exc:
                # Gone meanwhile (ENOENT), or replaced by something not a link (EINVAL).
                if exc.errno not in GONE and exc.errno != errno.EINVAL:
                    errors.append(describe(link, exc))
                continue
            start = target.rfind("/") - _KEY_HEAD
            if start > 1 and target[start - 1] == "/":
                head = target[: start - 1]
                ok = means_stored.get(head)
                if ok is None:
                    ok = means_stored[head] = self._resolve(directory, head) == self._stored
                if ok:
                    textual[target[start:]] = link
                    continue
            others.append(link)

    def _resolve(self, directory: str, head: str) -> str | None:
        """The path `head` (a link target's leading part) names, resolved in text from
        `directory`, or None where only the kernel can say (above the root)."""
        if head.startswith(os.sep):
            return head
        head += "/"
        ups = 0
        while head.startswith("../", ups * 3):
            ups += 1
        base = self._ancestor(directory, ups)
        if base is None:
            return None
        rest = head[ups * 3 : -1]
        return f"{base}/{rest}" if rest else base

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

    def settle(self, blobs: Mapping[str, int], errors: list[str]) -> Linked:
        """The linked set, given the blobs the scan of stored/ found (by key). A link
        that cannot be followed for another reason than reaching nothing (dangling, a
        loop) is appended to `errors`: it might reach a blob."""
        textual = self._textual
        keys = textual.keys() & blobs.keys()
        others = [*self._others, *(textual[key] for key in textual.keys() - keys)]
        inodes: set[tuple[int, int]] = set()
        for link in others:
            try:
                st = os.stat(link)  # follows the link
            except OSError as exc:
                if exc.errno not in REACHES_NOTHING:
                    errors.append(describe(link, exc))
                continue
            inodes.add((st.st_dev, st.st_ino))
        return Linked(keys, inodes)


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
