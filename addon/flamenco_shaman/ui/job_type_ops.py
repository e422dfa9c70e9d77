"""Operators for the Manager's job types: Refresh (fetch types and worker tags) and
Evaluate Setting (a setting's automatic value), and how a fetched catalog is put to use.

Refresh runs in a thread polled by a modal timer when invoked from the UI, so an
unreachable Manager never freezes Blender; executed from a script it blocks.
"""

# No `from __future__ import annotations`: Blender reads property annotations as objects.
import bpy
from bpy.props import StringProperty

from ..engine import SubmitError
from . import catalog, job_spec, job_type_props
from .preferences import manager_of

POLL_SECONDS = 0.1


def redraw_properties(context: "bpy.types.Context") -> None:
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "PROPERTIES":
                area.tag_redraw()


def use_catalog(context: "bpy.types.Context", fetched: "catalog.Catalog") -> None:
    """Make a fetched catalog the panel's: properties for its types, defaults filled."""
    catalog.current = fetched
    catalog.last_error = None
    job_type_props.install(fetched)
    job_spec.fill_visible_defaults(context, fetched)


def fetch_now(context: "bpy.types.Context", url: str, token: str | None) -> "catalog.Catalog":
    """Blocking fetch, for scripts and background mode only; raises SubmitError."""
    try:
        fetched = catalog.fetch(url, token)
    except SubmitError as ex:
        catalog.last_error = str(ex)
        raise
    use_catalog(context, fetched)
    return fetched


class FLAMENCO_SHAMAN_OT_refresh_job_types(bpy.types.Operator):
    """Ask the Manager for its job types and worker tags"""

    bl_idname = "flamenco_shaman.refresh_job_types"
    bl_label = "Refresh from Manager"

    _timer = None
    _fetch: "catalog.CatalogFetch | None" = None

    @classmethod
    def poll(cls, context: "bpy.types.Context") -> bool:
        return catalog.pending is None or not catalog.pending.waiting

    def execute(self, context: "bpy.types.Context") -> set[str]:
        try:
            fetched = fetch_now(context, *manager_of(context))
        except SubmitError as ex:
            self.report({"ERROR"}, f"Cannot get the job types: {ex}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"{len(fetched.job_types)} job type(s) from {fetched.manager_url}")
        return {"FINISHED"}

    def invoke(self, context: "bpy.types.Context", event: "bpy.types.Event") -> set[str]:
        if bpy.app.background or context.window is None:
            return self.execute(context)
        # An unreachable host can take seconds to time out; keep the UI responsive.
        self._fetch = catalog.start_fetch(*manager_of(context))
        wm = context.window_manager
        self._timer = wm.event_timer_add(POLL_SECONDS, window=context.window)
        wm.modal_handler_add(self)
        redraw_properties(context)
        return {"RUNNING_MODAL"}

    def modal(self, context: "bpy.types.Context", event: "bpy.types.Event") -> set[str]:
        fetch = self._fetch
        if event.type != "TIMER" or fetch is None or fetch.waiting:
            return {"PASS_THROUGH"}
        context.window_manager.event_timer_remove(self._timer)
        redraw_properties(context)
        if fetch.cancelled:
            return {"CANCELLED"}
        fetched = catalog.publish(fetch)
        if fetched is None:
            self.report({"ERROR"}, f"Cannot get the job types: {catalog.last_error}")
            return {"CANCELLED"}
        use_catalog(context, fetched)
        return {"FINISHED"}


class FLAMENCO_SHAMAN_OT_eval_setting(bpy.types.Operator):
    """Set this job setting to its automatic value (evaluated from the scene)"""

    bl_idname = "flamenco_shaman.eval_setting"
    bl_label = "Use Automatic Value"
    bl_options = {"UNDO", "INTERNAL"}

    setting_key: StringProperty(name="Setting", options={"HIDDEN", "SKIP_SAVE"})

    def execute(self, context: "bpy.types.Context") -> set[str]:
        offer = catalog.current
        job_type = offer.job_type(context.scene.flamenco_shaman.job_type) if offer else None
        setting = job_type.setting(self.setting_key) if job_type else None
        group = job_type_props.group_of(context.scene, job_type) if job_type else None
        if job_type is None or setting is None or group is None or not setting.eval:
            self.report({"ERROR"}, f"No automatic value for {self.setting_key!r}")
            return {"CANCELLED"}
        try:
            value = job_spec.evaluate_one(context, job_type, setting)
            setattr(group, setting.key, value)
        except (SubmitError, TypeError, ValueError) as ex:
            self.report({"ERROR"}, str(ex))
            return {"CANCELLED"}
        self.report({"INFO"}, f"{setting.display_label}: {value}")
        return {"FINISHED"}


classes = (FLAMENCO_SHAMAN_OT_refresh_job_types, FLAMENCO_SHAMAN_OT_eval_setting)

register, unregister = bpy.utils.register_classes_factory(classes)
