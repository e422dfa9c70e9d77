"""Hash -> negotiate -> upload, overlapping: the moving parts between tracing and checkout.

Threads, one job each:
- a hash pool (hash_stage.py, one worker per core) turns traced files into identities (sha, size);
- the negotiator (negotiator.py) asks the manager about them in rounds and queues what
  it lacks, so uploading starts while hashing continues;
- N upload workers (uploader.py) stream files to the manager.
They share one Inventory (what is sent, inventory.py) and one RunState: any error or
cancel stops every loop.

Optimistic checkout: files whose identity came from the checksum cache (unchanged since
an earlier submission) are held back by the negotiator. If every file is such a hit,
nothing is negotiated and the checkout request goes out at once: on a resubmission of an
unchanged project the manager has everything, and the checkout itself proves it (it
touches every blob). If it does not (GC'd blobs, another manager), the checkout answers
424 and creates nothing; the submission then asks about every file (`renegotiate_all`)
and uploads what is missing, the normal way.
"""

from __future__ import annotations

import threading
import time

from .cache import ChecksumCache
from .client import ManagerClient
from .errors import SubmitError
from .hash_stage import HashStage
from .inventory import Inventory
from .negotiator import MAX_ROUNDS, Negotiator
from .progress import ProgressTracker
from .runstate import POLL, RunState
from .trace import TracedFile
from .uploader import Uploader

JOIN_TIMEOUT = 1.0  # how long close() waits for a thread stuck in an HTTP call


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
        self._run = RunState(cancel)
        self._inventory = Inventory(on_settled=tracker.settled)
        self._hasher = HashStage(self._inventory, self._run, tracker, cache, workers=hash_workers)
        self._uploader = Uploader(
            client,
            self._inventory,
            self._run,
            tracker,
            self._hasher.rehash,
            workers=uploads,
            batch_max_file_size=batch_max_file_size,
        )
        self._negotiator = Negotiator(
            client,
            self._inventory,
            self._uploader,
            self._run,
            tracker,
            self._hasher.hashed,
            optimistic=optimistic,
        )
        self._coordinator = threading.Thread(
            target=self._run.run_or_stop,
            args=(self._negotiator.run,),
            name="shaman-negotiate",
            daemon=True,
        )
        self._started = False

    # --- lifecycle -----------------------------------------------------------

    def __enter__(self) -> Pipeline:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self._uploader.start()
        self._coordinator.start()
        self._started = True

    def close(self) -> None:
        """Stop every thread; safe to call at any point, also after an error."""
        self._run.stop.set()
        self._hasher.close()
        self._uploader.close()
        if self._started:
            self._hasher.hashed.put(None)
            # A thread waiting for an HTTP answer only notices the stop flag afterwards; it
            # is a daemon that no longer reads any file, so don't let it delay a cancel.
            deadline = time.monotonic() + JOIN_TIMEOUT
            for thread in [self._coordinator, *self._uploader.threads]:
                thread.join(max(0.0, deadline - time.monotonic()))

    # --- input ---------------------------------------------------------------

    def add(self, traced: TracedFile) -> None:
        """Called from BAT's transfer thread for each file of the pack."""
        self.add_many([traced])

    def add_many(self, files: list[TracedFile]) -> None:
        """add() for several files at once (a replayed trace comes in chunks)."""
        self._run.check()
        fresh = [
            entry
            for traced in files
            if (entry := self._inventory.add(traced.pack_path, traced.source, traced.temporary))
        ]
        self._hasher.add(fresh)

    def tracing_done(self) -> None:
        self._hasher.tracing_done()

    # --- results ---------------------------------------------------------------

    def finish(self) -> None:
        """Wait for all hashing, negotiating and uploading; raise what went wrong."""
        self.tracing_done()
        while self._coordinator.is_alive():
            self._coordinator.join(POLL)
            self._run.check()
        self._run.check()
        # Files that changed after they were negotiated: never check out a stale identity.
        for _ in range(MAX_ROUNDS):
            changed = self._hasher.rehash_changed()
            if not changed:
                return
            self._run.run_or_stop(self._negotiator.rounds, changed, 2)
            self._run.check()
        raise SubmitError("files keep changing while they are sent; try again when they are saved")

    @property
    def optimistic(self) -> bool:
        """True when every file was a cache hit and none was asked about."""
        return self._negotiator.held_back_everything

    def checkout_accepted(self) -> None:
        """The checkout succeeded: the held-back files, if any, are on the manager."""
        self._negotiator.held_back_confirmed()

    def renegotiate_all(self) -> None:
        """After a 424 on checkout: ask again about every file and upload what is missing."""
        self._negotiator.forget_held_back()
        keys = self._inventory.unsettle_all()
        self._run.run_or_stop(self._negotiator.rounds, keys, 2)
        self._run.check()

    def checkout_files(self) -> list[dict[str, str | int]]:
        return self._inventory.checkout_files()

    @property
    def files_hashed(self) -> int:
        """Files read from disk; the others came from the checksum cache."""
        return self._hasher.files_hashed

    def check(self) -> None:
        """Raise SubmitCancelled or the pipeline's first error, if any."""
        self._run.check()
