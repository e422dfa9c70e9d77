"""Blender-only side of the add-on: properties, preferences, operators and the panel.

Imported by the package's register(), never at package import time, so the engine and
`shaman-submit` work without bpy.
"""

from __future__ import annotations

import atexit

import bpy
from bpy.app.handlers import persistent

from . import job, operators, panel, preferences, properties

_modules = (properties, preferences, operators, panel)


@persistent
def _cancel_on_load(*_args: object) -> None:
    # Loading another file kills the modal operator watching the job; don't leave
    # an unobserved upload running.
    job.cancel_current(wait=1.0)


def register() -> None:
    for module in _modules:
        module.register()
    bpy.app.handlers.load_pre.append(_cancel_on_load)
    atexit.register(job.cancel_current)


def unregister() -> None:
    atexit.unregister(job.cancel_current)
    if _cancel_on_load in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_cancel_on_load)
    job.cancel_current()
    for module in reversed(_modules):
        module.unregister()
