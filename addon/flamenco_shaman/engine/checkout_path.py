"""The checkout path as the engine sees it: the manager's rules, the default name, and
turning any text into a path the manager takes (pure helpers).

The rules are `flamenco_shaman.protocol`'s, the same code the manager runs.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

from .. import protocol

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def checkout_path_problem(path: str) -> str | None:
    """Why the manager would refuse `path` as a checkout path, or None when it is fine."""
    return protocol.checkout_path_problem(path)


def sanitize_checkout_path(path: str) -> str:
    """Turn any text into a valid checkout path, keeping it as recognisable as possible."""
    path = _CONTROL.sub("_", path.replace("\\", "/"))
    path = "".join("_" if c in protocol.FORBIDDEN_CHARS else c for c in path)
    parts = [_clip(p.strip()) for p in path.split("/")]
    parts = [p for p in parts if p not in ("", ".", "..")]
    return "/".join(parts) or "job"


def _clip(part: str) -> str:
    """At most MAX_COMPONENT_BYTES of UTF-8, cut at a character boundary."""
    data = part.encode("utf-8", "replace")[: protocol.MAX_COMPONENT_BYTES]
    return data.decode("utf-8", "ignore")


def default_checkout_path(blendfile: Path, now: datetime | None = None) -> str:
    """`<blend stem>-<YYYYmmdd-HHMMSS>`, made valid."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    return sanitize_checkout_path(f"{blendfile.stem}-{stamp}")
