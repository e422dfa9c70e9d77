"""Blender properties: per-scene submission settings and the last result on the WindowManager."""

# No `from __future__ import annotations`: Blender reads property annotations as objects.
import bpy
from bpy.props import BoolProperty, IntProperty, PointerProperty, StringProperty


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


class FLAMENCO_SHAMAN_PG_result(bpy.types.PropertyGroup):
    """The last submission's outcome, readable by scripts (bpy.context.window_manager)."""

    farm_path: StringProperty(name="Farm Path", default="")
    checkout_path: StringProperty(name="Checkout Path", default="")
    error: StringProperty(name="Error", default="")
    files_uploaded: IntProperty(name="Files Uploaded", default=0)
    files_total: IntProperty(name="Files", default=0)
    missing_count: IntProperty(name="Missing Files", default=0)


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
