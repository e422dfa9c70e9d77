"""Pausing CPython's cyclic garbage collector while big, cycle-free structures are built.

A GC sweep of the store (`gc`) builds lists, sets and dicts of hundreds of thousands of
entries. Each full pass of CPython's cyclic collector visits every item of every one of
them, and the allocations of a sweep trigger several such passes: on 100,000 blobs and
links, successive dry-run sweeps took 1.27 to 1.79 s, growing from one to the next,
against a steady 1.33-1.37 s with the collector paused. Those structures hold no
reference cycles, so nothing is lost by not looking for any meanwhile; plain reference
counting frees them as usual.

The switch is process-wide: it stays off until the last of overlapping pauses ends
(sweeps may run in several threads), and a collector that was off before stays off.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_pauses = 0
_resume = False  # whether the last pause to end switches the collector back on


@contextlib.contextmanager
def cyclic_collector_paused() -> Iterator[None]:
    """No cyclic garbage collection in this process while the block runs."""
    global _pauses, _resume
    with _lock:
        if _pauses == 0:
            _resume = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _lock:
            _pauses -= 1
            if _pauses == 0 and _resume:
                gc.enable()
