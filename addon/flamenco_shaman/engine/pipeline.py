"""Hash -> negotiate -> upload, overlapping: the moving parts between tracing and checkout.

Threads:
- a hash pool (one worker per core) turns traced files into identities (sha, size);
- a coordinator batches identities into checkout/requirements requests as they come
  in and queues the 'unknown' ones for upload right away, so uploading starts while
  hashing continues. When everything is hashed it runs further rounds for what was
  deferred ('uploading' answers, 425, exhausted retries, changed files): ask again,
  upload 'unknown' first and 'uploading' last, the last round without permission to
  defer;
- N upload workers, each with its own connection, stream files to the manager: small
  'unknown' files many to a request when the manager has the batch extension (the
  first 404/405 switches that off for the rest of the submission), the others one
  request per file.
Any error or cancel sets one stop flag that every loop checks.

Optimistic checkout: files whose identity came from the checksum cache (unchanged
since an earlier submission) are not asked about at first. If every file of the
submission is such a hit, nothing is negotiated at all and the checkout request
goes out at once: on a resubmission of an unchanged project, the manager already has
everything, and the checkout itself proves it (it touches every blob). If it does
not (GC'd blobs, another manager), the checkout answers 424 and creates nothing;
the submission then asks about every file and uploads what is missing, the normal
way. The first cache miss ends the optimism: what was held back is negotiated with
the rest, so uploads still start while tracing and hashing go on.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .batching import SERVER_MAX_FILE_SIZE, BatchBody, split_batches
from .cache import ChecksumCache
from .client import ManagerClient, UploadInterrupted, upload_stored
from .errors import SubmitCancelled, SubmitError
from .hashing import identify, stat_key
from .progress import ProgressTracker
from .trace import TracedFile
from .upload import FileBody, FileChanged, UploadCancelled

log = logging.getLogger(__name__)

BATCH_SIZE = 2000  # files per checkout/requirements request
BATCH_WAIT = 0.2  # seconds without new hashes before a partial batch is sent
MAX_ROUNDS = 6  # negotiate+upload rounds before giving up on deferred files
UPLOAD_RETRY_DELAYS = (0.25, 0.5, 1.0)  # per-file retries on 5xx / dropped connection
ROUND_DELAYS = (0.0, 0.0, 0.25, 0.5, 1.0, 2.0)  # pause before round n (index n-1)
POLL = 0.1  # seconds between checks of the stop flag while waiting
JOIN_TIMEOUT = 1.0  # how long close() waits for a thread stuck in an HTTP call

Key = tuple[str, int]
_END = object()


@dataclass(eq=False)
class Entry:
    """One path in the checkout and the local file it comes from."""

    source: str | Path
    pack_path: str
    temporary: bool
    sha: str = ""
    size: int = 0
    mtime_ns: int = 0
    from_cache: bool = False  # identity from the checksum cache, not hashed now

    @property
    def key(self) -> Key:
        return (self.sha, self.size)


@dataclass(eq=False)
class Blob:
    """One identity and every entry that has it; uploaded once."""

    sha: str
    size: int
    entries: list[Entry] = field(default_factory=list)
    settled: bool = False


class Pipeline:
    """Feed it traced files with add(); finish() returns when all are on the manager."""

    def __init__(
        self,
        client: ManagerClient,
        *,
        cache: ChecksumCache | None,
        tracker: ProgressTracker,
        cancel: threading.Event,
        hash_workers: int | None = None,
        uploads: int = 4,
        batch_max_file_size: int = -1,
        optimistic: bool = True,
    ) -> None:
        self._client = client
        self._cache = cache
        self._tracker = tracker
        self._cancel = cancel
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}  # by pack path
        self._blobs: dict[Key, Blob] = {}
        self._hash_pending = 0
        self._tracing_done = False
        self._hashed: queue.Queue[Any] = queue.Queue()
        self._hasher = ThreadPoolExecutor(
            max_workers=max(1, hash_workers or os.cpu_count() or 1),
            thread_name_prefix="shaman-hash",
        )
        self._uploads: queue.Queue[Any] = queue.Queue()
        self._upload_cond = threading.Condition()
        self._upload_outstanding = 0
        self._deferred: set[Key] = set()
        # Files up to this size go in batch requests; -1: never (one request per file).
        self._batch_max = min(batch_max_file_size, SERVER_MAX_FILE_SIZE)
        self._batching = batch_max_file_size >= 0
        self._workers = [
            threading.Thread(target=self._upload_worker, name=f"shaman-upload-{i}", daemon=True)
            for i in range(max(1, uploads))
        ]
        self._coordinator = threading.Thread(
            target=self._guard, args=(self._coordinate,), name="shaman-negotiate", daemon=True
        )
        self._started = False
        self.files_hashed = 0
        # Holding back cache hits (see the module docstring) until the first miss.
        self._holding = optimistic
        self._held: list[Blob] = []

    # --- lifecycle -----------------------------------------------------------

    def __enter__(self) -> Pipeline:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        for worker in self._workers:
            worker.start()
        self._coordinator.start()
        self._started = True

    def close(self) -> None:
        """Stop every thread; safe to call at any point, also after an error."""
        self._stop.set()
        self._hasher.shutdown(wait=True, cancel_futures=True)
        for _ in self._workers:
            self._uploads.put(_END)
        if self._started:
            self._hashed.put(_END)
            # A thread waiting for an HTTP answer only notices the stop flag afterwards; it
            # is a daemon that no longer reads any file, so don't let it delay a cancel.
            deadline = time.monotonic() + JOIN_TIMEOUT
            for thread in [self._coordinator, *self._workers]:
                thread.join(max(0.0, deadline - time.monotonic()))

    # --- input ---------------------------------------------------------------

    def add(self, traced: TracedFile) -> None:
        """Called from BAT's transfer thread for each file of the pack."""
        self.add_many([traced])

    def add_many(self, files: list[TracedFile]) -> None:
        """add() for several files at once (a replayed trace comes in chunks).

        The one stat taken per file serves progress and the checksum-cache lookup; cache
        hits are resolved right here and handed to the negotiator in one piece (no hash
        pool), misses are hashed in the pool.
        """
        self._check()
        fresh: list[Entry] = []
        with self._lock:
            for traced in files:
                if traced.pack_path in self._entries:
                    continue  # BAT lists sequence frames once per user; one copy is enough
                entry = Entry(traced.source, traced.pack_path, traced.temporary)
                self._entries[traced.pack_path] = entry
                fresh.append(entry)
        hits: list[Entry] = []
        for entry in fresh:
            try:
                st: os.stat_result | None = os.stat(entry.source)
            except OSError:
                st = None  # the hash stage reports it precisely
            cache = None if entry.temporary else self._cache
            if st is not None and cache is not None:
                sha = cache.lookup(os.path.abspath(entry.source), st.st_size, st.st_mtime_ns)
                if sha is not None:
                    entry.sha, entry.size, entry.mtime_ns = sha, st.st_size, st.st_mtime_ns
                    entry.from_cache = True
                    self._tracker.discovered_hashed(st.st_size, entry.pack_path)
                    hits.append(entry)
                    continue
            with self._lock:
                self._hash_pending += 1
            self._tracker.discovered(st.st_size if st is not None else 0, entry.pack_path)
            self._hasher.submit(self._guard, self._hash, entry, st)
        if hits:
            self._hashed.put(hits)  # queued before tracing_done() can queue _END

    def tracing_done(self) -> None:
        with self._lock:
            self._tracing_done = True
            if self._hash_pending == 0:
                self._hashed.put(_END)

    # --- results ---------------------------------------------------------------

    def finish(self) -> None:
        """Wait for all hashing, negotiating and uploading; raise what went wrong."""
        self.tracing_done()
        while self._coordinator.is_alive():
            self._coordinator.join(POLL)
            self._check()
        self._check()
        # Files that changed after they were negotiated: never check out a stale identity.
        for _ in range(MAX_ROUNDS):
            changed = self._rehash_changed()
            if not changed:
                return
            self._guard(self._rounds, changed, 2)
            self._check()
        raise SubmitError("files keep changing while they are sent; try again when they are saved")

    @property
    def negotiated(self) -> bool:
        """False when every file was a cache hit and none was asked about (optimistic)."""
        with self._lock:
            return not self._held

    def settle_held(self) -> None:
        """The optimistic checkout succeeded: the held-back files are on the manager."""
        with self._lock:
            held, self._held = self._held, []
        for blob in held:
            self._settle(blob)

    def resend_all(self) -> None:
        """After a 424 on checkout: ask again about every file and upload what is missing."""
        with self._lock:
            self._held = []
            keys = set(self._blobs)
            for blob in self._blobs.values():
                blob.settled = False
        self._guard(self._rounds, keys, 2)
        self._check()

    def checkout_files(self) -> list[dict[str, Any]]:
        with self._lock:
            entries = sorted(self._entries.values(), key=lambda e: e.pack_path)
            return [{"sha": e.sha, "size": e.size, "path": e.pack_path} for e in entries]

    def check(self) -> None:
        """Raise SubmitCancelled or the pipeline's first error, if any."""
        self._check()

    def _check(self) -> None:
        if self._cancel.is_set():
            self._stop.set()
            raise SubmitCancelled()
        if self._error is not None:
            raise self._error
        if self._stop.is_set():
            raise SubmitCancelled()

    def _stopping(self) -> bool:
        if self._cancel.is_set():
            self._stop.set()
        return self._stop.is_set()

    def _guard(self, func: Any, *args: Any) -> None:
        """Run func; the first exception stops the whole pipeline and is kept for finish()."""
        try:
            func(*args)
        except SubmitCancelled:
            self._stop.set()
        except BaseException as ex:
            with self._lock:
                if self._error is None:
                    self._error = ex if isinstance(ex, SubmitError) else _wrap(ex)
            self._stop.set()

    # --- hashing ---------------------------------------------------------------

    def _hash(self, entry: Entry, st: os.stat_result | None = None) -> None:
        try:
            if self._stopping():
                return
            name = entry.pack_path
            ident = identify(
                entry.source,
                None if entry.temporary else self._cache,
                self._stop,
                lambda n: self._tracker.hashing(n, name),
                st,
            )
            if not ident.from_cache:
                with self._lock:
                    self.files_hashed += 1
            else:
                self._tracker.hashing(ident.size, name)
            entry.sha, entry.size, entry.mtime_ns = ident.sha, ident.size, ident.mtime_ns
            entry.from_cache = ident.from_cache
            self._tracker.hashed()
            self._hashed.put(entry)
        finally:
            with self._lock:
                self._hash_pending -= 1
                if self._tracing_done and self._hash_pending == 0:
                    self._hashed.put(_END)

    def _rehash_changed(self) -> set[Key]:
        changed: set[Key] = set()
        with self._lock:
            entries = list(self._entries.values())
        for entry in entries:
            if self._stopping():
                break
            if stat_key(entry.source) != (entry.size, entry.mtime_ns):
                changed.add(self._rehash(entry))
        self._check()
        return changed

    def _rehash(self, entry: Entry) -> Key:
        """Give a changed file its new identity; returns the key that now needs sending."""
        ident = identify(entry.source, None if entry.temporary else self._cache, self._stop)
        with self._lock:
            old = self._blobs.get(entry.key)
            if old is not None and entry in old.entries:
                old.entries.remove(entry)
            entry.sha, entry.size, entry.mtime_ns = ident.sha, ident.size, ident.mtime_ns
            blob = self._blobs.setdefault(entry.key, Blob(entry.sha, entry.size))
            blob.entries.append(entry)
            blob.settled = False
        return entry.key

    # --- negotiating -------------------------------------------------------------

    def _coordinate(self) -> None:
        batch: list[Blob] = []
        while not self._stopping():
            try:
                item = self._hashed.get(timeout=BATCH_WAIT)
            except queue.Empty:
                if batch:
                    self._negotiate_streaming(batch)
                    batch = []
                continue
            if item is _END:
                break
            for entry in item if isinstance(item, list) else (item,):
                blob = self._blob_for(entry)
                if blob is None:
                    continue
                if self._holding:
                    if entry.from_cache:
                        self._held.append(blob)
                        continue
                    # The first file the manager may lack: stop holding back.
                    with self._lock:
                        self._holding = False
                        held, self._held = self._held, []
                    batch.extend(held)
                batch.append(blob)
                while len(batch) >= BATCH_SIZE:
                    self._negotiate_streaming(batch[:BATCH_SIZE])
                    batch = batch[BATCH_SIZE:]
        if self._stopping():
            return
        if batch:
            self._negotiate_streaming(batch)
        self._tracker.set_phase("uploading")
        self._wait_uploads()
        self._rounds(set(), 2)

    def _blob_for(self, entry: Entry) -> Blob | None:
        """Attach a hashed entry to its blob; the blob if it is new (to be negotiated)."""
        with self._lock:
            blob = self._blobs.get(entry.key)
            if blob is not None:
                blob.entries.append(entry)
                if blob.settled:
                    self._tracker.settled(1, entry.size)
                return None
            blob = self._blobs[entry.key] = Blob(entry.sha, entry.size, [entry])
            return blob

    def _negotiate_streaming(self, blobs: list[Blob]) -> None:
        """First round: unknown files go to the uploaders now, 'uploading' ones wait."""
        answer = self._ask(blobs)
        unknown = []
        for blob in blobs:
            status = answer.get((blob.sha, blob.size))
            if status == "unknown":
                unknown.append(blob)
            elif status is not None:
                with self._lock:
                    self._deferred.add((blob.sha, blob.size))
            else:
                self._settle(blob)
        self._queue_unknown(unknown, can_defer=True)

    def _rounds(self, pending: set[Key], first_round: int) -> None:
        """Later rounds: ask again about deferred files, upload unknown first, uploading last."""
        for rnd in range(first_round, MAX_ROUNDS + 1):
            with self._lock:
                pending |= self._deferred
                self._deferred.clear()
                blobs = [
                    self._blobs[k]
                    for k in sorted(pending)
                    if k in self._blobs and self._blobs[k].entries
                ]
            if not blobs or self._stopping():
                return
            self._sleep(ROUND_DELAYS[min(rnd - 1, len(ROUND_DELAYS) - 1)])
            can_defer = rnd < MAX_ROUNDS
            answer = self._ask(blobs)
            later = []
            unknown = []
            for blob in blobs:
                status = answer.get((blob.sha, blob.size))
                if status == "unknown":
                    unknown.append(blob)
                elif status is not None:
                    later.append(blob)
                else:
                    self._settle(blob)
            self._queue_unknown(unknown, can_defer=can_defer)
            self._wait_uploads()
            for blob in later:
                self._queue_upload(blob, can_defer=can_defer)
            self._wait_uploads()
            pending = set()
        with self._lock:
            left = sorted(
                e.pack_path
                for k in self._deferred
                if k in self._blobs
                for e in self._blobs[k].entries
            )
        if left and not self._stopping():
            shown = ", ".join(left[:5]) + (f" and {len(left) - 5} more" if len(left) > 5 else "")
            raise SubmitError(
                f"could not upload {len(left)} file(s) after {MAX_ROUNDS} rounds: {shown}"
            )

    def _ask(self, blobs: list[Blob]) -> dict[Key, str]:
        files = [{"sha": b.sha, "size": b.size, "path": b.entries[0].pack_path} for b in blobs]
        answer: dict[Key, str] = {}
        for item in self._client.requirements(files):
            try:
                answer[(str(item["sha"]), int(item["size"]))] = str(item["status"])
            except (KeyError, TypeError, ValueError):
                raise SubmitError("the manager sent an unreadable requirements answer") from None
        return answer

    def _settle(self, blob: Blob) -> None:
        with self._lock:
            if blob.settled:
                return
            blob.settled = True
            files, nbytes = len(blob.entries), blob.size * len(blob.entries)
        self._tracker.settled(files, nbytes)

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stopping() and time.monotonic() < deadline:
            time.sleep(min(POLL, max(0.0, deadline - time.monotonic())))

    # --- uploading -----------------------------------------------------------------

    def _queue_upload(self, blob: Blob | list[Blob], *, can_defer: bool) -> None:
        """Queue one file, or a list of small files for one batch request."""
        with self._upload_cond:
            self._upload_outstanding += 1
        self._uploads.put((blob, can_defer))

    def _queue_unknown(self, blobs: list[Blob], *, can_defer: bool) -> None:
        """Small files in batches (while the manager takes them), the others one by one."""
        small = [b for b in blobs if self._batching and b.size <= self._batch_max]
        for batch in split_batches(small, lambda b: b.size):
            self._queue_upload(batch, can_defer=can_defer)
        for blob in blobs:
            if not (self._batching and blob.size <= self._batch_max):
                self._queue_upload(blob, can_defer=can_defer)

    def _wait_uploads(self) -> None:
        with self._upload_cond:
            while self._upload_outstanding and not self._stopping():
                self._upload_cond.wait(POLL)

    def _upload_worker(self) -> None:
        client = self._client.clone()
        try:
            while True:
                item = self._uploads.get()
                if item is _END:
                    return
                blob, can_defer = item
                try:
                    if self._stopping():
                        pass
                    elif isinstance(blob, list):
                        self._guard(self._upload_batch, client, blob, can_defer)
                    else:
                        self._guard(self._upload, client, blob, can_defer)
                finally:
                    with self._upload_cond:
                        self._upload_outstanding -= 1
                        self._upload_cond.notify_all()
        finally:
            client.close()

    def _source_for(self, blob: Blob) -> Entry | None:
        """An entry of this blob whose file is unchanged; changed ones are re-hashed and
        deferred under their new identity."""
        with self._lock:
            candidates = list(blob.entries)
        for entry in candidates:
            if stat_key(entry.source) == (entry.size, entry.mtime_ns):
                return entry
            new_key = self._rehash(entry)
            with self._lock:
                self._deferred.add(new_key)
        return None

    def _upload(self, client: ManagerClient, blob: Blob, can_defer: bool) -> None:
        attempt = 0
        while not self._stopping():
            source = self._source_for(blob)
            if source is None:
                return  # every copy changed; their new identities are deferred
            name = source.pack_path
            body: Any = b""
            if blob.size:
                body = FileBody(
                    source.source,
                    blob.size,
                    source.mtime_ns,
                    cancel=self._stop,
                    on_bytes=lambda n, name=name: self._tracker.streamed(n, name),
                )
            try:
                status, message = client.upload(
                    blob.sha, blob.size, body, filename=name, can_defer=can_defer
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
            if upload_stored(status):
                self._tracker.uploaded(blob.size)
                self._settle(blob)
                return
            if status == 208:
                self._settle(blob)
                return
            if status == 425:
                with self._lock:
                    self._deferred.add((blob.sha, blob.size))
                return
            if status == 417:
                if stat_key(source.source) != (source.size, source.mtime_ns):
                    continue
                raise SubmitError(
                    f"the manager rejected {name}: its bytes do not match their checksum "
                    f"(417: {message})"
                )
            if status == 0 or status >= 500:
                if attempt < len(UPLOAD_RETRY_DELAYS):
                    self._sleep(UPLOAD_RETRY_DELAYS[attempt])
                    attempt += 1
                    continue
                log.info("giving up on %s for this round: %s %s", name, status, message)
                with self._lock:
                    self._deferred.add((blob.sha, blob.size))
                return
            if status in (401, 403):
                raise SubmitError(f"the manager refused the upload of {name} ({status})")
            raise SubmitError(f"the manager answered {status} to the upload of {name}: {message}")

    def _upload_batch(self, client: ManagerClient, blobs: list[Blob], can_defer: bool) -> None:
        """Send small files in one batch request; per file when the manager lacks batching."""
        attempt = 0
        while blobs and not self._stopping():
            if not self._batching:
                for blob in blobs:
                    self._queue_upload(blob, can_defer=can_defer)
                return
            files = []
            for blob in blobs:
                source = self._source_for(blob)  # changed files are re-hashed and deferred
                if source is not None:
                    files.append((blob, source.source, blob.sha, blob.size, source.mtime_ns))
            if not files:
                return
            body = BatchBody(files, cancel=self._stop, on_bytes=self._tracker.streamed)
            try:
                status, results, message = client.upload_batch(body)
            except UploadCancelled:
                raise SubmitCancelled() from None
            except UploadInterrupted as ex:
                status, results, message = 0, [], str(ex)
            finally:
                if body.streamed:
                    self._tracker.streamed(-body.streamed, "")
            if upload_stored(status):
                self._batch_answered(body, results, can_defer)
                return
            if status in (404, 405):
                # A manager without our extension (Flamenco's own, or an older one).
                log.info("the manager has no batch uploads (%s); one request per file", status)
                self._batching = False
                continue
            if status == 0 or status >= 500:
                if attempt < len(UPLOAD_RETRY_DELAYS):
                    self._sleep(UPLOAD_RETRY_DELAYS[attempt])
                    attempt += 1
                    continue
                log.info("giving up on a batch of %d for this round: %s", len(blobs), message)
                with self._lock:
                    self._deferred.update((b.sha, b.size) for b in blobs)
                return
            if status in (401, 403):
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
            if (result.get("sha"), result.get("size")) != (blob.sha, blob.size):
                raise SubmitError("the manager's batch answer does not match the files sent")
            status = result.get("status")
            if status == "stored":
                self._tracker.uploaded(blob.size)
                self._settle(blob)
            elif status == "exists":
                self._settle(blob)
            elif status == "rejected":
                with self._lock:
                    entries = list(blob.entries)
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
            self._queue_upload(blob, can_defer=can_defer)


def _wrap(ex: BaseException) -> SubmitError:
    err = SubmitError(f"unexpected error: {type(ex).__name__}: {ex}")
    err.__cause__ = ex
    return err
