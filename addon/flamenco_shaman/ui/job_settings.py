"""How the panel treats a job type's settings, and what it hands the engine's
`fill_settings` at submit time. No bpy, so the rules are testable without Blender.

Flamenco's rules, learnt from its add-on's behaviour:
- `visible` and `submission` settings are shown; `hidden` and `web` ones are not, and are
  evaluated (or take their default) at submit time.
- A shown, editable setting is a field the artist types in, kept with the scene. With a
  link button (`evalInfo.showLinkButton`) it follows its expression while the link is on
  (the default): the panel shows the value live and it is evaluated again at submit.
- A shown, non-editable setting is evaluated live and again at submit time.
- An empty field with an expression gets the expression's value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..engine.flamenco.jobtypes import BLENDFILE_KEY, JobSetting, JobType

AUTOEVAL_PREFIX = "autoeval_"


def autoeval_name(setting: JobSetting) -> str:
    """The property holding a setting's link toggle."""
    return AUTOEVAL_PREFIX + setting.key


def is_stored(setting: JobSetting) -> bool:
    """Whether the artist types the value: shown and editable (the scene keeps it)."""
    return setting.shown_when_submitting and setting.editable and setting.key != BLENDFILE_KEY


def is_empty(value: Any) -> bool:
    return value is None or value == ""


def shown_settings(job_type: JobType) -> list[JobSetting]:
    return [s for s in job_type.settings if s.shown_when_submitting and s.key != BLENDFILE_KEY]


def follows_expression(setting: JobSetting, autoeval: Callable[[str], bool]) -> bool:
    """Whether the value comes from the expression whatever the field holds."""
    if not setting.eval:
        return False
    if not setting.shown_when_submitting:
        return True
    return setting.show_link_button and autoeval(setting.key)


def submit_inputs(
    job_type: JobType, stored: Mapping[str, Any], autoeval: Callable[[str], bool]
) -> tuple[dict[str, Any], set[str]]:
    """(given, always_evaluate) for the engine's fill_settings.

    Empty fields are not given, so their expression, default or fallback applies.
    """
    given = {
        s.key: stored[s.key]
        for s in job_type.settings
        if is_stored(s) and not is_empty(stored.get(s.key))
    }
    always = {s.key for s in job_type.settings if follows_expression(s, autoeval)}
    return given, always
