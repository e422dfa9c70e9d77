"""Job setting values: evaluating `eval` expressions, typing values, filling a whole type.

Expressions see the names Flamenco's add-on gives them: `bpy`, `C` (the context),
`jobname`, `Path` (pathlib), `abspath(path)` (blend-relative `//` paths made absolute,
`..` folded), `last_n_dir_parts(n, filepath=None)` (the last n directories of a file's
folder, of the blend file when none is given; relative; empty for n <= 0), and
`settings` (the job's settings so far, by attribute). `bpy` needs only `bpy.data.filepath`
and `bpy.path.abspath`, so outside Blender a stand-in object serves (see blendscene.py).
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SubmitError
from .jobtypes import BLENDFILE_KEY, JobSetting, JobType

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
_SETTINGS_REF = re.compile(r"\bsettings\s*\.\s*([A-Za-z_]\w*)")


class SettingEvalError(SubmitError):
    """An `eval` expression raised; str() names the setting and the error."""


class SettingValueError(SubmitError):
    """A value does not fit its setting (type, choices, range), or a required one is missing."""


class SettingsView(Mapping[str, Any]):
    """`settings.key` access to a live mapping of job settings, for expressions."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_values", values)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"job settings have no {name!r}") from None

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"settings({dict(self._values)!r})"


def _blend_abspath(bpy: Any, path: str) -> str:
    """bpy.path.abspath when there is one; else `//` relative to bpy.data.filepath."""
    helper = getattr(getattr(bpy, "path", None), "abspath", None)
    if helper is not None:
        return str(helper(path))
    if path.startswith("//"):
        blend = getattr(getattr(bpy, "data", None), "filepath", "") or ""
        return os.path.join(os.path.dirname(blend), path[2:])
    return path


def make_abspath(bpy: Any) -> Any:
    def abspath(filepath: str | os.PathLike[str]) -> Path:
        absolute = os.path.abspath(_blend_abspath(bpy, os.fspath(filepath)))
        return Path(os.path.normpath(absolute))

    return abspath


def make_last_n_dir_parts(bpy: Any) -> Any:
    abspath = make_abspath(bpy)

    def last_n_dir_parts(n: int, filepath: str | os.PathLike[str] | None = None) -> Path:
        if n <= 0:
            return Path()
        if filepath is None:
            filepath = getattr(getattr(bpy, "data", None), "filepath", "") or ""
        folder = abspath(filepath).parent
        parts = folder.parts
        if n >= len(parts):
            return folder.relative_to(folder.anchor)
        return Path(*parts[-n:])

    return last_n_dir_parts


def eval_namespace(
    *, bpy: Any, context: Any, jobname: str, settings: Mapping[str, Any]
) -> dict[str, Any]:
    """The names an `eval` expression may use; `settings` stays live (not copied)."""
    return {
        "bpy": bpy,
        "C": context,
        "jobname": jobname,
        "Path": Path,
        "abspath": make_abspath(bpy),
        "last_n_dir_parts": make_last_n_dir_parts(bpy),
        "settings": settings if isinstance(settings, SettingsView) else SettingsView(settings),
    }


def evaluate_setting(setting: JobSetting, namespace: Mapping[str, Any]) -> Any:
    """The value of the setting's expression (its default when it has none)."""
    if not setting.eval:
        return setting.default
    try:
        # The Manager's job type is trusted code, as in Flamenco's add-on. A fresh globals
        # dict per call: expressions leave no names behind, and comprehensions inside them
        # see the namespace (they would not if it were passed as locals).
        return eval(setting.eval, dict(namespace))
    except Exception as ex:
        raise SettingEvalError(f"setting {setting.key!r}: {type(ex).__name__}: {ex}") from ex


def coerce_value(setting: JobSetting, value: Any) -> Any:
    """`value` (any type, or text from a command line) as the setting's type; checked
    against its choices and its propargs min/max."""
    key, kind = setting.key, setting.type
    if value is None:
        raise SettingValueError(f"setting {key!r}: no value")
    try:
        if kind == "string":
            typed: Any = value if isinstance(value, str) else str(value)
        elif kind == "bool":
            typed = _to_bool(value)
        elif kind == "int32":
            typed = _to_int(value)
            if not INT32_MIN <= typed <= INT32_MAX:
                raise ValueError("out of the int32 range")
        else:
            typed = _to_float(value)
    except (TypeError, ValueError) as ex:
        raise SettingValueError(
            f"setting {key!r}: {value!r} is not a valid {kind} ({ex})"
        ) from None
    if setting.choices is not None and kind == "string" and typed not in setting.choices:
        raise SettingValueError(
            f"setting {key!r}: {typed!r} is not one of {', '.join(setting.choices)}"
        )
    if kind in ("int32", "float"):
        _check_range(setting, typed)
    return typed


def _to_bool(value: Any) -> bool:
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError("expected true or false")
    return bool(value)


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError("a bool is not a number")
    if isinstance(value, str):
        return int(value.strip(), 10)
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("not a whole number")
        return int(value)
    return int(value)


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError("a bool is not a number")
    number = float(value.strip() if isinstance(value, str) else value)
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError("not a finite number")
    return number


def _check_range(setting: JobSetting, number: float) -> None:
    limits = setting.propargs or {}
    low, high = limits.get("min"), limits.get("max")
    if isinstance(low, int | float) and number < low:
        raise SettingValueError(f"setting {setting.key!r}: {number} is below its minimum {low}")
    if isinstance(high, int | float) and number > high:
        raise SettingValueError(f"setting {setting.key!r}: {number} is above its maximum {high}")


@dataclass(frozen=True)
class FilledSettings:
    """Every setting of a job type that got a value, and the required ones that did not."""

    values: dict[str, Any]
    missing: tuple[str, ...]

    def require_complete(self) -> dict[str, Any]:
        if self.missing:
            names = ", ".join(self.missing)
            raise SettingValueError(f"required job setting(s) without a value: {names}")
        return self.values


def evaluation_order(job_type: JobType) -> list[JobSetting]:
    """The type's settings, each expression after the settings its `settings.x` names
    (declaration order otherwise; a cycle keeps declaration order)."""
    by_key = {s.key: s for s in job_type.settings}
    ordered: list[JobSetting] = []
    state: dict[str, int] = {}  # 1: being placed, 2: placed

    def place(setting: JobSetting) -> None:
        if state.get(setting.key):
            return
        state[setting.key] = 1
        for ref in _SETTINGS_REF.findall(setting.eval or ""):
            if ref in by_key and not state.get(ref):
                place(by_key[ref])
        state[setting.key] = 2
        ordered.append(setting)

    for setting in job_type.settings:
        place(setting)
    return ordered


def fill_settings(
    job_type: JobType,
    given: Mapping[str, Any],
    *,
    bpy: Any = None,
    context: Any = None,
    jobname: str = "",
    evaluate: bool = True,
    always_evaluate: Collection[str] = (),
    fallbacks: Mapping[str, Any] | None = None,
) -> FilledSettings:
    """Values for every setting of `job_type` but `blendfile` (the engine sets that).

    Per setting: the given value, unless its key is in `always_evaluate` (Flamenco
    evaluates hidden settings and those whose "automatic value" toggle is on at submit
    time); else its `eval` expression (when `evaluate` and `context` are given); else its
    default; else `fallbacks[key]` (a submitter's own way to find a value, e.g. the
    scene's output folder for a render output root); else nothing, which is an error for a required
    setting (see FilledSettings.missing). Values are typed with coerce_value(). Given
    keys the type does not have are kept as they are.
    """
    values: dict[str, Any] = {}
    view = SettingsView(values)
    can_eval = evaluate and context is not None
    namespace = eval_namespace(bpy=bpy, context=context, jobname=jobname, settings=view)
    for key, value in given.items():
        if job_type.setting(key) is None and key != BLENDFILE_KEY:
            values[key] = value
    # Given values and defaults first, so expressions can use any of them.
    for setting in job_type.settings:
        if setting.key == BLENDFILE_KEY:
            continue
        if setting.key in given and setting.key not in always_evaluate:
            values[setting.key] = coerce_value(setting, given[setting.key])
        elif not (can_eval and setting.eval) and setting.has_default:
            values[setting.key] = coerce_value(setting, setting.default)
    for setting in evaluation_order(job_type):
        if setting.key == BLENDFILE_KEY or setting.key in values:
            continue
        if can_eval and setting.eval:
            if _lacks_input(setting, job_type, values):
                continue  # the setting it reads is reported missing; that is the real error
            values[setting.key] = coerce_value(setting, evaluate_setting(setting, namespace))
        elif setting.has_default:
            values[setting.key] = coerce_value(setting, setting.default)
        elif fallbacks and fallbacks.get(setting.key) is not None:
            values[setting.key] = coerce_value(setting, fallbacks[setting.key])
        elif setting.key in given:  # to be evaluated, but nothing to evaluate: keep it
            values[setting.key] = coerce_value(setting, given[setting.key])
    missing = tuple(
        s.key
        for s in job_type.settings
        if s.required and s.key != BLENDFILE_KEY and values.get(s.key) is None
    )
    ordered = {k: values[k] for k in _ordered_keys(job_type, values)}
    return FilledSettings(values=ordered, missing=missing)


def _lacks_input(setting: JobSetting, job_type: JobType, values: Mapping[str, Any]) -> bool:
    """Whether the expression reads a setting of the type that has no value."""
    refs = _SETTINGS_REF.findall(setting.eval or "")
    return any(job_type.setting(ref) is not None and ref not in values for ref in refs)


def _ordered_keys(job_type: JobType, values: Mapping[str, Any]) -> list[str]:
    """The type's declaration order, then any extra keys."""
    keys = [k for k in job_type.keys if k in values]
    return keys + [k for k in values if k not in keys]
