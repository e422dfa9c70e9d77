"""Receiving a batch upload (our extension): many small files in one streamed body.

The body is a sequence of records, each an ASCII header line `<sha256 hex> <size>\\n`
followed by exactly `size` bytes. Records are read whole (each at most
MAX_RECORD_SIZE), gathered into commit groups and stored by `batch.RecordCommitter`
in one thread hop per group, while the next group is being read. A malformed stream
raises InvalidRequest naming the record; the records before it that were complete are
still stored (they are verified blobs), and no temp file ever remains.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from ..bodypace import BodyPace
from ..errors import BodyTimeout, ClientDisconnected, InvalidRequest
from ..paths import validate_checksum
from ..protocol import BATCH_MAX_HEADER_LINE, BATCH_MAX_RECORD_SIZE, BATCH_MAX_RECORDS
from .batch import Record
from .sinks import Reader

if TYPE_CHECKING:
    from .facade import FileStore

# The wire format's limits, shared with the engine.
MAX_RECORD_SIZE = BATCH_MAX_RECORD_SIZE  # bigger files use the single-file upload
MAX_RECORDS = BATCH_MAX_RECORDS  # per request
MAX_HEADER_LINE = BATCH_MAX_HEADER_LINE  # bytes, newline included
GROUP_RECORDS = 256  # records per commit group (one thread hop, two syncs)
GROUP_BYTES = 8 * 1024 * 1024
READ_SIZE = 256 * 1024


class BatchReceiver:
    """Reads one batch body and stores its records.

    `records_read` and `records_stored` (blobs this request wrote) are for the access log.
    """

    def __init__(
        self, store: FileStore, read: Reader, timeout: float, pace: BodyPace | None = None
    ) -> None:
        self._store = store
        self._read = read
        self._timeout = timeout
        self._pace = pace
        self._received = 0  # body bytes read so far
        self._buf = bytearray()
        self._eof = False
        self.records_read = 0
        self.records_stored = 0

    async def run(self) -> list[dict[str, object]]:
        """One result per record, in order: {"sha", "size", "status"[, "message"]}."""
        results: list[tuple[str, str]] = []
        records: list[Record] = []
        group: list[Record] = []
        group_bytes = 0
        committing: asyncio.Future[list[tuple[str, str]]] | None = None
        try:
            while True:
                record = await self._next_record()
                if record is not None:
                    records.append(record)
                    group.append(record)
                    group_bytes += record[1]
                if group and (
                    record is None or len(group) >= GROUP_RECORDS or group_bytes >= GROUP_BYTES
                ):
                    # Read the next group while this one is written (one group in flight).
                    if committing is not None:
                        results += await committing
                    committing = asyncio.ensure_future(asyncio.to_thread(self._commit, group))
                    group, group_bytes = [], 0
                if record is None:
                    break
            if committing is not None:
                results += await committing
                committing = None
        except BaseException:
            # Whatever went wrong after them, the complete records read so far are
            # verified and stored (or rejected) before the error is answered.
            with contextlib.suppress(Exception):  # the first error is the one to answer
                if committing is not None:
                    await asyncio.shield(committing)
                if group:
                    await asyncio.shield(asyncio.to_thread(self._commit, group))
            raise
        answer: list[dict[str, object]] = []
        for (sha, size, _), (status, message) in zip(records, results, strict=True):
            item: dict[str, object] = {"sha": sha, "size": size, "status": status}
            if message:
                item["message"] = message
            answer.append(item)
        return answer

    def _commit(self, group: list[Record]) -> list[tuple[str, str]]:
        results = self._store.commit_records(group)
        self.records_stored += sum(1 for status, _ in results if status == "stored")
        return results

    async def _next_record(self) -> Record | None:
        """The next complete record, or None at the clean end of the body."""
        index = self.records_read
        line = await self._header_line(index)
        if line is None:
            return None
        if index >= MAX_RECORDS:
            raise InvalidRequest(f"record {index}: a batch holds at most {MAX_RECORDS} records")
        parts = line.split(b" ")
        if len(parts) != 2:
            raise InvalidRequest(
                f"record {index}: header must be '<sha256> <size>', got {line!r:.80}"
            )
        try:
            sha = validate_checksum(parts[0].decode("ascii"), f"record {index} sha")
        except UnicodeDecodeError:
            raise InvalidRequest(f"record {index}: header is not ASCII") from None
        text = parts[1]
        if not text.isdigit() or len(text) > 20:
            raise InvalidRequest(f"record {index}: size must be decimal digits, got {text!r:.40}")
        size = int(text)
        if size > MAX_RECORD_SIZE:
            raise InvalidRequest(
                f"record {index}: size {size} is over the batch limit of {MAX_RECORD_SIZE} "
                "bytes; upload it with POST shaman/files/{checksum}/{filesize}"
            )
        data = await self._exactly(size, index)
        self.records_read += 1
        return sha, size, data

    async def _header_line(self, index: int) -> bytes | None:
        while True:
            end = self._buf.find(b"\n", 0, MAX_HEADER_LINE)
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[: end + 1]
                return line
            if len(self._buf) >= MAX_HEADER_LINE:
                raise InvalidRequest(
                    f"record {index}: header line longer than {MAX_HEADER_LINE} bytes"
                )
            if self._eof:
                if not self._buf:
                    return None
                raise InvalidRequest(f"record {index}: body ends inside the header line")
            await self._fill()

    async def _exactly(self, size: int, index: int) -> bytes:
        while len(self._buf) < size:
            if self._eof:
                raise InvalidRequest(
                    f"record {index}: body ends after {len(self._buf)} of {size} bytes"
                )
            await self._fill(size - len(self._buf))
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    async def _fill(self, want: int = READ_SIZE) -> None:
        timeout, pace, received = self._timeout, self._pace, self._received
        wait = timeout if pace is None else pace.wait_limit(received, timeout)
        try:
            chunk = await asyncio.wait_for(self._read(max(want, READ_SIZE)), wait)
        except TimeoutError:
            if pace is not None and pace.missed(received):
                raise pace.too_slow(received) from None
            raise BodyTimeout(f"no body data for {timeout:g} s; batch aborted") from None
        except ConnectionError:
            raise ClientDisconnected(received, None) from None
        if chunk:
            self._received += len(chunk)
            self._buf += chunk
        else:
            self._eof = True
