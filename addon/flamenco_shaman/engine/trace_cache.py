"""Persistent cache of traces, so that resubmitting an unchanged project skips BAT.

An entry is keyed by the blend's absolute path and every option that shapes the trace
(project root, relative_only, exclude globs, pack name, BAT version). It holds what the
pipeline needs (every (source, pack path), the missing files, the blend's pack path)
and what proves it still holds:
- (size, mtime_ns) of every blend file BAT opened: the blend and its libraries;
- mtime_ns of the directory of every traced file and every missing file: a new frame
  in a sequence directory, a new UDIM tile, a file that appears, vanishes or is renamed
  all change their directory's mtime;
- that each missing file is still missing.
Checking an entry costs one stat per blend and per directory, against the seconds BAT
spends reading the blends. A trace in which BAT rewrote a blend is never cached (its
rewritten copies live in a temp dir that is gone after the submission), nor one whose
files changed while (or just before) it ran, since an mtime that recent can't tell
a later change apart.

One small JSON file per entry in `traces/` next to the checksum cache, written
atomically (concurrent submits each write a whole, equally valid trace); files unused
for `max_age` are pruned; an unreadable or malformed file is ignored and rewritten.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .cache import MAX_AGE_SECONDS, default_cache_dir, read_json, write_json_atomic

log = logging.getLogger(__name__)

DIRNAME = "traces"
FORMAT_VERSION = 2  # 2: excluded files
# Filesystem timestamps come from a coarse kernel clock that may lag time.time() by a
# tick; anything modified this close to the trace's start might have changed unseen.
RACY_NS = 100_000_000


@dataclass(frozen=True)
class CachedTrace:
    """A trace as the pipeline consumes it."""

    files: list[tuple[str, str]]  # (absolute source path, posix path in the pack)
    missing_files: list[str]
    blend_pack_path: str
    excluded_files: list[str] = field(default_factory=list)  # skipped by --exclude


def trace_key(
    blendfile: Path,
    project_root: Path,
    *,
    relative_only: bool,
    exclude: Sequence[str],
    pack_blend_name: str | None,
    bat_version: str,
) -> str:
    """Everything that shapes a trace besides the files themselves, as one string."""
    return json.dumps(
        [
            os.path.abspath(blendfile),
            os.path.abspath(project_root),
            bool(relative_only),
            list(exclude),
            pack_blend_name,
            bat_version,
        ]
    )


class TraceCache:
    """lookup() a validated trace; remember() a fresh one; both never raise on disk errors."""

    def __init__(self, directory: Path | None = None, max_age: float = MAX_AGE_SECONDS) -> None:
        self.directory = directory if directory is not None else default_cache_dir() / DIRNAME
        self.max_age = max_age
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        return self.directory / (hashlib.sha256(key.encode()).hexdigest() + ".json")

    def lookup(self, key: str) -> CachedTrace | None:
        """The cached trace for key if nothing it depends on changed, else None."""
        path = self._path(key)
        data = read_json(path)
        trace = _valid(data, key)
        if trace is None:
            self.misses += 1
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # used: spare it from pruning
        self.hits += 1
        return trace

    def remember(
        self,
        key: str,
        trace: CachedTrace,
        *,
        opened_blends: Iterable[str],
        started_ns: int,
    ) -> bool:
        """Store a fresh trace (BAT rewrote nothing) with its validators; False if unsafe."""
        recent = started_ns - RACY_NS
        blends: dict[str, list[int]] = {}
        for blend in opened_blends:
            try:
                st = os.stat(blend)
            except OSError:
                return False
            if st.st_mtime_ns >= recent:
                return False
            blends[blend] = [st.st_size, st.st_mtime_ns]
        dirs: dict[str, int] = {}
        # Excluded files count too: a new one (a frame) changes the reported count.
        for source in [src for src, _ in trace.files] + trace.missing_files + trace.excluded_files:
            directory = os.path.dirname(source)
            if directory in dirs:
                continue
            try:
                mtime_ns = os.stat(directory).st_mtime_ns
            except OSError:
                return False
            if mtime_ns >= recent:
                return False
            dirs[directory] = mtime_ns
        if any(os.path.lexists(p) for p in trace.missing_files):
            return False  # appeared while tracing
        entry = {
            "version": FORMAT_VERSION,
            "key": key,
            "files": trace.files,
            "missing": trace.missing_files,
            "excluded": trace.excluded_files,
            "blend_pack_path": trace.blend_pack_path,
            "blends": blends,
            "dirs": dirs,
        }
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self._path(key), entry)
            self._prune()
        except OSError as ex:
            log.warning("could not save trace cache in %s: %s", self.directory, ex)
            return False
        return True

    def _prune(self) -> None:
        cutoff = time.time() - self.max_age
        for entry in os.scandir(self.directory):
            with contextlib.suppress(OSError):
                if entry.name.endswith(".json") and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)


def _valid(data: object, key: str) -> CachedTrace | None:
    """The trace in data if it is well formed, for key, and still true on disk."""
    try:
        if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
            return None
        if data["key"] != key:
            return None  # a hash collision or a hand-edited file
        for blend, (size, mtime_ns) in data["blends"].items():
            st = os.stat(blend)
            if st.st_size != size or st.st_mtime_ns != mtime_ns:
                return None
        for directory, mtime_ns in data["dirs"].items():
            if os.stat(directory).st_mtime_ns != mtime_ns:
                return None
        missing = [str(p) for p in data["missing"]]
        if any(os.path.lexists(p) for p in missing):
            return None
        files = [(str(src), str(dst)) for src, dst in data["files"]]
        blend_pack_path = data["blend_pack_path"]
        if not isinstance(blend_pack_path, str) or not data["blends"]:
            return None
        excluded = [str(p) for p in data["excluded"]]
        return CachedTrace(files, missing, blend_pack_path, excluded)
    except OSError:
        return None  # a blend or directory vanished
    except (KeyError, TypeError, ValueError, AttributeError):
        log.warning("ignoring malformed trace cache entry for %s", key)
        return None
