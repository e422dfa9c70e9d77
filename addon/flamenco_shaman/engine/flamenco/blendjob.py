"""A render job for a .blend file without Blender (`shaman-submit`): settings from the
command line, else what the blend's scene holds (by the type's own `eval` expressions,
evaluated on scene values read with BAT), else the type's defaults.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import SubmitError
from .api import FlamencoAPI
from .blendscene import blend_context, output_directory, read_scene
from .evaluate import fill_settings
from .job import JobSpec
from .jobtypes import BLENDFILE_KEY, JobType

# Settings Flamenco leaves to the artist that a blend still answers: simple-blender-render's
# render_output_root, taken as the folder of the scene's own output path.
OUTPUT_ROOT_KEY = "render_output_root"


def parse_assignments(pairs: Sequence[str]) -> dict[str, str]:
    """["frames=1-3", ...] into {"frames": "1-3"}; a later KEY wins."""
    given: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SubmitError(f"--set {pair!r}: expected KEY=VALUE")
        given[key.strip()] = value
    return given


def check_keys(job_type: JobType, given: Mapping[str, Any]) -> None:
    for key in given:
        if key == BLENDFILE_KEY:
            raise SubmitError("--set blendfile: the blend file's path is set by the submission")
        if job_type.setting(key) is None:
            known = ", ".join(k for k in job_type.keys if k != BLENDFILE_KEY)
            raise SubmitError(
                f"job type {job_type.name!r} has no setting {key!r} (it has: {known})"
            )


def resolve_worker_tag(api: FlamencoAPI, tag: str | None) -> str | None:
    """A worker tag given by name or ID as the ID the Manager wants."""
    if not tag:
        return None
    tags = api.worker_tags()
    for item in tags:
        if tag in (item.get("id"), item.get("name")):
            return str(item.get("id") or tag)
    known = ", ".join(str(t.get("name")) for t in tags) or "none"
    raise SubmitError(f"the Manager at {api.url} has no worker tag {tag!r} (it has: {known})")


def job_spec_for_blend(
    api: FlamencoAPI,
    blendfile: Path,
    *,
    job_type: str,
    name: str | None = None,
    priority: int = 50,
    worker_tag: str | None = None,
    assignments: Sequence[str] = (),
) -> JobSpec:
    """The complete job for `blendfile`, or a one-line SubmitError before anything is sent."""
    given = parse_assignments(assignments)
    kind = api.job_type(job_type)
    check_keys(kind, given)
    if not Path(blendfile).is_file():
        raise SubmitError(f"blend file not found: {blendfile}")
    scene = read_scene(Path(blendfile))
    bpy, context = blend_context(Path(blendfile), scene)
    jobname = (name or "").strip() or Path(blendfile).stem
    filled = fill_settings(
        kind,
        given,
        bpy=bpy,
        context=context,
        jobname=jobname,
        fallbacks={OUTPUT_ROOT_KEY: output_directory(Path(blendfile), scene.output_path)},
    )
    return JobSpec(
        type=kind.name,
        name=jobname,
        priority=priority,
        worker_tag=resolve_worker_tag(api, worker_tag),
        settings=filled.require_complete(),
    )
