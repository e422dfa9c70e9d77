"""The Flamenco Shaman panel in Properties > Output: the render job (type, settings drawn
from the Manager's definition, name, priority, worker tag), Submit, progress, result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bpy

from ..engine import SubmitError
from ..engine.flamenco.jobtypes import JobSetting, JobType
from . import catalog, job, job_settings, job_spec, job_type_props
from .preferences import manager_of

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


def _prop_with_placeholder(
    layout: bpy.types.UILayout, data: Any, name: str, placeholder: str
) -> None:
    if "placeholder" in bpy.types.UILayout.bl_rna.functions["prop"].parameters:
        layout.prop(data, name, placeholder=placeholder)
    else:
        layout.prop(data, name)


def _draw_job(layout: bpy.types.UILayout, context: bpy.types.Context) -> None:
    """Job name, priority, type and tag; then the type's settings, once the types are known."""
    settings = context.scene.flamenco_shaman
    col = layout.column()
    col.use_property_split = True
    col.use_property_decorate = False
    blend = bpy.data.filepath
    _prop_with_placeholder(col, settings, "job_name", Path(blend).stem if blend else "")
    col.prop(settings, "priority")
    col.prop(settings, "submit_paused")
    row = col.row(align=True)
    row.prop(settings, "job_type_menu")
    row.operator("flamenco_shaman.refresh_job_types", text="", icon="FILE_REFRESH")
    col.prop(settings, "worker_tag_menu")
    pending = catalog.pending
    if pending is not None and pending.waiting:
        row = layout.row()
        row.label(text=f"Asking {pending.url} for its job types ...", icon="SORTTIME")
        row.operator("flamenco_shaman.cancel", text="", icon="CANCEL")
    elif catalog.last_error:
        layout.label(text=catalog.last_error, icon="ERROR")
    if catalog.current is None:
        if not catalog.last_error:
            layout.label(text="Refresh to get the Manager's job types", icon="INFO")
        return
    url = manager_of(context)[0]
    if catalog.current.manager_url != url:
        layout.label(text=f"Job types are from {catalog.current.manager_url}", icon="INFO")
        layout.label(text=f"Refresh for {url}; Submit does that itself")
    job_type = catalog.current.job_type(settings.job_type)
    if job_type is None:
        layout.label(text=catalog.current.unknown_type_message(settings.job_type), icon="ERROR")
        return
    _draw_job_settings(layout, context, job_type)


def _draw_job_settings(
    layout: bpy.types.UILayout, context: bpy.types.Context, job_type: JobType
) -> None:
    """Each shown setting as its definition says: a field, a value that follows its
    expression (with the link toggle where the type has one), or a read-only value.
    Values are evaluated live; a failing expression is named under the settings."""
    group = job_type_props.group_of(context.scene, job_type)
    autoeval = job_type_props.autoeval_of(group)
    try:
        values = job_spec.fill(context, job_type).values
        problem = ""
    except SubmitError as ex:
        values, problem = {}, str(ex)
    col = layout.column(align=True)
    col.use_property_split = True
    col.use_property_decorate = False
    for setting in job_settings.shown_settings(job_type):
        row = col.row(align=True)
        row.alert = setting.required and job_settings.is_empty(values.get(setting.key))
        stored = group is not None and setting.key in group.bl_rna.properties
        toggle = setting.show_link_button and stored
        if stored and not job_settings.follows_expression(setting, autoeval):
            # An empty field shows, greyed out, what Submit will use instead (its
            # expression's value, or the blend's answer such as the output folder).
            typed = getattr(group, setting.key)
            instead = values.get(setting.key) if job_settings.is_empty(typed) else None
            if job_settings.is_empty(instead):
                row.prop(group, setting.key)
            else:
                _prop_with_placeholder(row, group, setting.key, str(instead))
            if toggle:
                row.prop(group, job_settings.autoeval_name(setting), text="", icon="UNLINKED")
            elif setting.eval:
                op = row.operator("flamenco_shaman.eval_setting", text="", icon="FILE_REFRESH")
                op.setting_key = setting.key
        else:
            _draw_value(row, setting, values.get(setting.key, "?" if problem else ""))
            if toggle:
                row.prop(group, job_settings.autoeval_name(setting), text="", icon="LINKED")
    if problem:
        layout.label(text=problem, icon="ERROR")


def _draw_value(row: bpy.types.UILayout, setting: JobSetting, value: Any) -> None:
    """A value the artist doesn't type: label on the left, value (and where from) right."""
    split = row.split(factor=0.4, align=True)
    split.alignment = "RIGHT"
    split.label(text=setting.display_label)
    where = setting.eval_description
    split.label(text=f"{value}  ({where})" if where else str(value))


def _draw_settings(layout: bpy.types.UILayout, context: bpy.types.Context) -> None:
    _draw_job(layout, context)
    settings = context.scene.flamenco_shaman
    col = layout.column()
    col.use_property_split = True
    col.use_property_decorate = False
    blend = bpy.data.filepath
    placeholder = job.checkout_placeholder(Path(blend)) if blend else ""
    _prop_with_placeholder(col, settings, "checkout_name", placeholder)
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
    if state.job_id:
        row = box.row(align=True)
        row.label(text=f"Job '{state.job_name}' ({state.job_id})", icon="RENDER_ANIMATION")
        row.operator("flamenco_shaman.open_job", text="Open in Flamenco", icon="URL")
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
    if result.warnings:
        # The manager's word on the checkout: names Windows/macOS workers cannot hold.
        col = box.column(align=True)
        col.label(text=f"{len(result.warnings)} warning(s) from the manager:", icon="ERROR")
        for line in result.warnings[:MAX_MISSING_SHOWN]:
            col.label(text=line)
        if len(result.warnings) > MAX_MISSING_SHOWN:
            col.label(text=f"... and {len(result.warnings) - MAX_MISSING_SHOWN} more")


classes = (FLAMENCO_SHAMAN_PT_submit,)

register, unregister = bpy.utils.register_classes_factory(classes)
