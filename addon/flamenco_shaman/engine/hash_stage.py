"""The hash stage: traced files in, identities (sha, size) out, on a pool of threads.

Each file is statted once; that stat serves progress and the checksum-cache lookup.
Cache hits are resolved on the caller's thread and handed on in one piece, misses are
hashed in the pool (one worker per core). The negotiator reads the results from
`hashed`, which ends with None once tracing is done and every hash has finished.
"""

from __future__ import annotations

import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor

from .cache import ChecksumCache
from .hashing import identify, stat_key
from .inventory import Entry, Inventory, Key
from .progress import ProgressTracker
from .runstate import RunState

# What the hash stage hands over: entries with their identity; None once all are hashed.
HashedQueue = queue.Queue[list[Entry] | None]


class HashStage:
    def __init__(
        self,
        inventory: Inventory,
        run: RunState,
        tracker: ProgressTracker,
        cache: ChecksumCache | None,
        *,
        workers: int | None,
    ) -> None:
        self._inventory = inventory
        self._run = run
        self._tracker = tracker
        self._cache = cache
        self._lock = threading.Lock()
        self._pending = 0
        self._tracing_done = False
        self.hashed: HashedQueue = queue.Queue()
        self.files_hashed = 0  # read from disk; the others came from the checksum cache
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, workers or os.cpu_count() or 1),
            thread_name_prefix="shaman-hash",
        )

    def close(self) -> None:
        """Drop queued work, wait for running hashes (they stop at the next block)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def add(self, entries: list[Entry]) -> None:
        hits: list[Entry] = []
        hit_bytes = 0
        for entry in entries:
            try:
                st: os.stat_result | None = os.stat(entry.source)
            except OSError:
                st = None  # the hash reports it precisely
            cache = None if entry.temporary else self._cache
            if st is not None and cache is not None:
                sha = cache.lookup(os.path.abspath(entry.source), st.st_size, st.st_mtime_ns)
                if sha is not None:
                    entry.sha, entry.size, entry.mtime_ns = sha, st.st_size, st.st_mtime_ns
                    entry.from_cache = True
                    hit_bytes += st.st_size
                    hits.append(entry)
                    continue
            with self._lock:
                self._pending += 1
            self._tracker.discovered(st.st_size if st is not None else 0, entry.pack_path)
            self._pool.submit(self._run.run_or_stop, self._hash, entry, st)
        if hits:
            self._tracker.discovered_hashed(hit_bytes, hits[-1].pack_path, len(hits))
            self.hashed.put(hits)  # queued before tracing_done() can queue the end

    def tracing_done(self) -> None:
        with self._lock:
            self._tracing_done = True
            if self._pending == 0:
                self.hashed.put(None)

    def _hash(self, entry: Entry, st: os.stat_result | None = None) -> None:
        try:
            if self._run.stopping():
                return
            name = entry.pack_path
            ident = identify(
                entry.source,
                None if entry.temporary else self._cache,
                self._run.stop,
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
            self.hashed.put([entry])
        finally:
            with self._lock:
                self._pending -= 1
                if self._tracing_done and self._pending == 0:
                    self.hashed.put(None)

    def rehash(self, entry: Entry) -> Key:
        """Give a changed file its new identity; returns the key that now needs sending."""
        ident = identify(entry.source, None if entry.temporary else self._cache, self._run.stop)
        return self._inventory.reidentify(entry, ident.sha, ident.size, ident.mtime_ns)

    def rehash_changed(self) -> set[Key]:
        """Re-hash every file changed since its identity was taken; their new keys."""
        changed: set[Key] = set()
        for entry in self._inventory.entries():
            if self._run.stopping():
                break
            if stat_key(entry.source) != (entry.size, entry.mtime_ns):
                changed.add(self.rehash(entry))
        self._run.check()
        return changed
