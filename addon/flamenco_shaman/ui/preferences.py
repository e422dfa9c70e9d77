"""Add-on preferences (manager URL, uploads, token) and the "Check connection" operator."""

# No `from __future__ import annotations`: Blender reads property annotations as objects.
import threading

import bpy
from bpy.props import IntProperty, StringProperty

from .connection import describe_manager, manager_address

# The add-on's top package: "bl_ext.user_default.flamenco_shaman" as an extension,
# "flamenco_shaman" as a legacy add-on. Blender looks preferences up by this name.
ADDON_ID = __package__.rpartition(".")[0]


class FLAMENCO_SHAMAN_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    manager_url: StringProperty(
        name="Manager URL",
        description="Address of the Flamenco Manager, e.g. http://flamenco:8080/; "
        "when never set, the FLAMENCO_MANAGER_URL environment variable is used if present",
        default="http://localhost:8080/",
    )
    uploads: IntProperty(
        name="Parallel Uploads",
        description="Number of files uploaded at the same time",
        default=4,
        min=1,
        max=32,
    )
    token: StringProperty(
        name="Access Token",
        description="Only needed when the Manager requires one; "
        "when empty, the FLAMENCO_SHAMAN_TOKEN environment variable is used if present",
        default="",
        subtype="PASSWORD",
    )
    last_check: StringProperty(name="Last Check", default="", options={"SKIP_SAVE"})

    def draw(self, context: bpy.types.Context) -> None:
        draw_preferences(self.layout, self)


def draw_preferences(layout: bpy.types.UILayout, prefs: FLAMENCO_SHAMAN_AP_preferences) -> None:
    layout.prop(prefs, "manager_url")
    layout.prop(prefs, "uploads")
    layout.prop(prefs, "token")
    row = layout.row()
    row.operator("flamenco_shaman.check_connection", icon="WORLD")
    if prefs.last_check:
        row.label(text=prefs.last_check)


def get_preferences(context: bpy.types.Context) -> FLAMENCO_SHAMAN_AP_preferences:
    return context.preferences.addons[ADDON_ID].preferences


def manager_of(context: bpy.types.Context) -> tuple[str, str | None]:
    """(url, token) of the Manager to use: the preferences', else the environment's."""
    prefs = get_preferences(context)
    return manager_address(prefs.manager_url, prefs.is_property_set("manager_url"), prefs.token)


class FLAMENCO_SHAMAN_OT_check_connection(bpy.types.Operator):
    """Ask the Manager for its name and version, and whether Shaman is enabled"""

    bl_idname = "flamenco_shaman.check_connection"
    bl_label = "Check Connection"

    _outcome: list[tuple[bool, str]] | None = None
    _timer = None

    def _finish(self, context: bpy.types.Context, ok: bool, message: str) -> set[str]:
        get_preferences(context).last_check = message
        self.report({"INFO"} if ok else {"ERROR"}, message)
        for area in getattr(context.screen, "areas", ()):
            area.tag_redraw()
        return {"FINISHED"} if ok else {"CANCELLED"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        return self._finish(context, *describe_manager(*manager_of(context)))

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        # An unreachable host can take seconds to time out; keep the UI responsive.
        prefs = get_preferences(context)
        url, token = manager_of(context)
        prefs.last_check = f"Contacting {url} ..."

        # The thread fills a plain list: it must never touch a Blender object.
        outcome: list[tuple[bool, str]] = []
        self._outcome = outcome

        def check() -> None:
            outcome.append(describe_manager(url, token))

        threading.Thread(target=check, name="flamenco-shaman-check", daemon=True).start()
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.1, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if event.type != "TIMER" or not self._outcome:
            return {"PASS_THROUGH"}
        context.window_manager.event_timer_remove(self._timer)
        return self._finish(context, *self._outcome[0])


classes = (FLAMENCO_SHAMAN_OT_check_connection, FLAMENCO_SHAMAN_AP_preferences)

register, unregister = bpy.utils.register_classes_factory(classes)
