"""Repeated timings of ours and of a baseline: best, median and spread of each.

One timing says little on a shared VM: a baseline such as `shutil.copyfile` swings 2x
between trials, so every row times both sides several times, alternating, and reports
best (the ratio, what the code can do), median (what it usually does) and min-max (how
much the machine moved while measuring).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass
class Samples:
    """Seconds of each trial of one side (ours or a baseline)."""

    values: list[float] = field(default_factory=list)

    def add(self, seconds: float) -> float:
        self.values.append(seconds)
        return seconds

    @property
    def best(self) -> float:
        return min(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def worst(self) -> float:
        return max(self.values)

    def spread_text(self, unit: str = "s", scale: float = 1.0, digits: int = 2) -> str:
        """E.g. "best 1.20 s, median 1.31 s, range 1.20-1.62 s (n=5)"."""
        f = f".{digits}f"
        return (
            f"best {self.best * scale:{f}} {unit}, median {self.median * scale:{f}} {unit}, "
            f"range {self.best * scale:{f}}-{self.worst * scale:{f}} {unit} (n={len(self.values)})"
        )

    def rate_text(self, amount: float, unit: str) -> str:
        """The same, as a throughput: amount per second at best, median and worst trial."""
        return (
            f"best {amount / self.best:,.0f} {unit}, median {amount / self.median:,.0f} {unit}, "
            f"range {amount / self.worst:,.0f}-{amount / self.best:,.0f} {unit} "
            f"(n={len(self.values)})"
        )


def spread_note(ours: Samples, base: Samples, what: str = "time") -> str:
    """One note for a row: both sides' spread, and the ratio of medians next to the best's."""
    return (
        f"{what}: ours {ours.spread_text()}; baseline {base.spread_text()}; "
        f"time ratio ours/baseline: of medians {ours.median / base.median:.2f}, "
        f"of bests {ours.best / base.best:.2f}"
    )
