"""What a submission sends: each path of the checkout (an Entry) and each identity
(a Blob, sent once however many paths share it), which of them the manager is known to
have (settled) and which must be asked about again (deferred).

No threads of its own and no I/O: the pipeline's threads share one Inventory, so every
method takes its lock; progress is reported through `on_settled`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

Key = tuple[str, int]  # (sha256 hex, size)


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
    settled: bool = False  # the manager has it (stored, uploaded, or proven by a checkout)

    @property
    def key(self) -> Key:
        return (self.sha, self.size)


class Inventory:
    """Entries by pack path, blobs by identity, and the identities deferred to a later round."""

    def __init__(self, on_settled: Callable[[int, int], None]) -> None:
        self._on_settled = on_settled  # (files, bytes) now known to be on the manager
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}
        self._blobs: dict[Key, Blob] = {}
        self._deferred: set[Key] = set()

    def add(self, pack_path: str, source: str | Path, temporary: bool) -> Entry | None:
        """A new entry, or None when this pack path is already in (BAT lists sequence
        frames once per user; one copy is enough)."""
        with self._lock:
            if pack_path in self._entries:
                return None
            entry = self._entries[pack_path] = Entry(source, pack_path, temporary)
            return entry

    def attach(self, entry: Entry) -> Blob | None:
        """File a hashed entry under its identity; the blob if that identity is new (so
        it must be negotiated), None if it joined a known one."""
        with self._lock:
            blob = self._blobs.get(entry.key)
            if blob is None:
                blob = self._blobs[entry.key] = Blob(entry.sha, entry.size, [entry])
                return blob
            blob.entries.append(entry)
            joined_settled = blob.settled
        if joined_settled:
            self._on_settled(1, entry.size)
        return None

    def settle(self, blob: Blob) -> None:
        """The manager has this blob; count its files once."""
        self.settle_many([blob])

    def settle_many(self, blobs: list[Blob]) -> None:
        """`settle` for many blobs, counted in one report."""
        files = nbytes = 0
        with self._lock:
            for blob in blobs:
                if not blob.settled:
                    blob.settled = True
                    files += len(blob.entries)
                    nbytes += blob.size * len(blob.entries)
        if files:
            self._on_settled(files, nbytes)

    def reidentify(self, entry: Entry, sha: str, size: int, mtime_ns: int) -> Key:
        """Move a changed file to its new identity; returns the key that now needs sending."""
        with self._lock:
            old = self._blobs.get(entry.key)
            if old is not None and entry in old.entries:
                old.entries.remove(entry)
            entry.sha, entry.size, entry.mtime_ns = sha, size, mtime_ns
            blob = self._blobs.setdefault(entry.key, Blob(sha, size))
            blob.entries.append(entry)
            blob.settled = False
        return entry.key

    def defer(self, keys: Iterable[Key]) -> None:
        """Ask about these identities again in the next round."""
        with self._lock:
            self._deferred.update(keys)

    def take_round(self, pending: set[Key]) -> list[Blob]:
        """The blobs for the next round: `pending` and everything deferred, in key order
        (identities no entry has any more are dropped)."""
        with self._lock:
            keys = pending | self._deferred
            self._deferred.clear()
            return [
                self._blobs[k] for k in sorted(keys) if k in self._blobs and self._blobs[k].entries
            ]

    def deferred_paths(self) -> list[str]:
        with self._lock:
            return sorted(
                e.pack_path
                for k in self._deferred
                if k in self._blobs
                for e in self._blobs[k].entries
            )

    def unsettle_all(self) -> set[Key]:
        """Forget what the manager was thought to have (its checkout said otherwise)."""
        with self._lock:
            for blob in self._blobs.values():
                blob.settled = False
            return set(self._blobs)

    def entries(self) -> list[Entry]:
        with self._lock:
            return list(self._entries.values())

    def entries_of(self, blob: Blob) -> list[Entry]:
        with self._lock:
            return list(blob.entries)

    def checkout_files(self) -> list[dict[str, str | int]]:
        """The checkout request's file list, by pack path."""
        with self._lock:
            entries = sorted(self._entries.values(), key=lambda e: e.pack_path)
        return [{"sha": e.sha, "size": e.size, "path": e.pack_path} for e in entries]
