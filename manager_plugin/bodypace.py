"""The slowest a request body may arrive: a grace period, then an average rate floor.

A timeout between two pieces of a body alone lets a client hold a connection forever
by sending one byte just before each timeout. So each body also has a deadline that
every byte received moves later: `grace` seconds plus 1/`min_rate` s per byte (as
Apache's mod_reqtimeout does). Past it the body is given up with 408.
"""

from __future__ import annotations

import time

from .errors import BodyTimeout


class BodyPace:
    """The deadline of one body; `received` is counted by whoever reads it."""

    def __init__(self, min_rate: float, grace: float) -> None:
        self.min_rate = min_rate
        self.grace = grace
        self.started = time.monotonic()

    def deadline(self, received: int) -> float:
        """`time.monotonic()` by which the body must be further along than `received`."""
        if self.min_rate <= 0:
            return float("inf")
        return self.started + self.grace + received / self.min_rate

    def time_left(self, received: int) -> float:
        """Seconds until the deadline (<= 0: missed)."""
        return self.deadline(received) - time.monotonic()

    def wait_limit(self, received: int, timeout: float | None) -> float | None:
        """How long the next read may wait: the idle `timeout` or the time left, whichever
        is shorter. Raises BodyTimeout when the deadline has passed already."""
        left = self.time_left(received)
        if left <= 0:
            raise self.too_slow(received)
        return left if timeout is None or left < timeout else timeout

    def too_slow(self, received: int) -> BodyTimeout:
        return BodyTimeout(
            f"body arrives too slowly: {received} bytes in "
            f"{time.monotonic() - self.started:.0f} s, below the minimum of "
            f"{self.min_rate:g} bytes/s; request aborted"
        )

    def missed(self, received: int) -> bool:
        return self.time_left(received) <= 0
