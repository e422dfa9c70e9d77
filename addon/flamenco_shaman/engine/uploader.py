"""Upload workers: stream files to the manager, retry what a restart or a dropped
connection interrupted, defer what the manager says to send later.

Small 'unknown' files go many to a request while the manager has the batch extension
(the first 404/405 switches it off for the rest of the submission), the others one
request per file. Each worker has its own connection. Both kinds of request read the
answer's status through one `classify()`.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .batching import SERVER_MAX_FILE_SIZE, BatchBody, split_batches
from .client import ManagerClient, UploadInterrupted
from .errors import SubmitCancelled, SubmitError
from .hashing import stat_key
from .inventory import Blob, Entry, Inventory, Key
from .outcome import Outcome, classify
from .progress import ProgressTracker
from .runstate import POLL, RunState
from .upload import FileBody, FileChanged, UploadCancelled

log = logging.getLogger(__name__)

UPLOAD_RETRY_DELAYS = (0.25, 0.5, 1.0)  # per request, on 5xx / dropped connection


@dataclass
class UploadTask:
    """One file (`as_batch` False, one blob) or small files for one batch request."""

    blobs: list[Blob]
    as_batch: bool
    can_defer: bool


class Uploader:
    """N worker threads taking UploadTasks; `wait()` returns when all queued are done."""

    def __init__(
        self,
        client: ManagerClient,
        inventory: Inventory,
        run: RunState,
        tracker: ProgressTracker,
        rehash: Callable[[Entry], Key],
        *,
        workers: int,
        batch_max_file_size: int,
    ) -> None:
        self._client = client
        self._inventory = inventory
        self._run = run
        self._tracker = tracker
        self._rehash = rehash  # gives a changed file its new identity
        self._tasks: queue.Queue[UploadTask | None] = queue.Queue()  # None: stop
        self._done = threading.Condition()
        self._outstanding = 0
        # Files up to this size go in batch requests; -1: never (one request per file).
        self._batch_max = min(batch_max_file_size, SERVER_MAX_FILE_SIZE)
        self._batching = batch_max_file_size >= 0
        self.threads = [
            threading.Thread(target=self._work, name=f"shaman-upload-{i}", daemon=True)
            for i in range(max(1, workers))
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def close(self) -> None:
        """Ask every worker to stop once its current request is done."""
        for _ in self.threads:
            self._tasks.put(None)

    # --- queueing ----------------------------------------------------------------

    def queue_one(self, blob: Blob, *, can_defer: bool) -> None:
        self._put(UploadTask([blob], as_batch=False, can_defer=can_defer))

    def queue_unknown(self, blobs: list[Blob], *, can_defer: bool) -> None:
        """Small files in batches (while the manager takes them), the others one by one."""
        small = [b for b in blobs if self._batches_for(b)]
        for batch in split_batches(small, lambda b: b.size):
            self._put(UploadTask(batch, as_batch=True, can_defer=can_defer))
        for blob in blobs:
            if not self._batches_for(blob):
                self.queue_one(blob, can_defer=can_defer)

    def wait(self) -> None:
        """Until every queued task is done, or the run stops."""
        with self._done:
            while self._outstanding and not self._run.stopping():
                self._done.wait(POLL)

    def _batches_for(self, blob: Blob) -> bool:
        return self._batching and blob.size <= self._batch_max

    def _put(self, task: UploadTask) -> None:
        with self._done:
            self._outstanding += 1
        self._tasks.put(task)

    def _work(self) -> None:
        client = self._client.clone()
        try:
            while True:
                task = self._tasks.get()
                if task is None:
                    return
                try:
                    if self._run.stopping():
                        pass
                    elif task.as_batch:
                        self._run.run_or_stop(self._upload_batch, client, task)
                    else:
                        self._run.run_or_stop(self._upload, client, task)
                finally:
                    with self._done:
                        self._outstanding -= 1
                        self._done.notify_all()
        finally:
            client.close()

    # --- sending -------------------------------------------------------------------

    def _source_for(self, blob: Blob) -> Entry | None:
        """An entry of this blob whose file is unchanged; changed ones are re-hashed and
        deferred under their new identity."""
        for entry in self._inventory.entries_of(blob):
            if stat_key(entry.source) == (entry.size, entry.mtime_ns):
                return entry
            self._inventory.defer([self._rehash(entry)])
        return None

    def _streamed(self, nbytes: int, *, name: str) -> None:
        self._tracker.streamed(nbytes, name)

    def _upload(self, client: ManagerClient, task: UploadTask) -> None:
        (blob,) = task.blobs
        attempt = 0
        while not self._run.stopping():
            source = self._source_for(blob)
            if source is None:
                return  # every copy changed; their new identities are deferred
            name = source.pack_path
            body: FileBody | bytes = b""
            if blob.size:
                body = FileBody(
                    source.source,
                    blob.size,
                    source.mtime_ns,
                    cancel=self._run.stop,
                    on_bytes=functools.partial(self._streamed, name=name),
                )
            try:
                status, message = client.upload(
                    blob.sha, blob.size, body, filename=name, can_defer=task.can_defer
                )
            except UploadCancelled:
                raise SubmitCancelled() from None
            except FileChanged as ex:
                # _source_for() finds out what changed; a file that cannot be read at all
                # would look "changed" forever.
                attempt += 1
                if attempt > len(UPLOAD_RETRY_DELAYS):
                    raise SubmitError(f"cannot read {source.source}: {ex}") from None
                continue
            except UploadInterrupted as ex:
                status, message = 0, str(ex)
            finally:
                if isinstance(body, FileBody) and body.sent:
                    self._tracker.streamed(-body.sent, name)
            outcome = classify(status)
            if outcome is Outcome.STORED:
                self._tracker.uploaded(blob.size)
                self._inventory.settle(blob)
                return
            if outcome is Outcome.ALREADY_STORED:
                self._inventory.settle(blob)
                return
            if outcome is Outcome.DEFER:
                self._inventory.defer([blob.key])
                return
            if outcome is Outcome.REJECTED:
                if stat_key(source.source) != (source.size, source.mtime_ns):
                    continue
                raise SubmitError(
                    f"the manager rejected {name}: its bytes do not match their checksum "
                    f"(417: {message})"
                )
            if outcome is Outcome.RETRY:
                if attempt < len(UPLOAD_RETRY_DELAYS):
                    self._run.sleep(UPLOAD_RETRY_DELAYS[attempt])
                    attempt += 1
                    continue
                log.info("giving up on %s for this round: %s %s", name, status, message)
                self._inventory.defer([blob.key])
                return
            if outcome is Outcome.REFUSED:
                raise SubmitError(f"the manager refused the upload of {name} ({status})")
            raise SubmitError(f"the manager answered {status} to the upload of {name}: {message}")

    def _upload_batch(self, client: ManagerClient, task: UploadTask) -> None:
        """Send small files in one batch request; per file when the manager lacks batching."""
        blobs = task.blobs
        attempt = 0
        while blobs and not self._run.stopping():
            if not self._batching:
                for blob in blobs:
                    self.queue_one(blob, can_defer=task.can_defer)
                return
            files = []
            for blob in blobs:
                source = self._source_for(blob)  # changed files are re-hashed and deferred
                if source is not None:
                    files.append((blob, source.source, blob.sha, blob.size, source.mtime_ns))
            if not files:
                return
            body = BatchBody(files, cancel=self._run.stop, on_bytes=self._tracker.streamed)
            try:
                status, results, message = client.upload_batch(body)
            except UploadCancelled:
                raise SubmitCancelled() from None
            except UploadInterrupted as ex:
                status, results, message = 0, [], str(ex)
            finally:
                if body.streamed:
                    self._tracker.streamed(-body.streamed, "")
            outcome = classify(status)
            if outcome is Outcome.STORED:
                self._batch_answered(body, results, task.can_defer)
                return
            if outcome is Outcome.NO_BATCHES:
                # A manager without our extension (Flamenco's own, or an older one).
                log.info("the manager has no batch uploads (%s); one request per file", status)
                self._batching = False
                continue
            if outcome is Outcome.RETRY:
                if attempt < len(UPLOAD_RETRY_DELAYS):
                    self._run.sleep(UPLOAD_RETRY_DELAYS[attempt])
                    attempt += 1
                    continue
                log.info("giving up on a batch of %d for this round: %s", len(blobs), message)
                self._inventory.defer(b.key for b in blobs)
                return
            if outcome is Outcome.REFUSED:
                raise SubmitError(f"the manager refused a batch upload ({status})")
            raise SubmitError(
                f"the manager answered {status} to a batch upload of {len(files)} files: {message}"
            )

    def _batch_answered(
        self, body: BatchBody[Blob], results: list[dict[str, Any]], can_defer: bool
    ) -> None:
        if len(results) != len(body.sent):
            raise SubmitError(
                f"the manager answered a batch of {len(body.sent)} files with "
                f"{len(results)} results"
            )
        again = list(body.skipped)  # changed meanwhile: the per-file path re-hashes them
        for blob, result in zip(body.sent, results, strict=True):
            if (result.get("sha"), result.get("size")) != blob.key:
                raise SubmitError("the manager's batch answer does not match the files sent")
            status = result.get("status")
            if status == "stored":
                self._tracker.uploaded(blob.size)
                self._inventory.settle(blob)
            elif status == "exists":
                self._inventory.settle(blob)
            elif status == "rejected":
                entries = self._inventory.entries_of(blob)
                if any(stat_key(e.source) != (e.size, e.mtime_ns) for e in entries):
                    again.append(blob)
                    continue
                name = entries[0].pack_path if entries else blob.sha
                raise SubmitError(
                    f"the manager rejected {name}: its bytes do not match their checksum "
                    f"({result.get('message', 'rejected')})"
                )
            else:
                raise SubmitError(f"the manager sent an unreadable batch status: {status!r}")
        for blob in again:
            self.queue_one(blob, can_defer=can_defer)
