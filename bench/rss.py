"""Peak resident memory of other processes, sampled with psutil while they work.

Sampling can miss a short spike, so on Linux the kernel's own high-water mark (VmHWM in
/proc/PID/status) is read too, and the larger of the two is reported.
"""

from __future__ import annotations

import threading

import psutil


def vm_hwm(pid: int) -> int:
    """The kernel's peak RSS for the process, in bytes (0 where unavailable)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class PeakRSS:
    """Samples one process's RSS every `interval` seconds until stopped; `peak` in bytes."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self._proc = psutil.Process(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)

    def _sample(self) -> None:
        try:
            self.peak = max(self.peak, self._proc.memory_info().rss, vm_hwm(self.pid))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def start(self) -> PeakRSS:
        self._thread.start()
        return self

    def stop(self) -> int:
        """Stop sampling (take one last sample while the process still lives); the peak."""
        self._sample()
        self._stop.set()
        self._thread.join()
        return self.peak

    def __enter__(self) -> PeakRSS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
