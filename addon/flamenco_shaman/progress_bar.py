"""shaman-submit's progress line on a terminal, and how it writes sizes and durations."""

from __future__ import annotations

import shutil
import threading
import time
from typing import TextIO

from .engine import Progress


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}:{seconds % 60:02d}"


class ProgressBar:
    """One self-overwriting line on a terminal: phase, bar, files, bytes, rate, ETA."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lock = threading.Lock()
        self._phase = ""
        self._phase_start = time.monotonic()
        self._samples: list[tuple[float, int]] = []
        self._drawn = False

    def __call__(self, p: Progress) -> None:
        with self._lock:
            now = time.monotonic()
            if p.phase != self._phase:
                self._phase, self._phase_start, self._samples = p.phase, now, []
            self._samples.append((now, p.bytes_done))
            # Rate over the last few seconds, so it follows changes in speed.
            while len(self._samples) > 2 and now - self._samples[0][0] > 5:
                self._samples.pop(0)
            t0, b0 = self._samples[0]
            rate = (p.bytes_done - b0) / (now - t0) if now > t0 else 0.0
            width = shutil.get_terminal_size((80, 20)).columns
            frac = p.bytes_done / p.bytes_total if p.bytes_total else 0.0
            eta = ""
            if rate > 0 and p.bytes_total > p.bytes_done:
                eta = f" ETA {_duration((p.bytes_total - p.bytes_done) / rate)}"
            text = (
                f"{p.phase:9} {p.files_done}/{p.files_total} files "
                f"{human_bytes(p.bytes_done)}/{human_bytes(p.bytes_total)} "
                f"{human_bytes(rate)}/s{eta}"
            )
            bar_width = max(10, min(30, width - len(text) - 4))
            filled = int(bar_width * min(1.0, frac))
            line = f"[{'#' * filled}{'.' * (bar_width - filled)}] {text}"
            self.stream.write("\r" + line[: width - 1].ljust(width - 1))
            self.stream.flush()
            self._drawn = True

    def clear(self) -> None:
        with self._lock:
            if self._drawn:
                width = shutil.get_terminal_size((80, 20)).columns
                self.stream.write("\r" + " " * (width - 1) + "\r")
                self.stream.flush()
                self._drawn = False
