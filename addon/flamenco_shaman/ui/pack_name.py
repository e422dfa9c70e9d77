"""Names the submitted blend in the checkout after the artist's file, not our temporary copy.

Submit traces a hidden copy saved next to the original (`.flamenco_shaman-<name>-<rand>.blend`,
so that `//` paths still resolve). BAT would put that hidden name into the checkout and
the farm would render a file nobody recognises. The engine has no option for the blend's
name in the pack (yet), so this wraps its Tracer: for blends registered here, the
blend's own entry gets the original file name. Any other blend traces exactly as before.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from ..engine import submission as _submission
from ..engine.trace import TracedFile, Tracer

_lock = threading.Lock()
_names: dict[str, str] = {}  # absolute path of a traced blend -> its file name in the pack


def _key(path: Path) -> str:
    return os.path.abspath(path)


def register(blendfile: Path, pack_name: str) -> None:
    """Pack `blendfile` under the name `pack_name` (same directory in the checkout)."""
    _install()
    with _lock:
        _names[_key(blendfile)] = pack_name


def forget(blendfile: Path) -> None:
    with _lock:
        _names.pop(_key(blendfile), None)


class RenamingTracer(Tracer):
    """A Tracer that renames the traced blend's own entry when one is registered for it."""

    def run(self, on_file: Callable[[TracedFile], None]) -> None:
        with _lock:
            pack_name = _names.get(_key(self.blendfile))
        if pack_name is None:
            super().run(on_file)
            return
        renamed: dict[str, str] = {}

        def forward(traced: TracedFile) -> None:
            # BAT's main blend is the only entry whose source is the traced file itself
            # (or, when BAT rewrote it, whose name is the copy's name in the pack).
            path = PurePosixPath(traced.pack_path)
            if path.name == self.blendfile.name:
                new_path = str(path.with_name(pack_name))
                renamed[traced.pack_path] = new_path
                traced = dataclasses.replace(traced, pack_path=new_path)
            on_file(traced)

        super().run(forward)
        self.blend_pack_path = renamed.get(self.blend_pack_path, self.blend_pack_path)


def _install() -> None:
    # Swap the engine's Tracer for ours once; behaviour only differs for registered blends.
    if _submission.Tracer is Tracer:
        _submission.Tracer = RenamingTracer
