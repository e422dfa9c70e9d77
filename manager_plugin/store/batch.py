"""Committing a group of small files received whole in memory (a batch upload's records).

Every record is verified in memory, then stored the way any small upload is: as a
`.pending` blob (written, not synced), which the first checkout that links it makes
durable as part of one group (see `pending`).
"""

from __future__ import annotations

import hashlib

from ..errors import StorageFull
from .pending import PendingBlobs, Presence
from .temps import discard, is_disk_full

Record = tuple[str, int, bytes]  # (sha, size, the bytes)
RecordResult = tuple[str, str]  # ("stored" | "exists" | "rejected", message)


class RecordCommitter:
    """Stores groups of records as pending blobs."""

    def __init__(self, pending: PendingBlobs) -> None:
        self._pending = pending

    def commit(self, records: list[Record]) -> list[RecordResult]:
        """One (status, message) per record: "stored" (written by this call), "exists"
        (already stored, or stored meanwhile) or "rejected" (the bytes do not match the
        declared size or SHA-256; nothing kept). Raises StorageFull (no temp left)."""
        pending = self._pending
        results: list[RecordResult] = [("", "")] * len(records)
        # Every temp is written before any is linked: a group that does not fit on the
        # disk is refused whole (507), with nothing of it kept.
        temps: list[tuple[int, int, str]] = []  # (record index, fd, temp)
        try:
            for index, (sha, size, data) in enumerate(records):
                rejected = _verify(sha, size, data)
                if rejected:
                    results[index] = ("rejected", rejected)
                elif pending.presence(sha, size, touch=True) is not Presence.MISSING:
                    results[index] = ("exists", "")
                else:
                    temps.append((index, *pending.written_temp(sha, size, [data])))
        except OSError as exc:
            for _index, fd, temp in temps:
                discard(fd, temp)
            if is_disk_full(exc):
                raise StorageFull("storage is full; batch records discarded") from exc
            raise
        for n, (index, fd, temp) in enumerate(temps):
            sha, size, _data = records[index]
            try:
                stored = pending.link(sha, size, fd, temp)
            except BaseException:
                for _index, later_fd, later_temp in temps[n + 1 :]:
                    discard(later_fd, later_temp)
                raise
            results[index] = ("stored", "") if stored else ("exists", "")
        return results


def _verify(sha: str, size: int, data: bytes) -> str:
    """Why the bytes are not the declared record, or "" when they are."""
    if len(data) != size:
        return f"received {len(data)} bytes, declared {size}"
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha:
        return f"received bytes have SHA-256 {digest}, declared {sha}"
    return ""
