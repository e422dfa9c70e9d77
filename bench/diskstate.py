"""How fast the benchmark's filesystem creates files right now, and waiting until that
is normal again before a scenario.

On this team's VMs (ext4 mounted with `discard`), deleting many files or big ones
makes every file creation several times slower for minutes afterwards (a bare loop of
mkdir + 4 KiB file: 40-120 us each when calm, 175-600 us after a few thousand
deletions). A scenario that creates files then measures that state more than our code,
and the same code's figures moved by 1.5x between runs. So each scenario first waits,
up to a bound, until a small probe runs at calm speed, and its rows say what the
probe found.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from .baselines import create_files

PROBE_FILES = 300
CALM_US = 150.0  # per mkdir + 4 KiB file; calm runs measured 40-120
RETRY_EVERY = 5.0


def probe(directory: Path, count: int = PROBE_FILES) -> float:
    """Microseconds per (mkdir + write a 4 KiB file) for `count` of them in `directory`,
    removed again afterwards."""
    root = directory / f"probe-{time.time_ns()}"
    try:
        seconds = create_files(root, [f"{i}/f" for i in range(count)], b"\0" * 4096)
        return seconds * 1e6 / count
    finally:
        shutil.rmtree(root, ignore_errors=True)


def wait_until_calm(directory: Path, max_wait: float) -> tuple[float, float]:
    """Probe until file creation is calm or `max_wait` seconds have passed:
    (the last probe's us per file, seconds waited)."""
    start = time.monotonic()
    while True:
        us = probe(directory)
        waited = time.monotonic() - start
        if us <= CALM_US or waited + RETRY_EVERY > max_wait:
            return us, waited
        time.sleep(RETRY_EVERY)


def note(us: float, waited: float) -> str:
    """The rows' note on the state the scenario started in."""
    state = "calm" if us <= CALM_US else "NOT CALM, file-creating rows unreliable"
    wait = f" after waiting {waited:.0f} s" if waited >= 1 else ""
    return (
        f"filesystem before the scenario{wait}: {us:.0f} us per mkdir + 4 KiB file "
        f"({state}; calm is <= {CALM_US:.0f})"
    )
