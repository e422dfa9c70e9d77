"""What the status of an upload answer means, for single and batch uploads alike."""

from __future__ import annotations

import enum

from .client import upload_stored


class Outcome(enum.Enum):
    """What an upload's HTTP status means for the file(s) sent."""

    STORED = "stored"  # any 2xx but 208: 204 per the spec, 200 from Flamenco's Go server
    ALREADY_STORED = "already stored"  # 208
    DEFER = "defer"  # 425: another client is uploading it; ask again later
    REJECTED = "rejected"  # 417: the bytes do not match their checksum
    RETRY = "retry"  # 5xx, or 0 for a connection that broke: worth another attempt
    NO_BATCHES = "no batches"  # 404/405: a manager without the batch extension
    REFUSED = "refused"  # 401/403: token missing or wrong
    FAILED = "failed"  # anything else


def classify(status: int) -> Outcome:
    """The one reading of an upload answer's status (0: the connection broke)."""
    if upload_stored(status):
        return Outcome.STORED
    if status == 208:
        return Outcome.ALREADY_STORED
    if status == 425:
        return Outcome.DEFER
    if status == 417:
        return Outcome.REJECTED
    if status == 0 or status >= 500:
        return Outcome.RETRY
    if status in (404, 405):
        return Outcome.NO_BATCHES
    if status in (401, 403):
        return Outcome.REFUSED
    return Outcome.FAILED
