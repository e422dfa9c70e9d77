"""Log lines about overload, at most one per kind per interval.

Under attack the same trouble happens thousands of times a second (a descriptor
limit hit on every accept(), connections refused at the cap); one line per event
filled disks with hundreds of megabytes. Here the first event of a kind is logged
at once and the rest are counted into the next line, at most one per INTERVAL.
"""

from __future__ import annotations

import logging
import time

INTERVAL = 60.0  # seconds


class ThrottledLog:
    """`note(kind, message)`: log `message` now, or count it into the next line of `kind`."""

    def __init__(self, logger: logging.Logger, interval: float = INTERVAL) -> None:
        self._logger = logger
        self._interval = interval
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self.total: dict[str, int] = {}  # every event noted, by kind (for tests and stats)

    def note(self, kind: str, message: str) -> None:
        self.total[kind] = self.total.get(kind, 0) + 1
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._held[kind] = self._held.get(kind, 0) + 1
            return
        held = self._held.pop(kind, 0)
        since = f" (and {held} more since the last such line)" if held else ""
        self._last[kind] = now
        self._logger.warning("%s%s", message, since)
