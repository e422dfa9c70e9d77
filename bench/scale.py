"""Sizes for each scenario: the issue's full sizes, and a seconds-long quick variant."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


@dataclass(frozen=True)
class Scale:
    name: str
    hash_bytes: int  # mixed-size project hashed cold
    hash_max_file: int  # largest file in that project
    ingest_bytes: int  # one upload received by the manager
    first_files: int  # first submission: this many small files...
    first_file_size: int  # ...of this size
    resub_files: int  # resubmitted project: file count including the texture...
    resub_bytes: int  # ...and total size
    texture_bytes: int  # the texture changed between resubmissions
    checkout_files: int  # links in one checkout
    gc_blobs: int  # blobs in the store swept by GC
    gc_links: int  # links in jobs/ pointing at them
    rss_bytes: int  # one file moved while peak RSS is sampled
    perfile_files: int  # per-file protocol (Flamenco's add-on): this many small files...
    perfile_file_size: int  # ...of this size
    trials: int  # timed trials of ours and of the baseline, alternating (cheap scenarios)
    heavy_trials: int  # the same for scenarios of tens of seconds per trial

    def scaled(self, fraction: float) -> Scale:
        """The same scale with every count and total times `fraction` (file sizes kept).

        For runs on a busy machine: `--scale 0.2` keeps each scenario's shape at a fifth of
        its work. Ratios at reduced scale are not the full run's (fixed costs weigh more).
        """
        kept = {"name", "first_file_size", "perfile_file_size", "trials", "heavy_trials"}
        changes: dict[str, int] = {
            f.name: max(1, int(getattr(self, f.name) * fraction))
            for f in fields(self)
            if f.name not in kept
        }
        # The largest hashed file stays a small part of the project, as at full scale.
        changes["hash_max_file"] = min(self.hash_max_file, max(4 * KiB, changes["hash_bytes"] // 8))
        return replace(self, name=f"{self.name}-x{fraction:g}", **changes)


FULL = Scale(
    name="full",
    hash_bytes=2 * GiB,
    hash_max_file=256 * MiB,
    ingest_bytes=2 * GiB,
    first_files=10_000,
    first_file_size=4 * KiB,
    resub_files=10_000,
    resub_bytes=1 * GiB,
    texture_bytes=100 * MiB,
    checkout_files=100_000,
    gc_blobs=200_000,
    gc_links=200_000,
    rss_bytes=4 * GiB,
    perfile_files=10_000,
    perfile_file_size=4 * KiB,
    trials=5,
    heavy_trials=3,
)

QUICK = Scale(
    name="quick",
    hash_bytes=64 * MiB,
    hash_max_file=8 * MiB,
    ingest_bytes=64 * MiB,
    first_files=150,
    first_file_size=4 * KiB,
    resub_files=150,
    resub_bytes=24 * MiB,
    texture_bytes=4 * MiB,
    checkout_files=500,
    gc_blobs=1_000,
    gc_links=1_000,
    rss_bytes=128 * MiB,
    perfile_files=150,
    perfile_file_size=4 * KiB,
    trials=3,
    heavy_trials=2,
)


def human_bytes(n: float) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"
