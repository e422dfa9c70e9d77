"""The render job a submission creates (JobSpec) and its `SubmittedJob` JSON for the Manager."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from typing import Any

from .jobtypes import BLENDFILE_KEY, JobType

DEFAULT_JOB_TYPE = "simple-blender-render"
DEFAULT_PRIORITY = 50
# What Flamenco's add-on puts in `blendfile` while checking a job, before any upload.
CHECK_BLENDFILE = "dummy-for-job-check.blend"


@dataclass
class JobSpec:
    """What the artist (or the command line) chose; settings are final values, typed,
    without `blendfile` (the submission sets it to the checkout's blend)."""

    type: str = DEFAULT_JOB_TYPE
    name: str = ""  # empty: the blend file's name, as Flamenco's add-on does
    priority: int = DEFAULT_PRIORITY
    worker_tag: str | None = None  # a worker tag ID, or None for any worker
    settings: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    initial_status: str | None = None  # e.g. "paused" (Flamenco's "submit as paused"); None: queued


def submitter_platform() -> str:
    """The lower-case OS name Flamenco expects (linux, windows, darwin)."""
    return platform.system().lower()


def submitted_job(
    spec: JobSpec,
    job_type: JobType,
    *,
    name: str,
    settings: dict[str, Any],
    blendfile: str,
    checkout_id: str | None = None,
) -> dict[str, Any]:
    """The `SubmittedJob` body for jobs/check and jobs."""
    values = dict(settings)
    if job_type.takes_blendfile:
        values[BLENDFILE_KEY] = blendfile
    job: dict[str, Any] = {
        "name": name,
        "type": job_type.name,
        "type_etag": job_type.etag,
        "priority": spec.priority,
        "submitter_platform": submitter_platform(),
        "settings": values,
        "metadata": dict(spec.metadata),
    }
    if checkout_id is not None:
        job["storage"] = {"shaman_checkout_id": checkout_id}
    if spec.worker_tag:
        job["worker_tag"] = spec.worker_tag
    if spec.initial_status:
        job["initial_status"] = spec.initial_status
    return job
