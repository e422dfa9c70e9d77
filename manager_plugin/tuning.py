"""`shaman.tuning`: switches for the Linux-only fast paths, each on by default.

Each trick has a plain path that does the same job and is tested against the same
expectations; switching one off is for filesystems or kernels that misbehave with it.

    splice          big upload bodies moved socket -> temp with splice(2)
    anonymousTemps  small batch records written to O_TMPFILE temps, linked via /proc
    reuseLinks      a checkout hard-links the symlinks of its previous sibling
"""

from __future__ import annotations

from dataclasses import dataclass

KEYS = {"splice": "splice", "anonymousTemps": "anonymous_temps", "reuseLinks": "reuse_links"}


@dataclass(frozen=True)
class Tuning:
    splice: bool = True
    anonymous_temps: bool = True
    reuse_links: bool = True

    @classmethod
    def plain(cls) -> Tuning:
        """Every fast path off: the portable behaviour."""
        return cls(splice=False, anonymous_temps=False, reuse_links=False)
