"""What `shaman-manager fsck` found: problem kinds (stable strings scripts can grep),
one `Problem` each, and the `FsckReport` of a run (see `fsck` for the checks)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# Problem kinds, stable strings so scripts can grep the report.
BAD_SIZE = "bad-size"
BAD_CHECKSUM = "bad-checksum"
STRAY_FILE = "stray-file"
STALE_TEMP = "stale-temp"
DANGLING_LINK = "dangling-link"
OUTSIDE_LINK = "link-outside-store"
UNREADABLE = "unreadable"
NOT_REGULAR = "not-a-regular-file"


@dataclass
class Problem:
    """One thing wrong in the storage, and what --repair did about it."""

    kind: str
    path: Path
    detail: str
    repaired: bool = False
    action: str = ""

    def __str__(self) -> str:
        text = f"{self.kind}: {self.path}: {self.detail}"
        if self.action:
            text += f" [{self.action}]"
        return text


@dataclass
class FsckReport:
    """Result of one fsck run."""

    storage_root: Path
    blobs_checked: int = 0
    bytes_checked: int = 0
    links_checked: int = 0
    live_temps: int = 0
    problems: list[Problem] = field(default_factory=list)
    quarantine_dir: Path | None = None

    @property
    def unrepaired(self) -> list[Problem]:
        return [p for p in self.problems if not p.repaired]

    @property
    def bad_blobs(self) -> list[Problem]:
        return [
            p for p in self.problems if p.kind in (BAD_SIZE, BAD_CHECKSUM, UNREADABLE, NOT_REGULAR)
        ]

    @property
    def ok(self) -> bool:
        """True when nothing is left to fix (clean, or everything repaired)."""
        return not self.unrepaired

    def summary(self) -> str:
        repaired = len(self.problems) - len(self.unrepaired)
        return (
            f"checked {self.blobs_checked} blobs ({self.bytes_checked} bytes), "
            f"{self.links_checked} links; {len(self.problems)} problems, "
            f"{repaired} repaired; {self.live_temps} uploads in progress"
        )
