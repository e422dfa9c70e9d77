"""One submission in its own process, so its peak memory can be measured on its own.

Usage: python -m bench.submit_client BLEND MANAGER_URL CHECKOUT_PATH
Prints one JSON line: the SubmitResult's counters and this process's peak RSS.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path
from typing import Any

from . import targets
from .rss import vm_hwm


def _peak_rss() -> int:
    """This process's peak RSS. VmHWM where there is /proc: ru_maxrss also counts the RSS
    of the process that forked us (Linux folds the pre-exec memory into it)."""
    hwm = vm_hwm(os.getpid())
    return hwm or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


class PeakByPhase(targets.PhaseClock):
    """Also notes the phase in which the peak RSS grew, to tell where memory goes."""

    def __init__(self) -> None:
        super().__init__()
        self.peak = 0
        self.peak_phase = ""

    def __call__(self, progress: Any) -> None:
        super().__call__(progress)
        peak = _peak_rss()
        if peak > self.peak:
            self.peak, self.peak_phase = peak, progress.phase


def main() -> int:
    blend, url, checkout = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    clock = PeakByPhase()
    result = targets.submit(blend, url, checkout, clock=clock)
    print(
        json.dumps(
            {
                "files_uploaded": result.files_uploaded,
                "bytes_uploaded": result.bytes_uploaded,
                "peak_rss": _peak_rss(),
                "peak_phase": clock.peak_phase,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
