"""Flamenco Shaman add-on: submit a .blend and everything it needs to a Flamenco farm.

Importable without bpy: the engine and the `shaman-submit` command live here too.
Blender-only code is imported inside register().
"""

__version__ = "0.1.0"
