"""Request data made safe to put in a log line: control characters escaped.

A client chooses its URL path, headers and file names; a `%0a` in a path would
otherwise end our log line and start one of its choosing. Everything a request
supplies goes through `loggable` before it is logged.
"""

from __future__ import annotations

import re

# Not printable: C0/C1 controls, DEL, line and paragraph separators, format characters
# such as bidi overrides (they reorder what a reader sees), and other separators.
_UNSAFE = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e"
    r"\u2060-\u206f\ufeff\ufff9-\ufffb\\]"
)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char == "\\":
        return "\\\\"  # so that an escape in the log cannot be forged either
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def loggable(text: str, limit: int = 1000) -> str:
    """`text` with every control or invisible formatting character as `\\xNN`/`\\uNNNN`,
    cut to `limit` characters (a log line is no place for a megabyte of path)."""
    if len(text) > limit:
        text = text[:limit] + "..."
    return _UNSAFE.sub(_escape, text)
