"""Job types and their settings: parsing the Manager's list, evaluating `eval` expressions
with Flamenco's names, typing values, filling a whole type."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from flamenco_shaman.engine.flamenco import (
    JobSetting,
    SettingEvalError,
    SettingValueError,
    coerce_value,
    eval_namespace,
    evaluate_setting,
    fill_settings,
    parse_job_types,
)
from flamenco_shaman.engine.flamenco.evaluate import evaluation_order
from flamenco_standin import DEFAULT_JOB_TYPES, with_etag

BLEND = "/projects/sprite/scenes/shot_010/lighting.blend"


def _types():
    return {
        t.name: t for t in parse_job_types({"job_types": [with_etag(d) for d in DEFAULT_JOB_TYPES]})
    }


def _blender(frame_start=1, frame_end=250, fmt="PNG", ext=".png", fps=24, fps_base=1.0):
    bpy = SimpleNamespace(data=SimpleNamespace(filepath=BLEND))
    render = SimpleNamespace(
        fps=fps,
        fps_base=fps_base,
        file_extension=ext,
        image_settings=SimpleNamespace(file_format=fmt, use_preview=False),
    )
    context = SimpleNamespace(
        scene=SimpleNamespace(
            name="Scene", frame_start=frame_start, frame_end=frame_end, render=render
        )
    )
    return bpy, context


def test_parsing_keeps_every_field_of_a_setting():
    render = _types()["simple-blender-render"]
    frames = render.setting("frames")
    assert frames.type == "string" and frames.required and frames.show_link_button
    assert frames.eval_description == "Scene frame range"
    assert render.setting("add_path_components").propargs == {"min": 0, "max": 32}
    assert render.setting("render_output_path").editable is False
    assert (
        render.setting("fps").visible == "hidden"
        and not render.setting("fps").shown_when_submitting
    )
    assert render.setting("chunk_size").default == 1
    assert render.setting("render_output_root").display_label == "Render Output Root"
    assert render.takes_blendfile and len(render.etag) == 40
    assert _types()["settings-test"].setting("mode").choices == ("echo", "sleep", "both")
    assert not _types()["echo-sleep-test"].takes_blendfile


def test_namespace_has_exactly_flamencos_names():
    bpy, context = _blender()
    names = eval_namespace(bpy=bpy, context=context, jobname="shot", settings={})
    assert set(names) == {"bpy", "C", "jobname", "Path", "abspath", "last_n_dir_parts", "settings"}


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, ""),
        (-1, ""),
        (1, "shot_010"),
        (2, "scenes/shot_010"),
        (200, "projects/sprite/scenes/shot_010"),
    ],
)
def test_last_n_dir_parts_of_the_blend_file(n, expected):
    bpy, context = _blender()
    names = eval_namespace(bpy=bpy, context=context, jobname="j", settings={})
    assert names["last_n_dir_parts"](n) == Path(expected)


def test_abspath_makes_blend_relative_paths_absolute_and_folds_dotdot():
    bpy, context = _blender()
    abspath = eval_namespace(bpy=bpy, context=context, jobname="j", settings={})["abspath"]
    assert abspath("//../renders") == Path("/projects/sprite/scenes/renders")
    assert abspath("/render/./x/../y") == Path("/render/y")


def test_the_render_output_path_expression_gives_flamencos_path():
    render = _types()["simple-blender-render"]
    bpy, context = _blender()
    settings = {"render_output_root": "/render", "add_path_components": 2}
    names = eval_namespace(bpy=bpy, context=context, jobname="shot", settings=settings)
    value = evaluate_setting(render.setting("render_output_path"), names)
    assert value == "/render/scenes/shot_010/shot/{timestamp}/######"


def test_an_expression_that_raises_names_the_setting_and_the_error():
    setting = JobSetting(key="frames", type="string", eval="x + 1")
    with pytest.raises(SettingEvalError) as info:
        evaluate_setting(setting, {"settings": {}})
    assert str(info.value) == "setting 'frames': NameError: name 'x' is not defined"


def test_settings_are_read_by_attribute_and_a_missing_one_is_named():
    bpy, context = _blender()
    names = eval_namespace(bpy=bpy, context=context, jobname="j", settings={"a": 3})
    assert evaluate_setting(JobSetting(key="b", type="int32", eval="settings.a * 2"), names) == 6
    with pytest.raises(SettingEvalError, match="setting 'c': AttributeError: .*'nope'"):
        evaluate_setting(JobSetting(key="c", type="int32", eval="settings.nope"), names)


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("string", 12, "12"),
        ("int32", "7", 7),
        ("int32", 7.0, 7),
        ("float", "23.976", 23.976),
        ("float", 24, 24.0),
        ("bool", "true", True),
        ("bool", "off", False),
        ("bool", 0, False),
    ],
)
def test_values_are_typed_by_the_setting(kind, value, expected):
    typed = coerce_value(JobSetting(key="k", type=kind), value)
    assert typed == expected and type(typed) is type(expected)


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        (JobSetting(key="k", type="int32"), "seven", "setting 'k': 'seven' is not a valid int32"),
        (JobSetting(key="k", type="int32"), 2.5, "not a whole number"),
        (JobSetting(key="k", type="int32"), 2**31, "int32 range"),
        (JobSetting(key="k", type="float"), "nan", "not a finite number"),
        (JobSetting(key="k", type="bool"), "maybe", "expected true or false"),
        (JobSetting(key="k", type="string", choices=("a", "b")), "c", "'c' is not one of a, b"),
        (
            JobSetting(key="k", type="int32", propargs={"min": 0, "max": 32}),
            33,
            "above its maximum 32",
        ),
        (JobSetting(key="k", type="int32", propargs={"min": 0}), "-1", "below its minimum 0"),
        (JobSetting(key="k", type="string"), None, "setting 'k': no value"),
    ],
)
def test_values_that_do_not_fit_are_refused_with_the_setting_named(setting, value, message):
    with pytest.raises(SettingValueError, match=message):
        coerce_value(setting, value)


def test_expressions_come_after_the_settings_they_read():
    kind = parse_job_types(
        [
            {
                "name": "t",
                "label": "T",
                "etag": "e",
                "settings": [
                    {
                        "key": "path",
                        "type": "string",
                        "eval": "settings.root + '/' + settings.leaf",
                    },
                    {"key": "leaf", "type": "string", "eval": "jobname"},
                    {"key": "root", "type": "string", "default": "/r"},
                ],
            }
        ]
    )[0]
    assert [s.key for s in evaluation_order(kind)] == ["root", "leaf", "path"]
    bpy, context = _blender()
    filled = fill_settings(kind, {}, bpy=bpy, context=context, jobname="shot")
    assert filled.values == {"path": "/r/shot", "leaf": "shot", "root": "/r"}


def test_fill_evaluates_what_blender_would_and_reports_missing_required_settings():
    render = _types()["simple-blender-render"]
    bpy, context = _blender(frame_start=5, frame_end=9, fps=30, fps_base=1.001)
    filled = fill_settings(render, {"chunk_size": "2"}, bpy=bpy, context=context, jobname="shot")
    assert filled.missing == ("render_output_root",)
    assert filled.values["frames"] == "5-9" and filled.values["chunk_size"] == 2
    assert filled.values["fps"] == pytest.approx(30 / 1.001)
    assert "blendfile" not in filled.values
    with pytest.raises(SettingValueError, match="without a value: render_output_root"):
        filled.require_complete()


def test_fill_uses_given_values_then_expressions_then_defaults_then_fallbacks():
    render = _types()["simple-blender-render"]
    bpy, context = _blender()
    filled = fill_settings(
        render,
        {"frames": "1-3"},
        bpy=bpy,
        context=context,
        jobname="shot",
        fallbacks={"render_output_root": "/out", "frames": "9-9"},
    )
    values = filled.require_complete()
    assert values["frames"] == "1-3"
    assert values["render_output_root"] == "/out" and values["add_path_components"] == 0
    assert values["render_output_path"] == "/out/shot/{timestamp}/######"


def test_always_evaluate_overrides_a_given_value_as_flamenco_does_for_hidden_settings():
    render = _types()["simple-blender-render"]
    bpy, context = _blender(fmt="OPEN_EXR", ext=".exr")
    given = {"frames": "1-2", "render_output_root": "/r", "format": "PNG"}
    filled = fill_settings(render, given, bpy=bpy, context=context, always_evaluate={"format"})
    assert filled.values["format"] == "OPEN_EXR"


def test_without_blender_expressions_fall_back_to_defaults():
    render = _types()["simple-blender-render"]
    filled = fill_settings(render, {"frames": "1"}, evaluate=False)
    assert "fps" not in filled.values and filled.values["chunk_size"] == 1
    assert set(filled.missing) == {"render_output_root", "format", "image_file_extension", "scene"}
