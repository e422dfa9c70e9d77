"""Tracing with Blender Asset Tracer's packer: which files a blend needs, and where each
goes in the checkout.

BAT decides the layout (paths relative to the project root, `_outside_project/...`
for the rest) and rewrites blend files whose references must change. Instead of
copying, our file transferer (bat_packer.py) hands every file to a callback.
Rewritten blends live in BAT's temporary directory until the Tracer is closed, so keep
it open until they are uploaded.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

from ..bat_import import import_bat
from .bat_packer import packer_class
from .errors import SubmitCancelled, SubmitError
from .trace_cache import CachedTrace, TraceCache, trace_key
from .traced import PACK_ROOT, TracedFile, pack_relative

__all__ = ["PACK_ROOT", "TracedFile", "Tracer", "pack_relative"]

# BAT keeps opened blend files in a process-wide cache; two traces at once would close
# each other's files.
_TRACE_LOCK = threading.Lock()


class Tracer:
    """Runs BAT's packer for one blend; a context manager that removes BAT's temp files."""

    def __init__(
        self,
        blendfile: Path,
        project_root: Path,
        *,
        relative_only: bool = False,
        exclude: Sequence[str] = (),
        cancel: threading.Event | None = None,
        pack_blend_name: str | None = None,
        cache: TraceCache | None = None,
    ) -> None:
        if pack_blend_name is not None and (
            not pack_blend_name
            or "/" in pack_blend_name
            or "\\" in pack_blend_name
            or pack_blend_name in (".", "..")
        ):
            raise SubmitError(f"invalid name for the blend file in the pack: {pack_blend_name!r}")
        self.pack_blend_name = pack_blend_name
        self.blendfile = Path(os.path.abspath(blendfile))
        self.project_root = Path(os.path.abspath(project_root))
        self.relative_only = relative_only
        self.exclude = tuple(exclude)
        self._cancel = cancel or threading.Event()
        self._packer: Any = None
        self._lock = threading.Lock()
        self.blend_pack_path = ""
        self.missing_files: list[str] = []
        self.excluded_files: list[str] = []  # assets skipped because they match `exclude`
        self._cache = cache
        self.from_cache = False  # True when run() replayed a cached trace instead of BAT

    def __enter__(self) -> Tracer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            packer, self._packer = self._packer, None
        if packer is not None:
            packer.close()

    def abort(self) -> None:
        """Thread-safe: make a running trace stop at its next check."""
        with self._lock:
            if self._packer is not None:
                self._packer.abort("cancelled")

    def run(
        self,
        on_file: Callable[[TracedFile], None],
        on_files: Callable[[list[TracedFile]], None] | None = None,
    ) -> None:
        """Trace the blend, calling on_file (from BAT's transfer thread) for each file;
        a trace replayed from the cache goes to on_files in chunks, when given."""
        if not self.blendfile.is_file():
            raise SubmitError(f"blend file not found: {self.blendfile}")
        try:
            self.blendfile.relative_to(self.project_root)
        except ValueError:
            raise SubmitError(
                f"{self.blendfile.name} is not inside the project directory {self.project_root}"
            ) from None
        bat = import_bat()
        key = self._cache_key(bat)
        if self._cache is not None:
            cached = self._cache.lookup(key)
            if cached is not None:
                self._replay(cached, on_file, on_files)
                return
        started_ns = time.time_ns()
        traced: list[TracedFile] = []
        opened: list[str] = []

        def recording(file: TracedFile) -> None:
            traced.append(file)
            on_file(file)

        packer_type = packer_class(bat)
        with _TRACE_LOCK:
            with self._lock:
                self._packer = packer_type(
                    self.blendfile,
                    self.project_root,
                    str(PACK_ROOT),
                    relative_only=self.relative_only,
                    on_file=self._renaming(recording),
                )
                packer = self._packer
            if self._cancel.is_set():
                raise SubmitCancelled()
            try:
                if self.exclude:
                    packer.exclude(*self.exclude)
                packer.strategise()
                packer.execute()
                # The blend files BAT actually read: the cache's validators.
                opened = [str(p) for p in bat.blendfile._cached_bfiles]
            except bat.pack.Aborted as ex:
                if self._cancel.is_set():
                    raise SubmitCancelled() from None
                raise SubmitError(f"tracing {self.blendfile.name} failed: {ex}") from None
            except bat.blendfile.exceptions.BlendFileError as ex:
                raise SubmitError(f"not a readable .blend file: {ex}") from None
            except (SubmitError, SubmitCancelled):
                raise
            except Exception as ex:  # BAT meets corrupt data in many shapes
                raise SubmitError(
                    f"could not read {self.blendfile.name} as a .blend file "
                    f"({type(ex).__name__}: {ex})"
                ) from None
            finally:
                bat.blendfile.close_all_cached()
        self.blend_pack_path = self._renamed(pack_relative(packer.output_path))
        self.missing_files = sorted(str(p) for p in packer.missing_files)
        self.excluded_files = sorted(str(p) for p in packer.excluded_files)
        if self._cache is not None and not any(f.temporary for f in traced):
            trace = CachedTrace(
                [(str(f.source), f.pack_path) for f in traced],
                self.missing_files,
                self.blend_pack_path,
                self.excluded_files,
            )
            self._cache.remember(
                key, trace, opened_blends=[str(self.blendfile), *opened], started_ns=started_ns
            )

    def _cache_key(self, bat: ModuleType) -> str:
        return trace_key(
            self.blendfile,
            self.project_root,
            relative_only=self.relative_only,
            exclude=self.exclude,
            pack_blend_name=self.pack_blend_name,
            bat_version=str(getattr(bat, "__version__", "?")),
        )

    def _replay(
        self,
        cached: CachedTrace,
        on_file: Callable[[TracedFile], None],
        on_files: Callable[[list[TracedFile]], None] | None = None,
    ) -> None:
        """Feed a cached trace to on_file exactly as BAT's transfer thread would, or in
        chunks to on_files when given (one call per REPLAY_CHUNK files)."""
        self.from_cache = True
        files = [TracedFile(source, pack_path, False) for source, pack_path in cached.files]
        step = REPLAY_CHUNK if on_files is not None else 1
        for start in range(0, len(files), step):
            if self._cancel.is_set():
                raise SubmitCancelled()
            if on_files is not None:
                on_files(files[start : start + step])
            else:
                on_file(files[start])
        self.blend_pack_path = cached.blend_pack_path
        self.missing_files = list(cached.missing_files)
        self.excluded_files = list(cached.excluded_files)

    def _renamed(self, blend_pack_path: str) -> str:
        if not self.pack_blend_name:
            return blend_pack_path
        # Same directory, so the blend's relative references stay valid.
        return str(PurePosixPath(blend_pack_path).with_name(self.pack_blend_name))

    def _renaming(self, on_file: Callable[[TracedFile], None]) -> Callable[[TracedFile], None]:
        """Give the traced blend its pack name (BAT knows its path once strategise() ran)."""
        if not self.pack_blend_name:
            return on_file

        def forward(traced: TracedFile) -> None:
            own = pack_relative(self._packer.output_path) if self._packer else None
            if traced.pack_path == own:
                traced = TracedFile(traced.source, self._renamed(own), traced.temporary)
            on_file(traced)

        return forward


REPLAY_CHUNK = 500  # files per on_files call when replaying a cached trace
