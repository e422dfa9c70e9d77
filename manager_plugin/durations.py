"""Go duration strings (`24h0m0s`, `1h30m`, `1.5h`, `90s`, `0`), as Flamenco's config uses."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 micro sign
    "μs": 1_000,  # U+03BC Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> timedelta:
    """Parse a Go duration; raise ValueError with Go-like wording on bad input."""
    if not isinstance(text, str):
        raise ValueError(f"invalid duration {text!r}: expected a string like '24h0m0s'")
    orig = text
    sign = 1
    if text and text[0] in "+-":
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    if text == "0":
        return timedelta(0)
    if not text:
        raise ValueError(f"invalid duration {orig!r}")
    total_ns = 0
    pos = 0
    while pos < len(text):
        match = _PART.match(text, pos)
        if match is None:
            if re.match(r"\d*\.?\d*$", text[pos:]):
                raise ValueError(f"missing unit in duration {orig!r}")
            raise ValueError(f"invalid duration {orig!r}")
        number, unit = match.groups()
        whole, _, frac = number.partition(".")
        scale = _UNITS_NS[unit]
        total_ns += int(whole or "0") * scale
        if frac:
            total_ns += int(frac) * scale // 10 ** len(frac)
        pos = match.end()
    return timedelta(microseconds=sign * total_ns / 1000)


def format_duration(value: timedelta) -> str:
    """Render a timedelta the way Go prints durations (`24h0m0s`), for messages."""
    total = value.total_seconds()
    if total == 0:
        return "0s"
    sign = "-" if total < 0 else ""
    total = abs(total)
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    secs = f"{seconds:g}"
    if hours:
        return f"{sign}{int(hours)}h{int(minutes)}m{secs}s"
    if minutes:
        return f"{sign}{int(minutes)}m{secs}s"
    return f"{sign}{secs}s"
