"""Asking the manager which files it lacks, in rounds, and handing those to the uploader.

First round, while hashing goes on: identities are batched into requirements requests
as they come in, and the 'unknown' ones are queued for upload at once, so uploading
starts while hashing continues. When everything is hashed, further rounds take what was
deferred ('uploading' answers, 425, exhausted retries, changed files): ask again, upload
'unknown' first and 'uploading' last, the last round without permission to defer.

Optimistic hold-back: identities from the checksum cache (files unchanged since an
earlier submission) are not asked about at first. If every file is such a hit, nothing
is negotiated and the checkout itself proves the manager has them (see pipeline.py);
the first cache miss ends the hold-back and what was held is negotiated with the rest.
"""

from __future__ import annotations

import queue
import threading

from .client import ManagerClient
from .errors import SubmitError
from .hash_stage import HashedQueue
from .inventory import Blob, Entry, Inventory, Key
from .progress import ProgressTracker
from .runstate import RunState
from .uploader import Uploader

BATCH_SIZE = 2000  # files per checkout/requirements request
BATCH_WAIT = 0.2  # seconds without new hashes before a partial batch is sent
MAX_ROUNDS = 6  # negotiate+upload rounds before giving up on deferred files
ROUND_DELAYS = (0.0, 0.0, 0.25, 0.5, 1.0, 2.0)  # pause before round n (index n-1)


class Negotiator:
    """Runs in its own thread (`run`) until every hashed file is on the manager."""

    def __init__(
        self,
        client: ManagerClient,
        inventory: Inventory,
        uploader: Uploader,
        run: RunState,
        tracker: ProgressTracker,
        hashed: HashedQueue,
        *,
        optimistic: bool,
    ) -> None:
        self._client = client
        self._inventory = inventory
        self._uploader = uploader
        self._run = run
        self._tracker = tracker
        self._hashed = hashed
        self._lock = threading.Lock()
        self._holding_back = optimistic  # until the first cache miss
        self._held: list[Blob] = []

    # --- the optimistic hold-back -----------------------------------------------------

    @property
    def held_back_everything(self) -> bool:
        """True when every file was a cache hit and none was asked about."""
        with self._lock:
            return bool(self._held)

    def held_back_confirmed(self) -> None:
        """The optimistic checkout succeeded: the held-back files are on the manager."""
        with self._lock:
            held, self._held = self._held, []
        self._inventory.settle_many(held)

    def forget_held_back(self) -> None:
        """The checkout refused: what was held back is asked about with everything else."""
        with self._lock:
            self._held = []

    def _hold_back(self, entry: Entry, blob: Blob) -> list[Blob] | None:
        """None when `blob` is held back; else the blobs to negotiate now (it, and what was
        held until this first cache miss)."""
        with self._lock:
            if not self._holding_back:
                return [blob]
            if entry.from_cache:
                self._held.append(blob)
                return None
            self._holding_back = False
            held, self._held = self._held, []
        return [*held, blob]

    # --- rounds ----------------------------------------------------------------------

    def run(self) -> None:
        """The first round as hashes arrive, then the later rounds."""
        batch: list[Blob] = []
        while not self._run.stopping():
            try:
                entries = self._hashed.get(timeout=BATCH_WAIT)
            except queue.Empty:
                if batch:
                    self._negotiate_streaming(batch)
                    batch = []
                continue
            if entries is None:
                break
            for entry in entries:
                blob = self._inventory.attach(entry)
                if blob is None:
                    continue
                now = self._hold_back(entry, blob)
                if now is None:
                    continue
                batch.extend(now)
                while len(batch) >= BATCH_SIZE:
                    self._negotiate_streaming(batch[:BATCH_SIZE])
                    batch = batch[BATCH_SIZE:]
        if self._run.stopping():
            return
        if batch:
            self._negotiate_streaming(batch)
        self._tracker.set_phase("uploading")
        self._uploader.wait()
        self.rounds(set(), 2)

    def _negotiate_streaming(self, blobs: list[Blob]) -> None:
        """First round: unknown files go to the uploaders now, 'uploading' ones wait."""
        answer = self._ask(blobs)
        unknown = []
        for blob in blobs:
            status = answer.get(blob.key)
            if status == "unknown":
                unknown.append(blob)
            elif status is not None:
                self._inventory.defer([blob.key])
            else:
                self._inventory.settle(blob)
        self._uploader.queue_unknown(unknown, can_defer=True)

    def rounds(self, pending: set[Key], first_round: int) -> None:
        """Later rounds: ask again about deferred files, upload unknown first, uploading last."""
        for rnd in range(first_round, MAX_ROUNDS + 1):
            blobs = self._inventory.take_round(pending)
            if not blobs or self._run.stopping():
                return
            self._run.sleep(ROUND_DELAYS[min(rnd - 1, len(ROUND_DELAYS) - 1)])
            can_defer = rnd < MAX_ROUNDS
            answer = self._ask(blobs)
            later = []
            unknown = []
            for blob in blobs:
                status = answer.get(blob.key)
                if status == "unknown":
                    unknown.append(blob)
                elif status is not None:
                    later.append(blob)
                else:
                    self._inventory.settle(blob)
            self._uploader.queue_unknown(unknown, can_defer=can_defer)
            self._uploader.wait()
            for blob in later:
                self._uploader.queue_one(blob, can_defer=can_defer)
            self._uploader.wait()
            pending = set()
        left = self._inventory.deferred_paths()
        if left and not self._run.stopping():
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
