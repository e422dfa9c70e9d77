"""Flamenco Shaman add-on: submit a .blend and everything it needs to a Flamenco farm.

Importable without bpy: the engine and the `shaman-submit` command live here too.
Blender-only code (the `ui` subpackage) is imported inside register().
"""

from __future__ import annotations

__version__ = "0.1.0"

# Read by Blender's legacy add-on installer; an extension install reads
# blender_manifest.toml instead. tools/build_addon_zip.py checks both agree.
bl_info = {
    "name": "Flamenco Shaman",
    "author": "Flamenco Shaman developers",
    "version": (0, 1, 0),
    "blender": (4, 2, 0),
    "location": "Properties > Output > Flamenco Shaman",
    "description": "Submit a blend file and its assets to a Flamenco farm",
    "category": "Render",
}


def register() -> None:
    from . import ui

    ui.register()


def unregister() -> None:
    from . import ui

    ui.unregister()
