"""Blender properties for the Manager's job types, built at runtime from their definitions.

Each job type gets a PropertyGroup with one property per setting the artist can type
(string, enum for choices, int, float, bool; subtype, limits and default from the
Manager) plus the link toggles; one container group holds a pointer per job type and
hangs off every Scene. Values are IDProperties in the scene, so they are saved with the
blend, survive a Refresh that re-registers the classes, and are kept per job type.
"""

# No `from __future__ import annotations`: Blender reads property annotations as objects.
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

import bpy

from ..engine.flamenco.evaluate import SettingValueError, coerce_value
from ..engine.flamenco.jobtypes import JobSetting, JobType
from . import job_settings
from .catalog import Catalog

log = logging.getLogger(__name__)

SCENE_ATTR = "flamenco_shaman_job_settings"
_SUBTYPES = {"file_path": "FILE_PATH", "dir_path": "DIR_PATH", "hashed_file_path": "FILE_PATH"}
# The propargs a Manager may pass on; anything else could make registration fail.
_PROPARGS = {"min", "max", "soft_min", "soft_max", "step", "precision"}
_registered: list[type] = []
_attrs: dict[str, str] = {}  # job type name -> attribute on the container
# Blender keeps only pointers to enum item strings; Python must keep the strings alive.
_enum_items: list[list[tuple[str, str, str]]] = []


def _type_attr(name: str, taken: set[str]) -> str:
    base = "jt_" + re.sub(r"\W", "_", name.lower())
    attr, n = base, 1
    while attr in taken:
        n += 1
        attr = f"{base}_{n}"
    taken.add(attr)
    return attr


def can_store(setting: JobSetting) -> bool:
    """A key Blender accepts as a property name and that no built-in property uses."""
    key = setting.key
    return (
        key.isidentifier()
        and not key.startswith(job_settings.AUTOEVAL_PREFIX)
        and key not in bpy.types.PropertyGroup.bl_rna.properties
    )


def _default(setting: JobSetting) -> Any:
    """The Manager's default typed as the setting says; None when it has none or a bad one."""
    if setting.default is None:
        return None
    try:
        return coerce_value(setting, setting.default)
    except SettingValueError as ex:
        log.warning("Ignoring the Manager's default: %s", ex)
        return None


def _limit(value: Any, cast: type) -> Any:
    try:
        return cast(value)
    except (TypeError, ValueError):
        return None


_NUMBERS = {
    "int32": (int, bpy.props.IntProperty),
    "float": (float, bpy.props.FloatProperty),
}


def _property(setting: JobSetting) -> Any:
    common: dict[str, Any] = {
        "name": setting.display_label,
        "description": setting.description or "",
        "options": set(),
    }
    default = _default(setting)
    if default is not None:
        common["default"] = default
    if setting.type == "string" and setting.choices:
        items = [(c, c, "") for c in setting.choices]
        _enum_items.append(items)
        return bpy.props.EnumProperty(items=items, **common)
    if setting.type == "string":
        subtype = _SUBTYPES.get(setting.subtype or "")
        if subtype:
            common["subtype"] = subtype
        return bpy.props.StringProperty(**common)
    if setting.type == "bool":
        return bpy.props.BoolProperty(**common)
    cast, prop = _NUMBERS[setting.type]
    for key, value in (setting.propargs or {}).items():
        if key in _PROPARGS:
            # JSON has one number type; Blender wants the property's own for limits.
            limit = _limit(value, int if key in {"step", "precision"} else cast)
            if limit is not None:
                common[key] = limit
    return prop(**common)


def _autoeval_property(setting: JobSetting) -> Any:
    return bpy.props.BoolProperty(
        name="Use Automatic Value",
        description=f"Use {setting.eval_description or 'the automatic value'} "
        f"for {setting.display_label} when submitting",
        default=True,
        options=set(),
    )


def _group_for(job_type: JobType, attr: str) -> type:
    annotations: dict[str, Any] = {}
    for setting in job_type.settings:
        if not job_settings.is_stored(setting) or not can_store(setting):
            continue
        try:
            annotations[setting.key] = _property(setting)
        except (KeyError, TypeError, ValueError) as ex:
            log.warning("Job type %r, setting %r not offered: %s", job_type.name, setting.key, ex)
            continue
        if setting.show_link_button:
            annotations[job_settings.autoeval_name(setting)] = _autoeval_property(setting)
    return type(
        f"FLAMENCO_SHAMAN_PG_{attr}", (bpy.types.PropertyGroup,), {"__annotations__": annotations}
    )


def install(catalog: Catalog) -> None:
    """(Re)build the job types' properties for `catalog`; stored values stay in the scenes."""
    uninstall()
    taken: set[str] = set()
    container: dict[str, Any] = {}
    for job_type in catalog.job_types:
        attr = _type_attr(job_type.name, taken)
        group = _group_for(job_type, attr)
        bpy.utils.register_class(group)
        _registered.append(group)
        _attrs[job_type.name] = attr
        container[attr] = bpy.props.PointerProperty(type=group)
    holder = type(
        "FLAMENCO_SHAMAN_PG_job_settings",
        (bpy.types.PropertyGroup,),
        {"__annotations__": container},
    )
    bpy.utils.register_class(holder)
    _registered.append(holder)
    setattr(bpy.types.Scene, SCENE_ATTR, bpy.props.PointerProperty(type=holder))


def uninstall() -> None:
    if hasattr(bpy.types.Scene, SCENE_ATTR):
        delattr(bpy.types.Scene, SCENE_ATTR)
    while _registered:
        bpy.utils.unregister_class(_registered.pop())
    _attrs.clear()
    _enum_items.clear()


def group_of(scene: bpy.types.Scene, job_type: JobType) -> Any:
    """The scene's PropertyGroup for `job_type`, or None if it isn't installed."""
    attr = _attrs.get(job_type.name)
    holder = getattr(scene, SCENE_ATTR, None)
    return getattr(holder, attr, None) if attr and holder is not None else None


def stored_values(group: Any, job_type: JobType) -> dict[str, Any]:
    """What the artist typed (or the defaults) for the settings the panel keeps."""
    if group is None:
        return {}
    return {
        s.key: getattr(group, s.key)
        for s in job_type.settings
        if job_settings.is_stored(s) and s.key in group.bl_rna.properties
    }


def autoeval_of(group: Any) -> Callable[[str], bool]:
    """autoeval(key): whether that setting's link toggle is on (on when not installed)."""

    def autoeval(key: str) -> bool:
        name = job_settings.AUTOEVAL_PREFIX + key
        return bool(getattr(group, name, True)) if group is not None else True

    return autoeval


def fill_empty(group: Any, job_type: JobType, values: Mapping[str, Any]) -> None:
    """Put evaluated values into empty editable settings that have an expression.

    Like Flamenco, once on a refresh: the artist sees (and can change) the value, and
    what they typed is never overwritten.
    """
    if group is None:
        return
    for setting in job_type.settings:
        if not (setting.eval and job_settings.is_stored(setting)) or setting.show_link_button:
            continue
        if setting.key in group.bl_rna.properties and job_settings.is_empty(
            getattr(group, setting.key)
        ):
            if setting.key in values:
                try:
                    setattr(group, setting.key, values[setting.key])
                except (TypeError, ValueError) as ex:
                    log.warning("Cannot set %s to %r: %s", setting.key, values[setting.key], ex)
