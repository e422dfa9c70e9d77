"""`X-Shaman-Original-Filename`: RFC 2047 encoded-words decoded the way Flamenco's Go server does.

Every Flamenco add-on since 3.6 encodes the header (`=?utf-8?q?linked=5Fcube=2Eblend?=`).
Go's mime.WordDecoder decodes each well-formed word, leaves a malformed word as it is,
drops the white space between two adjacent words, and fails on a charset other than
UTF-8, ISO-8859-1 and US-ASCII; Flamenco then answers 400. The name is only for logs.
"""

from __future__ import annotations

import base64
import binascii
import re

from ..errors import InvalidRequest

HEADER = "X-Shaman-Original-Filename"

_WORD = re.compile(r"=\?([^?]*)\?([^?])\?(.*?)\?=")
_CODECS = {"utf-8": "utf-8", "iso-8859-1": "latin-1", "us-ascii": "ascii"}
# Every character a "Q" word may hold: printable ASCII but `=`, tab, or `=` and two hex digits.
_Q_TEXT = re.compile(r"(?:[\t -<>-~]|=[0-9A-Fa-f]{2})*")


class UndecodableFilename(InvalidRequest):
    """The header names a charset Go's decoder does not know (Flamenco: 400)."""


def _q_bytes(text: str) -> bytes | None:
    """A "Q" word's bytes: `_` is a space, `=XX` a byte in hex, any other printable
    ASCII or tab itself; None for anything else (a lone `=`, a control character)."""
    if _Q_TEXT.fullmatch(text) is None:
        return None
    return binascii.a2b_qp(text, header=True)


def _word_bytes(encoding: str, text: str) -> bytes | None:
    """The word's bytes, or None when it is malformed (then it stays as written)."""
    if encoding in "bB":
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return None
    if encoding in "qQ":
        return _q_bytes(text)
    return None


def decode_original_filename(value: str) -> str:
    """The decoded file name; raises UndecodableFilename (a 400) for an unknown charset."""
    out: list[str] = []
    pos = 0
    between_words = False
    for match in _WORD.finditer(value):
        charset, encoding, text = match.groups()
        content = _word_bytes(encoding, text)
        if content is None:
            out.append(value[pos : match.end()])
            pos = match.end()
            between_words = False
            continue
        before = value[pos : match.start()]
        if not between_words or before.strip(" \t\r\n"):
            out.append(before)
        codec = _CODECS.get(charset.lower())
        if codec is None:
            raise UndecodableFilename(
                f"invalid {HEADER} header: {value!r:.300} (unhandled charset {charset!r})"
            )
        # Go writes UTF-8 bytes as they are; invalid ones show up as U+FFFD in its logs.
        out.append(content.decode(codec, errors="replace"))
        pos = match.end()
        between_words = True
    out.append(value[pos:])
    return "".join(out)


def filename_for_log(value: str) -> str:
    """The decoded name for a log line; the raw value when it cannot be decoded."""
    try:
        return decode_original_filename(value)
    except UndecodableFilename:
        return value
