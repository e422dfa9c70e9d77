"""The two ways a submission can end without a result: it failed, or it was cancelled."""

from __future__ import annotations

import re


class SubmitError(Exception):
    """The submission failed; str() is one line an artist can act on."""

    def __init__(self, message: str) -> None:
        # Messages quote servers and BAT; a status bar and a CLI want exactly one line.
        super().__init__(re.sub(r"\s*[\r\n]+\s*", " ", str(message)).strip())


class SubmitCancelled(Exception):
    """cancel() was called; nothing was checked out."""

    def __init__(self, message: str = "submission cancelled") -> None:
        super().__init__(message)
