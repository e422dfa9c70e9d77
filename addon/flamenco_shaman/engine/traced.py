"""One file of the pack as the tracer reports it, and the pack's stand-in root."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePath

# A made-up absolute directory standing in for the checkout; BAT only computes paths
# under it, it never touches the disk there.
PACK_ROOT = Path("/flamenco-shaman-pack").absolute()


@dataclass(frozen=True)
class TracedFile:
    """One file of the pack: where to read it and where it goes in the checkout."""

    source: str | Path  # absolute; a str when replayed from the trace cache (cheaper)
    pack_path: str  # posix, relative to the checkout root
    temporary: bool  # a blend rewritten by BAT, in its temp dir (not worth caching)


def pack_relative(dst: PurePath) -> str:
    """The posix path inside the checkout of a path BAT computed under PACK_ROOT."""
    return PurePath(dst).relative_to(PACK_ROOT).as_posix()
