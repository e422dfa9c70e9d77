"""The one place that picks `_linux` or `_portable` (as Go picks touch_linux.go or
touch_nonlinux.go at build time); the store imports kernel features from here only."""

from __future__ import annotations

import sys

if sys.platform.startswith("linux"):
    from ._linux import (
        ANONYMOUS_TEMPS_AVAILABLE,
        NO_TMPFILE_ERRNOS,
        SPLICE_AVAILABLE,
        hint_writeback,
        is_anonymous,
        link_into_place,
        open_anonymous,
        sync_filesystem,
    )
else:  # pragma: no cover - the suite runs on Linux; _portable is tested by swapping it in
    from ._portable import (
        ANONYMOUS_TEMPS_AVAILABLE,
        NO_TMPFILE_ERRNOS,
        SPLICE_AVAILABLE,
        hint_writeback,
        is_anonymous,
        link_into_place,
        open_anonymous,
        sync_filesystem,
    )

__all__ = [
    "ANONYMOUS_TEMPS_AVAILABLE",
    "NO_TMPFILE_ERRNOS",
    "SPLICE_AVAILABLE",
    "hint_writeback",
    "is_anonymous",
    "link_into_place",
    "open_anonymous",
    "sync_filesystem",
]
