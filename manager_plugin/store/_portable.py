"""The store's fallbacks where `_linux`'s kernel features do not exist: plain paths only."""

from __future__ import annotations

import os

NO_TMPFILE_ERRNOS: frozenset[int] = frozenset()
SPLICE_AVAILABLE = False
ANONYMOUS_TEMPS_AVAILABLE = False


def hint_writeback(fd: int) -> None:
    """No early writeback hint here; the fsync before the link does all the work."""


def sync_filesystem(path: str) -> bool:
    """No filesystem-wide flush here: the caller fsyncs file by file."""
    return False


def open_anonymous(directory: str) -> tuple[int, str]:
    raise OSError("anonymous temp files need Linux")


def is_anonymous(temp: str) -> bool:
    return False


def link_into_place(temp: str, final: str) -> None:
    os.link(temp, final)
