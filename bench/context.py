"""What every scenario gets: the scale, a scratch directory, the core count."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .report import Row
from .scale import Scale


@dataclass
class Context:
    scale: Scale
    tmp: Path  # this run's scratch directory; every scenario works below it
    keep: bool = False  # keep generated data after the run (for inspection)
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)

    def workdir(self, name: str) -> Path:
        path = self.tmp / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def cleanup(self, path: Path, *, many_files: bool = False) -> None:
        """Remove a scenario's data; with `many_files`, only when the whole run ends.

        On ext4 without a journal (this team's machines), the filesystem skips the
        inodes freed in the last 1-6 minutes when it allocates new ones, so deleting
        tens of thousands of files makes every file creation of the next scenarios
        several times slower (a bare create loop: 36,000 -> 4,000 files/s). Trees of
        many small files are therefore kept until the end; big files go at once.
        """
        if not self.keep and not many_files:
            shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True)
class Scenario:
    key: str  # name for --only
    rows: tuple[tuple[str, str], ...]  # (row key, scenario title) of each row it produces
    run: Callable[[Context], list[Row]]
