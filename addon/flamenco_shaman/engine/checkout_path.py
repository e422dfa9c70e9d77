"""Checkout path rules (Flamenco's), the default checkout name, and their pure helpers."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

_FORBIDDEN = set("?*:;{}\\")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def checkout_path_problem(path: str) -> str | None:
    """Why the manager would refuse `path` as a checkout path, or None when it is fine."""
    if not path:
        return "the checkout path is empty"
    if path.startswith("/"):
        return "the checkout path must be relative (no leading '/')"
    bad = sorted(_FORBIDDEN.intersection(path))
    if bad:
        return "the checkout path may not contain " + " ".join(repr(c) for c in bad)
    if _CONTROL.search(path):
        return "the checkout path may not contain control characters"
    if ".." in path.split("/"):
        return "the checkout path may not contain '..'"
    return None


def sanitize_checkout_path(path: str) -> str:
    """Turn any text into a valid checkout path, keeping it as recognisable as possible."""
    path = _CONTROL.sub("_", path.replace("\\", "/"))
    path = "".join("_" if c in _FORBIDDEN else c for c in path)
    parts = [p.strip() for p in path.split("/")]
    parts = [p for p in parts if p not in ("", ".", "..")]
    return "/".join(parts) or "job"


def default_checkout_path(blendfile: Path, now: datetime | None = None) -> str:
    """`<blend stem>-<YYYYmmdd-HHMMSS>`, made valid."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    return sanitize_checkout_path(f"{blendfile.stem}-{stamp}")
