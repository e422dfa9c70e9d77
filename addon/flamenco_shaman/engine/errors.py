"""The two ways a submission can end without a result: it failed, or it was cancelled."""

from __future__ import annotations


class SubmitError(Exception):
    """The submission failed; str() is one line an artist can act on."""


class SubmitCancelled(Exception):
    """cancel() was called; nothing was checked out."""

    def __init__(self, message: str = "submission cancelled") -> None:
        super().__init__(message)
