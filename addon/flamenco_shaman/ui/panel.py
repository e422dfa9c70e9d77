"""The Flamenco Shaman panel in Properties > Output: settings, Submit, progress, result."""

from __future__ import annotations

from pathlib import Path

import bpy

from . import job

MAX_MISSING_SHOWN = 10


class FLAMENCO_SHAMAN_PT_submit(bpy.types.Panel):
    bl_label = "Flamenco Shaman"
    bl_space_type = "PROPERTIES"
    bl_region_type = "WINDOW"
    bl_context = "output"

    def draw(self, context: bpy.types.Context) -> None:
        draw_panel(self.layout, context)


def draw_panel(layout: bpy.types.UILayout, context: bpy.types.Context) -> None:
    """Settings and Submit, or progress and Cancel while running; then the last result."""
    current = job.current
    if current is not None and current.running:
        _draw_running(layout, current)
    else:
        _draw_settings(layout, context)
    _draw_result(layout, context)


def _draw_settings(layout: bpy.types.UILayout, context: bpy.types.Context) -> None:
    settings = context.scene.flamenco_shaman
    col = layout.column()
    col.use_property_split = True
    col.use_property_decorate = False
    blend = bpy.data.filepath
    placeholder = job.checkout_placeholder(Path(blend)) if blend else ""
    if "placeholder" in bpy.types.UILayout.bl_rna.functions["prop"].parameters:
        col.prop(settings, "checkout_name", placeholder=placeholder)
    else:
        col.prop(settings, "checkout_name")
    col.prop(settings, "project_root")
    col.prop(settings, "relative_only")
    row = layout.row()
    row.scale_y = 1.5
    row.operator("flamenco_shaman.submit", icon="EXPORT")
    if not blend:
        layout.label(text="Save the blend file before submitting", icon="INFO")


def _draw_running(layout: bpy.types.UILayout, current: job.SubmitJob) -> None:
    text = job.progress_text(current.progress)
    if hasattr(layout, "progress"):  # Blender 4.0+
        layout.progress(factor=job.progress_factor(current.progress), type="BAR", text=text)
    else:
        layout.label(text=text)
    if current.progress is not None and current.progress.current_file:
        layout.label(text=current.progress.current_file, icon="FILE_BLEND")
    layout.operator("flamenco_shaman.cancel", icon="CANCEL")


def _draw_result(layout: bpy.types.UILayout, context: bpy.types.Context) -> None:
    state = context.window_manager.flamenco_shaman
    if state.error:
        layout.label(text=state.error, icon="ERROR")
    if not state.farm_path:
        return
    box = layout.box()
    row = box.row(align=True)
    row.label(text=state.farm_path, icon="CHECKMARK")
    row.operator("flamenco_shaman.copy_farm_path", text="", icon="COPYDOWN")
    result = job.last_result
    if result is None:
        return
    box.label(
        text=f"Uploaded {result.files_uploaded} of {result.files_total} files, "
        f"{job.format_bytes(result.bytes_uploaded)} of {job.format_bytes(result.bytes_total)}"
    )
    if result.missing_files:
        col = box.column(align=True)
        col.label(text=f"{len(result.missing_files)} missing asset(s):", icon="ERROR")
        for path in result.missing_files[:MAX_MISSING_SHOWN]:
            col.label(text=str(path))
        if len(result.missing_files) > MAX_MISSING_SHOWN:
            col.label(text=f"... and {len(result.missing_files) - MAX_MISSING_SHOWN} more")


classes = (FLAMENCO_SHAMAN_PT_submit,)

register, unregister = bpy.utils.register_classes_factory(classes)
