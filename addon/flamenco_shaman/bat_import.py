"""Finds Blender Asset Tracer: the wheel bundled in the add-on, or the installed package.

Inside Blender the add-on ships BAT as wheels in `wheels/` (1.x for Python 3.11/3.12,
2.x for 3.13+). We import the matching one and then take it back out of
`sys.modules` and `sys.path`, so another add-on that bundles its own BAT (Flamenco's
does) keeps getting its own. That is safe because BAT's pack, trace and blendfile
modules import all of their own submodules at import time.
Outside Blender (pip install, `shaman-submit`) the installed package is used.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import threading
from pathlib import Path
from types import ModuleType

WHEEL_DIR = Path(__file__).parent / "wheels"
_PACKAGE = "blender_asset_tracer"
# Submodules that need optional third-party packages or are BAT's own CLI.
_SKIP = (
    "blender_asset_tracer.__main__",
    "blender_asset_tracer.cli",
    "blender_asset_tracer.pack.s3",
)

_lock = threading.Lock()
_loaded: ModuleType | None = None


def bat_major_for(version_info: tuple[int, ...]) -> int:
    """BAT 2.x needs Python 3.13+; older Blenders (Python 3.11) use BAT 1.x."""
    return 2 if tuple(version_info[:2]) >= (3, 13) else 1


def bundled_wheel(
    wheel_dir: Path = WHEEL_DIR, version_info: tuple[int, ...] | None = None
) -> Path | None:
    """The newest bundled BAT wheel that suits the running Python, if any."""
    major = bat_major_for(version_info or sys.version_info)
    candidates = []
    for wheel in wheel_dir.glob("blender_asset_tracer-*.whl"):
        version = wheel.name.split("-")[1]
        parts = tuple(int(p) for p in version.split(".") if p.isdigit())
        if parts and parts[0] == major:
            candidates.append((parts, wheel))
    return max(candidates)[1] if candidates else None


def import_bat() -> ModuleType:
    """Return the `blender_asset_tracer` package with pack, trace and blendfile loaded."""
    global _loaded
    with _lock:
        if _loaded is None:
            wheel = bundled_wheel()
            _loaded = _import_from_wheel(wheel) if wheel else _import_installed()
        return _loaded


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
