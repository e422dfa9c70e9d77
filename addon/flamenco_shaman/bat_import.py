"""Finds Blender Asset Tracer: the wheel bundled in the add-on, or the installed package.

Inside Blender the add-on ships BAT as wheels in `wheels/` (1.x for Python 3.11/3.12,
2.x for 3.13+). We import the matching one and then take it back out of
`sys.modules` and `sys.path`, so another add-on that bundles its own BAT (Flamenco's
does) keeps getting its own. That is safe because BAT's pack, trace and blendfile
modules import all of their own submodules at import time.
Outside Blender (pip install, `shaman-submit`) the installed package is used.

The engine drives BAT 1.x's packing API (`pack.Packer`, `pack.transfer`, `trace`). BAT
2.x is a different library (a `BATPacker`, no `trace` package, needs `bpy` and
`cattrs`), so a bundled wheel that lacks that API, or does not import, is passed over
for the next one: on Python 3.13 that is BAT 1.x, which runs there too.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys
import threading
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)

WHEEL_DIR = Path(__file__).parent / "wheels"
_PACKAGE = "blender_asset_tracer"
# Submodules that need optional third-party packages or are BAT's own CLI, or BAT's own
# Shaman client (we have ours; it would pull in requests).
_SKIP = (
    "blender_asset_tracer.__main__",
    "blender_asset_tracer.cli",
    "blender_asset_tracer.pack.s3",
    "blender_asset_tracer.pack.shaman",
)

# What the engine uses; a BAT without these can't trace for it.
REQUIRED_API = ("pack.Packer", "pack.transfer.FileTransferer", "trace.deps")

_lock = threading.Lock()
_loaded: ModuleType | None = None


def bat_major_for(version_info: tuple[int, ...]) -> int:
    """BAT 2.x needs Python 3.13+; older Blenders (Python 3.11) use BAT 1.x."""
    return 2 if tuple(version_info[:2]) >= (3, 13) else 1


def _wheel_version(wheel: Path) -> tuple[int, ...]:
    version = wheel.name.split("-")[1]
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def bundled_wheels(
    wheel_dir: Path = WHEEL_DIR, version_info: tuple[int, ...] | None = None
) -> list[Path]:
    """Bundled BAT wheels, best first: the major that suits the running Python, newest first."""
    major = bat_major_for(version_info or sys.version_info[:2])
    wheels = [w for w in wheel_dir.glob("blender_asset_tracer-*.whl") if _wheel_version(w)]
    return sorted(wheels, key=lambda w: (_wheel_version(w)[0] == major, _wheel_version(w)))[::-1]


def import_bat() -> ModuleType:
    """Return the `blender_asset_tracer` package with pack, trace and blendfile loaded."""
    global _loaded
    with _lock:
        if _loaded is None:
            wheels = bundled_wheels()
            _loaded = _import_first_usable(wheels) if wheels else _import_installed()
        return _loaded


def has_required_api(package: ModuleType) -> bool:
    """Whether this BAT offers everything the engine calls."""
    for dotted in REQUIRED_API:
        obj: object = package
        for part in dotted.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                return False
    return True


def _import_first_usable(wheels: list[Path]) -> ModuleType:
    problems = []
    for wheel in wheels:
        try:
            package = _import_from_wheel(wheel)
        except Exception as ex:  # e.g. BAT 2.x needs cattrs, which Blender may not have
            problems.append(f"{wheel.name} does not import ({type(ex).__name__}: {ex})")
            continue
        if has_required_api(package):
            if problems:
                log.info("Using %s; passed over: %s", wheel.name, "; ".join(problems))
            return package
        problems.append(f"{wheel.name} lacks the packing API the engine uses")
    raise ImportError("no usable bundled Blender Asset Tracer: " + "; ".join(problems))


def _import_installed() -> ModuleType:
    package = importlib.import_module(_PACKAGE)
    _import_submodules(package)
    return package


def _is_ours(name: str) -> bool:
    return name == _PACKAGE or name.startswith(_PACKAGE + ".")


def _import_from_wheel(wheel: Path) -> ModuleType:
    saved = {name: mod for name, mod in sys.modules.items() if _is_ours(name)}
    for name in saved:
        del sys.modules[name]
    sys.path.insert(0, str(wheel))
    try:
        package = importlib.import_module(_PACKAGE)
        _import_submodules(package)
        return package
    finally:
        sys.path.remove(str(wheel))
        for name in [n for n in sys.modules if _is_ours(n)]:
            del sys.modules[name]
        sys.modules.update(saved)


def _import_submodules(package: ModuleType) -> None:
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if not info.name.startswith(_SKIP):
            importlib.import_module(info.name)
