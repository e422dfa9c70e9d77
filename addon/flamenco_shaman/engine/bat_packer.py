"""BAT's Packer and FileTransferer, subclassed: every file BAT would copy goes to a
callback instead, excluded assets are counted, no pack-info.txt is written.

One override is only for speed and has a switch, SHORT_POLLS: BAT's own iter_queue()
and join() wait 0.5 s on an empty queue before they see that all files are queued and
the thread is done, up to a second of idle time per submission (most of a resubmission
of a small project). With the switch on (the default) the same logic polls every 10 ms;
off, BAT's own methods run. Tests run both.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from .traced import TracedFile, pack_relative

SHORT_POLLS = True
_classes: dict[tuple[int, bool], type] = {}
_TRANSFER_POLL = 0.01  # seconds; BAT's transfer thread polls its queue this often


def packer_class(bat: ModuleType) -> type:
    """Packer/FileTransferer subclasses for the BAT module actually loaded (maybe bundled)."""
    short_polls = SHORT_POLLS
    cached = _classes.get((id(bat), short_polls))
    if cached is not None:
        return cached

    # Classes made at run time from whichever BAT was loaded: Any to the type checker.
    transferer_base: Any = bat.pack.transfer.FileTransferer
    packer_base: Any = bat.pack.Packer

    class ForwardingTransferer(transferer_base):
        """Passes each file BAT would copy or move to a callback instead."""

        def __init__(self, on_file: Callable[[TracedFile], None], temp_dir: Path) -> None:
            super().__init__()
            self.daemon = True
            self._on_file = on_file
            self._temp_dir = temp_dir

        def run(self) -> None:
            for src, dst, _action in self.iter_queue():
                try:
                    source = Path(src)
                    self._on_file(
                        TracedFile(source, pack_relative(dst), _is_inside(source, self._temp_dir))
                    )
                except Exception as ex:
                    self.error_set(str(ex) or type(ex).__name__)
                    return

    class ShortPollTransferer(ForwardingTransferer):
        """BAT's iter_queue() and join(), polling every _TRANSFER_POLL (see SHORT_POLLS)."""

        def iter_queue(self) -> Iterator[Any]:
            while not (self._abort.is_set() or self.has_error):
                try:
                    src, dst, action = self.queue.get(timeout=_TRANSFER_POLL)
                except queue.Empty:
                    if self.done.is_set():
                        return
                    continue
                self.progress_cb.transfer_file(src, dst)
                yield src, dst, action

        def join(self, timeout: float | None = None) -> None:
            deadline = time.monotonic() + timeout if timeout else None
            while self.is_alive() and (deadline is None or time.monotonic() < deadline):
                self.progress_cb.flush(timeout=_TRANSFER_POLL)
            self.progress_cb.flush()

    transferer = ShortPollTransferer if short_polls else ForwardingTransferer

    class ShamanPacker(packer_base):
        def __init__(
            self, *args: Any, on_file: Callable[[TracedFile], None], **kwargs: Any
        ) -> None:
            super().__init__(*args, **kwargs)
            self._on_file = on_file
            self._exclude_patterns: tuple[str, ...] = ()
            self.excluded_files: set[Path] = set()

        # BAT skips excluded assets without a trace; matching them here (same
        # PurePath.match as BAT) lets the artist be told what was left out.
        def exclude(self, *globs: str) -> None:
            self._exclude_patterns += globs

        def _excluded(self, asset_path: Path, sequence: bool = False) -> bool:
            if not any(asset_path.match(glob) for glob in self._exclude_patterns):
                return False
            files = [asset_path]
            if sequence:  # every frame or tile on disk, as BAT would have sent them
                try:
                    files = list(bat.trace.file_sequence.expand_sequence(asset_path)) or files
                except bat.trace.file_sequence.DoesNotExist:
                    pass
            self.excluded_files.update(files)
            return True

        def _visit_asset(self, asset_path: Path, usage: Any) -> None:
            if not self._excluded(asset_path):
                super()._visit_asset(asset_path, usage)

        def _visit_sequence(self, asset_path: Path, usage: Any) -> None:
            if not self._excluded(asset_path, sequence=True):
                super()._visit_sequence(asset_path, usage)

        def _create_file_transferer(self) -> Any:
            return transferer(self._on_file, Path(self._rewrite_in))

        def _write_info_file(self) -> None:
            """No pack-info.txt: the checkout holds the blend and its assets only."""

    _classes[(id(bat), short_polls)] = ShamanPacker
    return ShamanPacker


def _is_inside(path: Path, directory: Path) -> bool:
    try:
        path.relative_to(directory)
    except ValueError:
        return False
    return True
