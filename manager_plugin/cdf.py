"""The Checkout Definition File (CDF) of the Flamenco 2 Shaman protocol, spoken by `bat pack`.

A CDF is UTF-8 text, one file per line: ``<sha256> <size> <path>``, lines joined by
``\\n``. The path is everything after the second space, so it may contain spaces.
The server answers a requirements request with one line per file still to upload:
``file-unknown <path>`` or ``already-uploading <path>``.

Pure functions only: no HTTP, no filesystem. Rules about which checkout paths are
allowed belong to `manager_plugin.protocol`; this module only checks the line syntax.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final, Literal

from .protocol import is_checksum

ANSWER_FILE_UNKNOWN: Final = "file-unknown"
ANSWER_ALREADY_UPLOADING: Final = "already-uploading"

AnswerWord = Literal["file-unknown", "already-uploading"]

# Only ASCII digits: int() would also take "+5", "1_000" and non-ASCII digits.
_DECIMAL = re.compile(r"[0-9]+")
# Longest snippet of a bad value quoted back in an error message.
_QUOTE_MAX = 80


@dataclass(frozen=True, slots=True)
class CdfEntry:
    """One file of a checkout: its identity and its path inside the checkout."""

    sha: str
    size: int
    path: str
    line_number: int


class CdfError(ValueError):
    """A line of a Checkout Definition File is malformed."""

    def __init__(self, line_number: int, reason: str) -> None:
        super().__init__(f"line {line_number}: {reason}")
        self.line_number = line_number
        self.reason = reason


def _quote(value: str) -> str:
    if len(value) > _QUOTE_MAX:
        value = value[:_QUOTE_MAX] + "..."
    return repr(value)


def parse_cdf_line(raw: bytes, line_number: int) -> CdfEntry | None:
    """Parse one line (without its ``\\n``); None for a blank line.

    A trailing ``\\r`` is dropped so that CRLF files parse like LF files.
    """
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as ex:
        raise CdfError(line_number, f"not valid UTF-8 (byte {ex.start + 1})") from None
    if not line.strip():
        return None

    fields = line.split(" ", 2)
    if len(fields) < 3:
        raise CdfError(
            line_number,
            f"expected '<sha256> <size> <path>' separated by single spaces, "
            f"got {len(fields)} field(s): {_quote(line)}",
        )
    sha, size_text, path = fields
    if not is_checksum(sha):
        raise CdfError(
            line_number,
            f"checksum {_quote(sha)} is not a SHA-256 of 64 lowercase hex characters",
        )
    if not _DECIMAL.fullmatch(size_text):
        raise CdfError(line_number, f"size {_quote(size_text)} is not a whole number of bytes")
    if not path:
        raise CdfError(line_number, "path is empty")
    return CdfEntry(sha=sha, size=int(size_text), path=path, line_number=line_number)


def iter_cdf(lines: Iterable[bytes]) -> Iterator[CdfEntry]:
    """Parse CDF lines (each without its ``\\n``), skipping blank ones.

    Line numbers count every line, blank ones included, starting at 1, so that an
    error points at the line as an editor shows it.
    """
    for line_number, raw in enumerate(lines, start=1):
        entry = parse_cdf_line(raw, line_number)
        if entry is not None:
            yield entry


def parse_cdf(body: bytes) -> list[CdfEntry]:
    """Parse a whole CDF body; raises `CdfError` naming the first bad line."""
    return list(iter_cdf(body.split(b"\n")))


def format_answer_line(word: AnswerWord, path: str) -> str:
    """One line of a requirements answer, with its ``\\n``."""
    if word not in (ANSWER_FILE_UNKNOWN, ANSWER_ALREADY_UPLOADING):
        raise ValueError(f"unknown answer word {word!r}")
    if "\n" in path or "\r" in path:
        # Would split into two lines on the client; such a path can't come from a CDF.
        raise ValueError(f"path {path!r} contains a line break")
    return f"{word} {path}\n"


def format_answer(answers: Iterable[tuple[AnswerWord, str]]) -> str:
    """A whole requirements answer: one line per (word, path); empty when nothing to do."""
    return "".join(format_answer_line(word, path) for word, path in answers)
