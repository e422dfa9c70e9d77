"""Blender-only side of the add-on: properties, preferences, operators and the panel.

Imported by the package's register(), never at package import time, so the engine and
`shaman-submit` work without bpy. job, connection, catalog and job_settings are bpy-free
too; the bpy modules are imported inside register() so those stay importable (and
testable) without Blender.
"""

from __future__ import annotations

import atexit

from . import job


def _cancel_on_load(*_args: object) -> None:
    # Loading another file kills the modal operator watching the job; don't leave
    # an unobserved upload running.
    job.cancel_current(wait=1.0)


def _modules() -> tuple:
    from . import job_type_ops, operators, panel, preferences, properties

    return (properties, preferences, job_type_ops, operators, panel)


def register() -> None:
    import bpy
    from bpy.app.handlers import persistent

    for module in _modules():
        module.register()
    bpy.app.handlers.load_pre.append(persistent(_cancel_on_load))
    atexit.register(job.shutdown)


def unregister() -> None:
    import bpy

    atexit.unregister(job.shutdown)
    if _cancel_on_load in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_cancel_on_load)
    job.cancel_current()
    from . import job_type_props

    job_type_props.uninstall()
    for module in reversed(_modules()):
        module.unregister()
