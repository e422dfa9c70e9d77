"""Job types as a Flamenco Manager lists them (`GET /api/v3/jobs/types`), as plain values.

A setting's fields follow Flamenco's `AvailableJobSetting`: `key`, `type` (string, int32,
float, bool), optional `subtype`, `choices`, `default`, `eval` (a Python expression the
submitter evaluates in Blender), `evalInfo`, `visible` (visible, submission, web,
hidden), `required`, `editable`, `propargs`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import SubmitError

SETTING_TYPES = ("string", "int32", "float", "bool")
VISIBILITIES = ("visible", "submission", "web", "hidden")
BLENDFILE_KEY = "blendfile"  # the setting the submitter fills with the blend's farm path


@dataclass(frozen=True)
class JobSetting:
    key: str
    type: str
    subtype: str | None = None
    label: str = ""
    description: str = ""
    choices: tuple[str, ...] | None = None
    default: Any = None
    eval: str | None = None
    eval_info: dict[str, Any] | None = None
    visible: str = "visible"
    required: bool = False
    editable: bool = True
    propargs: dict[str, Any] | None = None

    @property
    def display_label(self) -> str:
        """The label, or one made from the key ("render_output_root" -> "Render Output Root")."""
        return self.label or self.key.title().replace("_", " ")

    @property
    def shown_when_submitting(self) -> bool:
        """Whether a submitter shows it (Flamenco: visibility "visible" or "submission")."""
        return self.visible in ("visible", "submission")

    @property
    def has_default(self) -> bool:
        return self.default is not None

    @property
    def show_link_button(self) -> bool:
        """evalInfo.showLinkButton: an "evaluate at submit" toggle next to the field."""
        return bool((self.eval_info or {}).get("showLinkButton"))

    @property
    def eval_description(self) -> str:
        return str((self.eval_info or {}).get("description", ""))


@dataclass(frozen=True)
class JobType:
    name: str
    label: str
    description: str
    etag: str
    settings: tuple[JobSetting, ...]

    def setting(self, key: str) -> JobSetting | None:
        for setting in self.settings:
            if setting.key == key:
                return setting
        return None

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(s.key for s in self.settings)

    @property
    def takes_blendfile(self) -> bool:
        """Flamenco's add-on fills `blendfile` only when the type has it as a string."""
        setting = self.setting(BLENDFILE_KEY)
        return setting is not None and setting.type == "string"


class JobTypeFormatError(SubmitError):
    """The Manager's job type list does not have the documented shape."""


def parse_job_types(payload: Any) -> list[JobType]:
    """`{"job_types": [...]}` (or the bare list) into JobType values."""
    items = payload.get("job_types") if isinstance(payload, Mapping) else payload
    if not isinstance(items, list):
        raise JobTypeFormatError("the Manager's job type list has no 'job_types' array")
    return [parse_job_type(item) for item in items]


def parse_job_type(item: Any) -> JobType:
    if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
        raise JobTypeFormatError("a job type in the Manager's list has no name")
    name = item["name"]
    raw_settings = item.get("settings") or []
    if not isinstance(raw_settings, list):
        raise JobTypeFormatError(f"job type {name!r}: 'settings' is not a list")
    return JobType(
        name=name,
        label=str(item.get("label") or name),
        description=str(item.get("description") or ""),
        etag=str(item.get("etag") or ""),
        settings=tuple(_parse_setting(name, raw) for raw in raw_settings),
    )


def _parse_setting(type_name: str, raw: Any) -> JobSetting:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("key"), str):
        raise JobTypeFormatError(f"job type {type_name!r}: a setting has no key")
    key = raw["key"]
    kind = raw.get("type")
    if kind not in SETTING_TYPES:
        raise JobTypeFormatError(f"job type {type_name!r}, setting {key!r}: unknown type {kind!r}")
    choices = raw.get("choices")
    visible = raw.get("visible") or "visible"
    return JobSetting(
        key=key,
        type=kind,
        subtype=raw.get("subtype") or None,
        label=str(raw.get("label") or ""),
        description=str(raw.get("description") or ""),
        choices=tuple(str(c) for c in choices) if isinstance(choices, list) else None,
        default=raw.get("default"),
        eval=raw.get("eval") or None,
        eval_info=dict(raw["evalInfo"]) if isinstance(raw.get("evalInfo"), Mapping) else None,
        visible=visible if visible in VISIBILITIES else "visible",
        required=bool(raw.get("required", False)),
        editable=bool(raw.get("editable", True)),
        propargs=dict(raw["propargs"]) if isinstance(raw.get("propargs"), Mapping) else None,
    )
