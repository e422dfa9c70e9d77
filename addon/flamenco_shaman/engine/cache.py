"""Persistent SHA-256 cache, keyed by absolute path, size and mtime in nanoseconds.

One JSON file per project root in the user's cache directory (`for_project`), so that a
submission reads, and rewrites, only its own project's entries: with one file for every
project, each submission loaded everything hashed on this machine in 60 days (a
resubmission of 10,000 unchanged files spent about as long loading 60,000 entries as
replaying its trace). Saving merges with what is on disk (another submit may have saved
meanwhile) and replaces the file atomically, so concurrent submits never lose each
other's entries nor leave a half-written file. Entries unused for `max_age` are pruned,
and so are the files of projects not submitted for that long; a corrupt file is ignored
and rewritten.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from ..protocol import is_checksum

log = logging.getLogger(__name__)

ENV_VAR = "FLAMENCO_SHAMAN_CACHE_DIR"
PROJECTS_DIRNAME = "checksums"  # one file per project root in here
LEGACY_FILENAME = "checksums.json"  # the one file for every project of earlier versions
FORMAT_VERSION = 1
MAX_AGE_SECONDS = 60 * 24 * 3600
# A hit refreshes an entry's last-used time only when it is older than this, so that
# resubmitting an unchanged project doesn't rewrite the whole file just to say "used".
REFRESH_SECONDS = 24 * 3600

# path -> [size, mtime_ns, sha256, last used (unix time)]
Entry = list


def default_cache_dir() -> Path:
    """$FLAMENCO_SHAMAN_CACHE_DIR, else the platform's per-user cache directory."""
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override)
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "flamenco-shaman" / "cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "flamenco-shaman"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "flamenco-shaman"


def project_cache_path(project_root: Path, directory: Path | None = None) -> Path:
    """The checksum file of the project under `project_root` (any path it submits, a
    linked library outside the root too, is kept there)."""
    key = hashlib.sha256(os.fsencode(os.path.abspath(project_root))).hexdigest()[:24]
    return (directory or default_cache_dir()) / PROJECTS_DIRNAME / f"{key}.json"


class ChecksumCache:
    """Thread-safe map (path, size, mtime_ns) -> sha256, loaded once and saved on demand."""

    def __init__(self, path: Path, max_age: float = MAX_AGE_SECONDS) -> None:
        self.path = path
        self.max_age = max_age
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = self._read()
        self._touched: set[str] = set()
        self.hits = 0
        self.misses = 0

    @classmethod
    def for_project(cls, project_root: Path, directory: Path | None = None) -> ChecksumCache:
        """The cache of one project's submissions (see `project_cache_path`)."""
        directory = directory or default_cache_dir()
        with contextlib.suppress(OSError):  # superseded by the per-project files
            os.unlink(directory / LEGACY_FILENAME)
        return cls(project_cache_path(project_root, directory))

    def lookup(self, abspath: str, size: int, mtime_ns: int) -> str | None:
        with self._lock:
            entry = self._entries.get(abspath)
            if entry is None or entry[0] != size or entry[1] != mtime_ns:
                self.misses += 1
                return None
            now = time.time()
            if now - entry[3] >= REFRESH_SECONDS:
                entry[3] = now
                self._touched.add(abspath)
            self.hits += 1
            return entry[2]

    def store(self, abspath: str, size: int, mtime_ns: int, sha: str) -> None:
        with self._lock:
            self._entries[abspath] = [size, mtime_ns, sha, time.time()]
            self._touched.add(abspath)

    def save(self) -> None:
        """Merge our changes into the file on disk; never raises (a cache is optional)."""
        try:
            self._save()
        except OSError as ex:
            log.warning("could not save checksum cache %s: %s", self.path, ex)

    def _save(self) -> None:
        if not self._touched:
            return  # nothing new; pruning waits for the next save that writes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, file_lock(self.path.with_name(self.path.name + ".lock")):
            merged = self._read()
            for key in self._touched:
                ours = self._entries[key]
                theirs = merged.get(key)
                if theirs is None or ours[3] >= theirs[3]:
                    merged[key] = ours
            cutoff = time.time() - self.max_age
            merged = {k: v for k, v in merged.items() if v[3] >= cutoff}
            write_json_atomic(self.path, {"version": FORMAT_VERSION, "entries": merged})
            self._entries = merged
            self._touched.clear()
        self._prune_projects(cutoff)

    def _prune_projects(self, cutoff: float) -> None:
        """Remove the files of projects not saved since `cutoff`: all their entries are
        older than max_age (a used project's file is rewritten at least daily, see
        REFRESH_SECONDS). Their lock files go with them."""
        with contextlib.suppress(OSError), os.scandir(self.path.parent) as entries:
            for entry in entries:
                if not entry.name.endswith(".json") or entry.path == str(self.path):
                    continue
                with contextlib.suppress(OSError):
                    if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                        os.unlink(entry.path)
                        os.unlink(entry.path + ".lock")

    def _read(self) -> dict[str, Entry]:
        data = read_json(self.path)
        if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
            return {}
        entries = data.get("entries")
        if not isinstance(entries, dict):
            return {}
        return {k: v for k, v in entries.items() if _valid_entry(v)}


def _valid_entry(value: object) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 4
        and isinstance(value[0], int)
        and isinstance(value[1], int)
        and is_checksum(value[2])
        and isinstance(value[3], int | float)
    )


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Serialise read-merge-write between processes where the OS offers a lock."""
    try:
        import fcntl
    except ImportError:  # Windows: os.replace still keeps the file whole
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_json(path: Path) -> object:
    """The decoded file, or None when it is absent or unreadable (a cache is optional)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as ex:
        log.warning("ignoring unreadable cache file %s: %s", path, ex)
        return None


def write_json_atomic(path: Path, data: object) -> None:
    """Replace path with data as JSON; readers see the old file or the new one, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            # dumps() encodes in one C call; dump() writes chunk by chunk, 2-7x slower
            # for the tens of thousands of entries of a big project.
            f.write(json.dumps(data))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
