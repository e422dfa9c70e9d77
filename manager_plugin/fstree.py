"""Iterative walks and removals of directory trees, for trees of any depth.

`os.walk` (Python 3.11) and `shutil.rmtree` recurse once per level, so a tree a
client or a crash left 1,000+ levels deep raises RecursionError (rmtree also holds
one descriptor per level). These keep an explicit stack of paths instead: one
listing open at a time, no Python recursion. Symlinks are never followed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator

OnError = Callable[[str, OSError], None]


def _ignore(_path: str, _exc: OSError) -> None:
    return None


def walk(top: str, on_error: OnError = _ignore) -> Iterator[tuple[str, list[os.DirEntry[str]]]]:
    """Yield (dirpath, entries) for `top` and every real directory below it, parents
    before children. Symlinks to directories are entries, never entered. A dir that
    cannot be listed is passed to `on_error` and skipped. The caller may prune by
    removing dir entries from the list before the walk goes on."""
    stack = [top]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            on_error(directory, exc)
            continue
        yield directory, entries
        subdirs = []
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    subdirs.append(entry.path)
            except OSError as exc:
                on_error(entry.path, exc)
        stack.extend(reversed(subdirs))  # sorted order, depth first


def dirs_bottom_up(top: str, on_error: OnError = _ignore) -> list[str]:
    """Every real directory below `top` (not `top`), children before their parents."""
    found: list[str] = []
    for directory, _entries in walk(top, on_error):
        if directory != top:
            found.append(directory)
    found.reverse()
    return found


def remove_tree(top: str, on_error: OnError = _ignore) -> bool:
    """Remove `top` and everything below it, without following symlinks; True if it is
    gone. Errors go to `on_error` and leave what could not be removed."""
    try:
        if not stat.S_ISDIR(os.lstat(top).st_mode):
            os.unlink(top)  # a symlink (or file) where a dir was expected: never followed
            return True
    except FileNotFoundError:
        return True
    except OSError as exc:
        on_error(top, exc)
        return False
    dirs: list[str] = []
    for directory, entries in walk(top, on_error):
        dirs.append(directory)
        for entry in entries:
            try:
                if not entry.is_dir(follow_symlinks=False):
                    os.unlink(entry.path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                on_error(entry.path, exc)
    for directory in reversed(dirs):
        try:
            os.rmdir(directory)
        except FileNotFoundError:
            pass
        except OSError as exc:
            on_error(directory, exc)
    return not os.path.lexists(top)
