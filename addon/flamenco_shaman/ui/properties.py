"""Blender properties: per-scene submission settings and the last result on the WindowManager.

The job type and worker tag are kept as names (strings), so a Refresh that changes the
Manager's list never turns a saved choice into another one; the menus drawn for them
map between the names and the list the Manager offers now.
"""

# No `from __future__ import annotations`: Blender reads property annotations as objects.
import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, PointerProperty, StringProperty

from . import catalog

ALL_WORKERS = "-"
# Blender keeps only pointers to enum item strings; Python must keep the strings alive.
_job_type_items: list[tuple[str, str, str, int]] = []
_worker_tag_items: list[tuple[str, str, str, int]] = []


def _job_type_menu_items(settings: "FLAMENCO_SHAMAN_PG_scene", context: object) -> list:
    known = catalog.current.job_types if catalog.current is not None else ()
    items = [(t.name, t.label or t.name, t.description or "") for t in known]
    if settings.job_type not in {item[0] for item in items}:
        # Not (yet) offered by the Manager: still show what the scene asks for.
        why = "Not offered by the Manager" if known else "Refresh to get the Manager's job types"
        items.insert(0, (settings.job_type, settings.job_type, why))
    _job_type_items[:] = [(*item, index) for index, item in enumerate(items)]
    return _job_type_items


def _get_job_type_menu(settings: "FLAMENCO_SHAMAN_PG_scene") -> int:
    names = [item[0] for item in _job_type_menu_items(settings, None)]
    return names.index(settings.job_type)


def _set_job_type_menu(settings: "FLAMENCO_SHAMAN_PG_scene", value: int) -> None:
    settings.job_type = next(item[0] for item in _job_type_items if item[3] == value)


def _worker_tag_menu_items(settings: "FLAMENCO_SHAMAN_PG_scene", context: object) -> list:
    tags = catalog.current.worker_tags if catalog.current is not None else ()
    items = [(ALL_WORKERS, "All Workers", "No tag: any worker can render this job")]
    items += [(tag.id, tag.name, tag.description) for tag in tags]
    if settings.worker_tag and settings.worker_tag not in {tag.id for tag in tags}:
        items.append((settings.worker_tag, settings.worker_tag, "Not offered by the Manager"))
    _worker_tag_items[:] = [(*item, index) for index, item in enumerate(items)]
    return _worker_tag_items


def _get_worker_tag_menu(settings: "FLAMENCO_SHAMAN_PG_scene") -> int:
    names = [item[0] for item in _worker_tag_menu_items(settings, None)]
    return names.index(settings.worker_tag or ALL_WORKERS)


def _set_worker_tag_menu(settings: "FLAMENCO_SHAMAN_PG_scene", value: int) -> None:
    tag = next(item[0] for item in _worker_tag_items if item[3] == value)
    settings.worker_tag = "" if tag == ALL_WORKERS else tag


class FLAMENCO_SHAMAN_PG_scene(bpy.types.PropertyGroup):
    """Settings the artist picks per scene; saved with the blend file."""

    checkout_name: StringProperty(
        name="Checkout Name",
        description="Name of the job's directory on the farm; empty uses the blend file's name",
        default="",
    )
    project_root: StringProperty(
        name="Project Root",
        description="Top directory of the project; empty uses the blend file's directory",
        default="",
        subtype="DIR_PATH",
    )
    relative_only: BoolProperty(
        name="Relative Paths Only",
        description="Only send assets referenced by relative paths; skip absolute ones",
        default=False,
    )
    job_name: StringProperty(
        name="Job Name",
        description="Name of the render job on the farm; empty uses the blend file's name",
        default="",
    )
    priority: IntProperty(
        name="Priority",
        description="Priority of the render job; higher numbers are rendered first",
        default=50,
        min=0,
        max=100,
    )
    submit_paused: BoolProperty(
        name="Submit as Paused",
        description="Create the job paused, to start it later from the Manager's web interface",
        default=False,
    )
    job_type: StringProperty(
        name="Job Type Name",
        description="Name of the Manager's job type to submit",
        default=catalog.DEFAULT_JOB_TYPE,
    )
    job_type_menu: EnumProperty(
        name="Job Type",
        description="What the farm does with the blend file; the list comes from the Manager",
        items=_job_type_menu_items,
        get=_get_job_type_menu,
        set=_set_job_type_menu,
        options={"SKIP_SAVE"},
    )
    worker_tag: StringProperty(
        name="Worker Tag ID",
        description="ID of the worker tag whose workers render the job; empty: any worker",
        default="",
    )
    worker_tag_menu: EnumProperty(
        name="Worker Tag",
        description="The workers that may render this job",
        items=_worker_tag_menu_items,
        get=_get_worker_tag_menu,
        set=_set_worker_tag_menu,
        options={"SKIP_SAVE"},
    )


class FLAMENCO_SHAMAN_PG_result(bpy.types.PropertyGroup):
    """The last submission's outcome, readable by scripts (bpy.context.window_manager)."""

    farm_path: StringProperty(name="Farm Path", default="")
    checkout_path: StringProperty(name="Checkout Path", default="")
    error: StringProperty(name="Error", default="")
    files_uploaded: IntProperty(name="Files Uploaded", default=0)
    files_total: IntProperty(name="Files", default=0)
    missing_count: IntProperty(name="Missing Files", default=0)
    warning_count: IntProperty(name="Warnings", description="From the manager", default=0)
    job_id: StringProperty(name="Job ID", default="")
    job_name: StringProperty(name="Job Name", default="")
    job_url: StringProperty(
        name="Job URL", description="The job in the Manager's web UI", default=""
    )


classes = (FLAMENCO_SHAMAN_PG_scene, FLAMENCO_SHAMAN_PG_result)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.Scene.flamenco_shaman = PointerProperty(type=FLAMENCO_SHAMAN_PG_scene)
    bpy.types.WindowManager.flamenco_shaman = PointerProperty(type=FLAMENCO_SHAMAN_PG_result)


def unregister() -> None:
    del bpy.types.WindowManager.flamenco_shaman
    del bpy.types.Scene.flamenco_shaman
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
