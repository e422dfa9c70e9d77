"""Flamenco 3's jobs API (no bpy): job types and their settings, evaluating settings'
`eval` expressions, and the job a submission creates after its Shaman checkout.

    api = FlamencoAPI(url, token)
    job_type = api.job_type("simple-blender-render")
    filled = fill_settings(job_type, given, bpy=bpy, context=C, jobname=name)
    spec = JobSpec(type=job_type.name, name=name, settings=filled.require_complete())
    SubmitOptions(blendfile, url, job=spec)  # Submission.run() checks, uploads, creates it
"""

from .api import FlamencoAPI, JobRefused, JobTypeChanged, JobTypeUnknown
from .evaluate import (
    FilledSettings,
    SettingEvalError,
    SettingsView,
    SettingValueError,
    coerce_value,
    eval_namespace,
    evaluate_setting,
    fill_settings,
)
from .job import DEFAULT_JOB_TYPE, JobSpec, submitter_platform
from .jobtypes import JobSetting, JobType, parse_job_types

__all__ = [
    "DEFAULT_JOB_TYPE",
    "FilledSettings",
    "FlamencoAPI",
    "JobRefused",
    "JobSetting",
    "JobSpec",
    "JobType",
    "JobTypeChanged",
    "JobTypeUnknown",
    "SettingEvalError",
    "SettingValueError",
    "SettingsView",
    "coerce_value",
    "eval_namespace",
    "evaluate_setting",
    "fill_settings",
    "parse_job_types",
    "submitter_platform",
]
