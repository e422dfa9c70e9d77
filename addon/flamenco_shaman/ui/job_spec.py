"""The render job a scene asks for, built on Blender's main thread: job type, name,
priority, worker tag and every setting evaluated, as plain values for the engine.

Expressions see the names Flamenco's add-on provides (`bpy`, `C`, `jobname`, `Path`,
`abspath`, `last_n_dir_parts`, `settings`); the engine builds that namespace and fills
the settings, this module supplies Blender's side. Only the main thread calls in here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bpy

from ..engine import SubmitError
from ..engine.flamenco.blendjob import OUTPUT_ROOT_KEY
from ..engine.flamenco.blendscene import output_directory
from ..engine.flamenco.evaluate import (
    FilledSettings,
    coerce_value,
    eval_namespace,
    evaluate_setting,
    fill_settings,
)
from ..engine.flamenco.job import JobSpec
from ..engine.flamenco.jobtypes import JobSetting, JobType
from . import job_settings, job_type_props
from .catalog import Catalog


class JobSpecError(ValueError):
    """The scene's job can't be built; the message is for the artist, one line."""


def job_name_of(scene: bpy.types.Scene) -> str:
    """The artist's job name, else the blend file's name (as Flamenco does)."""
    name = scene.flamenco_shaman.job_name.strip()
    return name or (Path(bpy.data.filepath).stem if bpy.data.filepath else "")


def fallbacks_of(scene: bpy.types.Scene) -> dict[str, Any]:
    """Values a blend answers for settings Flamenco leaves to the artist (the same ones
    `shaman-submit` reads from the blend): the render output root is the folder the
    scene renders into."""
    if not bpy.data.filepath:
        return {}
    return {OUTPUT_ROOT_KEY: output_directory(Path(bpy.data.filepath), scene.render.filepath)}


def fill(context: bpy.types.Context, job_type: JobType) -> FilledSettings:
    """Every setting's value for the context's scene; raises the engine's SubmitError
    (SettingEvalError naming the setting whose expression failed, SettingValueError)."""
    scene = context.scene
    group = job_type_props.group_of(scene, job_type)
    given, always = job_settings.submit_inputs(
        job_type,
        job_type_props.stored_values(group, job_type),
        job_type_props.autoeval_of(group),
    )
    return fill_settings(
        job_type,
        given,
        bpy=bpy,
        context=context,
        jobname=job_name_of(scene),
        always_evaluate=always,
        fallbacks=fallbacks_of(scene),
    )


def fill_visible_defaults(context: bpy.types.Context, catalog: Catalog) -> None:
    """After a Refresh: empty fields with an expression get its value, as in Flamenco."""
    for job_type in catalog.job_types:
        try:
            values = fill(context, job_type).values
        except SubmitError:
            continue  # the panel names the failing expression
        job_type_props.fill_empty(
            job_type_props.group_of(context.scene, job_type), job_type, values
        )


def build(context: bpy.types.Context, catalog: Catalog) -> JobSpec:
    """The JobSpec for the context's scene; raises JobSpecError naming what is wrong."""
    scene = context.scene
    props = scene.flamenco_shaman
    job_type = catalog.job_type(props.job_type)
    if job_type is None:
        raise JobSpecError(catalog.unknown_type_message(props.job_type))
    try:
        values = fill(context, job_type).require_complete()
    except SubmitError as ex:
        raise JobSpecError(f"Job setting problem: {ex}") from ex
    return JobSpec(
        type=job_type.name,
        name=job_name_of(scene),
        priority=props.priority,
        worker_tag=props.worker_tag or None,
        settings=values,
        initial_status="paused" if props.submit_paused else None,
    )


def evaluate_one(context: bpy.types.Context, job_type: JobType, setting: JobSetting) -> Any:
    """One setting's expression now, seeing the other settings' values; raises SubmitError."""
    try:
        values = fill(context, job_type).values
    except SubmitError:  # another setting's failure must not hide this one's value
        group = job_type_props.group_of(context.scene, job_type)
        values = job_type_props.stored_values(group, job_type)
    namespace = eval_namespace(
        bpy=bpy, context=context, jobname=job_name_of(context.scene), settings=values
    )
    return coerce_value(setting, evaluate_setting(setting, namespace))
