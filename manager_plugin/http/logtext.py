"""Request data made safe to put in a log line: control characters escaped.

A client chooses its URL path, headers and file names; a `%0a` in a path would
otherwise end our log line and start one of its choosing. Everything a request
supplies goes through `loggable` before it is logged, and `serve` puts an
`EscapingFilter` on its log handlers as well, for lines that carry client data
from deeper down (checkout paths, file names in the store).
"""

from __future__ import annotations

import logging
import re

# Not printable: C0/C1 controls, DEL, line and paragraph separators, format characters
# such as bidi overrides (they reorder what a reader sees), and other separators.
_CONTROLS = (
    r"\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e"
    r"\u2060-\u206f\ufeff\ufff9-\ufffb"
)
_CONTROL = re.compile(f"[{_CONTROLS}]")
_UNSAFE = re.compile(rf"[{_CONTROLS}\\]")  # and the backslash, which starts an escape


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


class EscapingFilter(logging.Filter):
    """For a log handler: control characters in a record's message escaped, so every
    record is one line (tracebacks, kept apart in exc_info, are not touched).

    Backslashes are left alone here: messages built with `loggable` are escaped already.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        # The formatted message replaces msg and args either way: the formatter would
        # otherwise format it a second time.
        record.msg, record.args = _CONTROL.sub(_escape, record.getMessage()), None
        return True
