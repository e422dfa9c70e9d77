"""Submit creates the render job, in real Blender (bpy 4.5), against the stand-in Manager.

The panel offers the Manager's job types and draws the chosen type's settings from its
definition, evaluated in Blender; Submit sends the job Flamenco's add-on would send; the
panel then shows the job and a button to its page in the Manager's web UI. Each Blender
session runs in a subprocess (see test_addon_blender.py) and prints one RESULT line.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from flamenco_standin import SIMPLE_BLENDER_RENDER, FlamencoStandin
from shared_files import blendfiles_dir
from test_addon_blender import LAYOUT, addon_zip, run_blender  # noqa: F401  (fixture)

pytestmark = pytest.mark.blender

BLENDFILES = blendfiles_dir()

MODULES = """
panel = sys.modules[EXTENSION + ".ui.panel"]
catalog = sys.modules[EXTENSION + ".ui.catalog"]
job_type_props = sys.modules[EXTENSION + ".ui.job_type_props"]
job_spec = sys.modules[EXTENSION + ".ui.job_spec"]
"""


@pytest.fixture(scope="module")
def farm(tmp_path_factory) -> FlamencoStandin:
    standin = FlamencoStandin(tmp_path_factory.mktemp("jobs-farm"))
    standin.start()
    yield standin
    standin.stop()


def blend_copy(directory: Path, name: str = "basic_file.blend") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(BLENDFILES / name, directory / name)
    return directory / name


# --- The panel, then Submit, in one session -------------------------------------------------

PANEL_AND_SUBMIT = (
    """
install(sys.argv[1])
prefs().manager_url = sys.argv[2]
bpy.ops.wm.open_mainfile(filepath=sys.argv[3])
render_root = sys.argv[4]
"""
    + MODULES
    + LAYOUT
    + """
scene = bpy.context.scene
scene.render.image_settings.file_format = "PNG"  # basic_file.blend renders a video
scene.frame_start, scene.frame_end = 3, 7
scene.render.fps, scene.render.fps_base = 30, 1.001
settings = scene.flamenco_shaman
before_refresh = settings.job_type_menu
refreshed = call(bpy.ops.flamenco_shaman.refresh_job_types)
kind = catalog.current.job_type("simple-blender-render")
group = job_type_props.group_of(scene, kind)
live = job_spec.fill(bpy.context, kind).values
idle = draw(panel.draw_panel, bpy.context)
placeholders = dict(Layout.placeholders)
output_folder = os.path.dirname(bpy.path.abspath(scene.render.filepath))

settings.job_type_menu = "settings-test"
other_type = draw(panel.draw_panel, bpy.context)
other_props = {
    key: [p.identifier for p in group_.bl_rna.properties[key].enum_items]
    if group_.bl_rna.properties[key].type == "ENUM" else getattr(group_, key)
    for group_ in [job_type_props.group_of(scene, catalog.current.job_type("settings-test"))]
    for key in ("message", "mode", "loud", "scale")
}
settings.job_type_menu = "simple-blender-render"
rna = group.bl_rna.properties
components = rna["add_path_components"]
rna_test = job_type_props.group_of(scene, catalog.current.job_type("settings-test")).bl_rna
shapes = {
    "render_output_root": [rna["render_output_root"].subtype, rna["render_output_root"].default],
    "add_path_components": [components.hard_min, components.hard_max],
    "chunk_size": [rna["chunk_size"].type, rna["chunk_size"].default],
    "scale": [rna_test.properties["scale"].hard_min, rna_test.properties["scale"].hard_max],
}

group.render_output_root = render_root
settings.job_name = "shot-010"
settings.priority = 70
settings.submit_paused = True
tag = catalog.current.worker_tags[0]
settings.worker_tag_menu = tag.id
outcome, error = call(bpy.ops.flamenco_shaman.submit)
state = bpy.context.window_manager.flamenco_shaman
finished = draw(panel.draw_panel, bpy.context)
result = dict(job_id=state.job_id, job_name=state.job_name, job_url=state.job_url)
result.update(farm_path=state.farm_path, checkout_path=state.checkout_path)
result.update(job_type=settings.job_type, worker_tag=settings.worker_tag)
bpy.ops.preferences.addon_disable(module=EXTENSION)
left_over = [name for name in dir(bpy.types) if name.startswith("FLAMENCO_SHAMAN_PG_")]
left_over += [n for n in ("flamenco_shaman_job_settings",) if hasattr(bpy.types.Scene, n)]
done(
    **result,
    left_over=left_over,
    before_refresh=before_refresh,
    refreshed=refreshed,
    job_types=[t.name for t in catalog.current.job_types],
    worker_tags=[[t.id, t.name] for t in catalog.current.worker_tags],
    live=live,
    idle=idle,
    shapes=shapes,
    placeholders=placeholders,
    output_folder=output_folder,
    other_type=other_type,
    other_props=other_props,
    outcome=outcome,
    error=error,
    scene_name=scene.name,
    file_format=scene.render.image_settings.file_format,
    file_extension=scene.render.file_extension,
    finished=finished,
    project=sorted(os.listdir(os.path.dirname(sys.argv[3]))),
)
"""
)


@pytest.fixture(scope="module")
def session(addon_zip, farm, tmp_path_factory) -> dict:  # noqa: F811
    work = tmp_path_factory.mktemp("panel-submit")
    blend = blend_copy(work / "project")
    report = run_blender(
        work, PANEL_AND_SUBMIT, addon_zip, farm.url, blend, work / "renders", timeout=240
    )
    report["render_root"] = str(work / "renders")
    return report


def test_refresh_lists_the_managers_job_types_and_worker_tags(session, farm):
    assert session["refreshed"] == [["FINISHED"], ""]
    assert session["job_types"] == ["echo-sleep-test", "settings-test", "simple-blender-render"]
    assert session["worker_tags"] == [[t["id"], t["name"]] for t in farm.state.worker_tags]


def test_job_type_defaults_to_simple_blender_render(session):
    assert session["before_refresh"] == "simple-blender-render"
    assert session["job_type"] == "simple-blender-render"


def test_panel_draws_the_shown_settings_of_the_chosen_type(session):
    drawn = session["idle"]
    props = [text for kind, text in drawn if kind == "prop"]
    for key in ("chunk_size", "render_output_root", "add_path_components", "autoeval_frames"):
        assert key in props
    for hidden in ("fps", "format", "image_file_extension", "has_previews", "scene", "blendfile"):
        assert hidden not in props
    labels = [text for kind, text in drawn if kind == "label"]
    assert "Frames" in labels and "3-7  (Scene frame range)" in labels
    assert "Render Output Path" in labels


def test_empty_fields_show_what_submit_will_use_instead(session):
    assert session["placeholders"]["job_name"] == "basic_file"
    assert session["placeholders"]["render_output_root"] == session["output_folder"]
    assert session["live"]["render_output_root"] == session["output_folder"]


def test_fields_take_subtype_default_and_limits_from_the_definition(session):
    assert session["shapes"] == {
        "render_output_root": ["DIR_PATH", ""],
        "add_path_components": [0, 32],
        "chunk_size": ["INT", 1],
        "scale": [0.0, 10.0],
    }


def test_panel_evaluates_settings_in_blender(session):
    live = session["live"]
    assert live["frames"] == "3-7"
    assert live["fps"] == pytest.approx(30 / 1.001)
    assert live["format"] == session["file_format"]
    assert live["scene"] == session["scene_name"]
    assert "blendfile" not in live


def test_panel_draws_choices_bools_and_floats_of_another_type(session):
    props = [text for kind, text in session["other_type"] if kind == "prop"]
    assert ["message", "mode", "loud", "scale"] == [p for p in props if p in session["other_props"]]
    assert session["other_props"] == {
        "message": "hello",
        "mode": ["echo", "sleep", "both"],
        "loud": False,
        "scale": 1.5,
    }


def test_submit_creates_the_job_flamenco_would_create(session, farm):
    assert session["outcome"] == ["FINISHED"], session["error"]
    sent = farm.received_jobs[-1]
    root = session["render_root"]
    checkout = session["checkout_path"]
    etag = farm.state.job_types["simple-blender-render"]["etag"]
    assert sent == {
        "name": "shot-010",
        "type": "simple-blender-render",
        "type_etag": etag,
        "priority": 70,
        "submitter_platform": "linux",
        "settings": {
            "frames": "3-7",
            "chunk_size": 1,
            "render_output_root": root,
            "add_path_components": 0,
            "render_output_path": f"{root}/shot-010/{{timestamp}}/######",
            "blendfile": f"{{jobs}}/{checkout}/basic_file.blend",
            "fps": pytest.approx(30 / 1.001),
            "format": session["file_format"],
            "image_file_extension": session["file_extension"],
            "has_previews": False,
            "scene": session["scene_name"],
        },
        "metadata": {},
        "storage": {"shaman_checkout_id": checkout},
        "worker_tag": farm.state.worker_tags[0]["id"],
        "initial_status": "paused",
    }
    assert farm.state.jobs[session["job_id"]]["status"] == "paused"


def test_submitted_blendfile_resolves_to_the_checkout(session, farm):
    blend = farm.jobs / session["checkout_path"] / "basic_file.blend"
    assert blend.is_file()
    assert session["farm_path"] == f"{{jobs}}/{session['checkout_path']}/basic_file.blend"
    assert session["project"] == ["basic_file.blend"]  # no temporary copy left


def test_panel_shows_the_job_and_a_button_to_its_web_page(session, farm):
    job_id = session["job_id"]
    assert job_id in farm.state.jobs
    assert session["job_name"] == "shot-010"
    assert session["job_url"] == f"{farm.url}app/jobs/{job_id}"
    finished = session["finished"]
    assert ["label", f"Job 'shot-010' ({job_id})"] in finished
    assert ["operator", "flamenco_shaman.open_job"] in finished
    assert ["operator", "flamenco_shaman.copy_farm_path"] in finished
    assert [kind for kind, text in finished if text == session["farm_path"]] == ["label"]


def test_disabling_the_add_on_unregisters_the_job_type_properties(session):
    assert session["left_over"] == []


# --- Background mode: the Manager from the environment ---------------------------------------

BACKGROUND = """
install(sys.argv[1])
bpy.ops.wm.open_mainfile(filepath=sys.argv[2])
# The artist's saved file: basic_file.blend renders a video, which the job type refuses.
bpy.context.scene.render.image_settings.file_format = "PNG"
bpy.ops.wm.save_mainfile()
state = bpy.context.window_manager.flamenco_shaman
outcome = sorted(bpy.ops.flamenco_shaman.submit())
created = dict(job_id=state.job_id, job_url=state.job_url, farm_path=state.farm_path)
os.environ["FLAMENCO_MANAGER_URL"] = "http://127.0.0.1:1/"
try:
    bpy.ops.flamenco_shaman.submit()
    failure = None
except RuntimeError as ex:
    failure = str(ex)
done(outcome=outcome, failure=failure, url_set=prefs().is_property_set("manager_url"), **created)
"""


def test_background_submit_uses_the_manager_from_the_environment(addon_zip, farm, tmp_path):  # noqa: F811
    blend = blend_copy(tmp_path / "project")
    os.environ["FLAMENCO_MANAGER_URL"] = farm.url
    try:
        before = len(farm.received_jobs)
        report = run_blender(tmp_path, BACKGROUND, addon_zip, blend)
    finally:
        del os.environ["FLAMENCO_MANAGER_URL"]
    assert report["outcome"] == ["FINISHED"]
    assert not report["url_set"]
    assert report["job_id"] in farm.state.jobs
    assert report["job_url"] == f"{farm.url}app/jobs/{report['job_id']}"
    assert len(farm.received_jobs) == before + 1
    sent = farm.received_jobs[-1]
    assert sent["type"] == "simple-blender-render"
    assert sent["name"] == "basic_file"
    assert sent["priority"] == 50 and "initial_status" not in sent and "worker_tag" not in sent
    assert sent["settings"]["blendfile"] == report["farm_path"]
    assert "Cannot get the job types: " in report["failure"]
    assert "http://127.0.0.1:1/" in report["failure"]


# --- The manager's warnings about the checkout ----------------------------------------------

# A checkout named "aux": Linux takes it, a Windows worker cannot (a device name). The
# manager (shaman.portableNames: warn) makes the checkout and says so in its answer.
WARNED = (
    """
install(sys.argv[1])
prefs().manager_url = sys.argv[2]
bpy.ops.wm.open_mainfile(filepath=sys.argv[3])
"""
    + MODULES
    + LAYOUT
    + """
bpy.context.scene.render.image_settings.file_format = "PNG"
bpy.context.scene.flamenco_shaman.checkout_name = "aux"
outcome, error = call(bpy.ops.flamenco_shaman.submit)
state = bpy.context.window_manager.flamenco_shaman
done(
    outcome=outcome,
    error=error,
    checkout_path=state.checkout_path,
    warning_count=state.warning_count,
    finished=draw(panel.draw_panel, bpy.context),
)
"""
)


def test_panel_shows_the_managers_warnings_after_submit(addon_zip, farm, tmp_path):  # noqa: F811
    blend = blend_copy(tmp_path / "project")
    report = run_blender(tmp_path, WARNED, addon_zip, farm.url, blend)
    assert report["outcome"] == ["FINISHED"], report["error"]
    assert report["checkout_path"].split("/")[0].startswith("aux")
    assert report["warning_count"] == 1
    finished = report["finished"]
    assert ["label", "1 warning(s) from the manager:"] in finished
    lines = [text for kind, text in finished if kind == "label" and "reserved device" in text]
    assert lines == ["checkoutPath 'aux': 'aux' is a reserved device name on Windows"]


# --- Refusals: nothing is uploaded ----------------------------------------------------------

# An editable field with an expression and no link button: filled while empty.
NAMED_TYPE = {
    "name": "named-output",
    "label": "Named Output",
    "settings": [
        {"key": "title", "type": "string", "eval": "jobname.upper()"},
        {"key": "blendfile", "type": "string", "required": True, "visible": "web"},
    ],
}

BROKEN_TYPE = {
    "name": "broken-eval",
    "label": "Broken Expression",
    "settings": [
        {"key": "boom", "type": "string", "eval": "1 / 0", "visible": "hidden"},
        {"key": "blendfile", "type": "string", "required": True, "visible": "web"},
    ],
}

REFUSALS = (
    """
install(sys.argv[1])
prefs().manager_url = sys.argv[2]
bpy.ops.wm.open_mainfile(filepath=sys.argv[3])
"""
    + MODULES
    + LAYOUT
    + """
settings = bpy.context.scene.flamenco_shaman
call(bpy.ops.flamenco_shaman.refresh_job_types)
named = job_type_props.group_of(bpy.context.scene, catalog.current.job_type("named-output"))
filled = named.title
named.title = "typed by the artist"
settings.job_type = "named-output"
reevaluated = list(call(bpy.ops.flamenco_shaman.eval_setting, setting_key="title"))
reevaluated.append(named.title)

# A fetch still under way (never started here): the panel says so and offers Cancel.
catalog.pending = catalog.CatalogFetch("http://127.0.0.1:1/")
waiting = draw(panel.draw_panel, bpy.context)
cancelled = list(call(bpy.ops.flamenco_shaman.cancel)) + [catalog.pending.cancelled]
catalog.pending = None

settings.job_type = "broken-eval"
broken = call(bpy.ops.flamenco_shaman.submit)
broken_drawn = draw(panel.draw_panel, bpy.context)
settings.job_type = "no-such-type"
unknown = call(bpy.ops.flamenco_shaman.submit)
settings.job_type = "simple-blender-render"
refused = call(bpy.ops.flamenco_shaman.submit)
state = bpy.context.window_manager.flamenco_shaman
done(
    filled=filled,
    reevaluated=reevaluated,
    waiting=waiting,
    cancelled=cancelled,
    broken=broken,
    broken_drawn=broken_drawn,
    unknown=unknown,
    refused=refused,
    job_id=state.job_id,
    project=sorted(os.listdir(os.path.dirname(sys.argv[3]))),
)
"""
)


@pytest.fixture(scope="module")
def refusals(addon_zip, tmp_path_factory) -> tuple[dict, FlamencoStandin]:  # noqa: F811
    work = tmp_path_factory.mktemp("refusals")
    (work / "storage").mkdir()
    standin = FlamencoStandin(
        work / "storage", job_types=(SIMPLE_BLENDER_RENDER, NAMED_TYPE, BROKEN_TYPE)
    )
    standin.start()
    try:
        standin.refuse('This job type only renders images, and not "FFMPEG"')
        report = run_blender(work, REFUSALS, addon_zip, standin.url, blend_copy(work / "project"))
    finally:
        standin.stop()
    return report, standin


def test_empty_field_with_an_expression_is_filled_on_refresh(refusals):
    report, _ = refusals
    assert report["filled"] == "BASIC_FILE"  # jobname: the blend file's name


def test_evaluate_button_puts_the_automatic_value_back(refusals):
    report, _ = refusals
    assert report["reevaluated"] == [["FINISHED"], "", "BASIC_FILE"]


def test_a_pending_job_type_fetch_is_shown_and_can_be_cancelled(refusals):
    report, _ = refusals
    assert ["label", "Asking http://127.0.0.1:1/ for its job types ..."] in report["waiting"]
    assert ["operator", "flamenco_shaman.cancel"] in report["waiting"]
    assert report["cancelled"] == [["FINISHED"], "", True]


def test_failing_expression_names_the_setting_and_sends_nothing(refusals):
    report, standin = refusals
    outcome, error = report["broken"]
    assert outcome == ["CANCELLED"]
    assert "'boom'" in error and "ZeroDivisionError" in error
    assert standin.received_checks == [] or all(
        c["type"] != "broken-eval" for c in standin.received_checks
    )


def test_panel_names_a_failing_expression(refusals):
    report, _ = refusals
    problems = [text for kind, text in report["broken_drawn"] if kind == "label" and "boom" in text]
    assert problems and "ZeroDivisionError" in problems[0]


def test_unknown_job_type_is_refused_naming_what_the_manager_offers(refusals):
    report, _ = refusals
    outcome, error = report["unknown"]
    assert outcome == ["CANCELLED"]
    assert "no job type 'no-such-type'" in error
    assert "simple-blender-render" in error


def test_refused_job_check_shows_the_managers_message_and_uploads_nothing(refusals):
    report, standin = refusals
    outcome, error = report["refused"]
    assert outcome == ["CANCELLED"]
    assert 'This job type only renders images, and not "FFMPEG"' in error
    assert standin.shaman_requests() == []
    assert standin.received_jobs == []
    assert report["job_id"] == ""
    assert report["project"] == ["basic_file.blend"]


# --- A Manager without Shaman, and one that goes away after the checkout ----------------------

FAILURES = """
install(sys.argv[1])
bpy.ops.wm.open_mainfile(filepath=sys.argv[4])
bpy.context.scene.render.image_settings.file_format = "PNG"
state = bpy.context.window_manager.flamenco_shaman
outcomes = {}
for name, url in (("no_shaman", sys.argv[2]), ("gone", sys.argv[3])):
    prefs().manager_url = url
    outcome, error = call(bpy.ops.flamenco_shaman.submit)
    outcomes[name] = dict(outcome=outcome, error=error, state_error=state.error, job=state.job_id)
done(project=sorted(os.listdir(os.path.dirname(sys.argv[4]))), **outcomes)
"""


def test_manager_failures_are_one_clear_message_and_create_no_job(
    addon_zip,  # noqa: F811
    flamenco_factory,
    tmp_path,
):
    no_shaman = flamenco_factory(shaman_enabled=False)
    gone = flamenco_factory()
    gone.go_away_after_checkout()
    blend = blend_copy(tmp_path / "project")
    report = run_blender(tmp_path, FAILURES, addon_zip, no_shaman.url, gone.url, blend)

    assert report["no_shaman"]["outcome"] == ["CANCELLED"]
    assert "Shaman is disabled on the Manager at " + no_shaman.url in report["no_shaman"]["error"]
    assert no_shaman.received_jobs == [] and no_shaman.shaman_requests() == []

    assert report["gone"]["outcome"] == ["CANCELLED"]
    assert gone.url in report["gone"]["error"]
    assert report["gone"]["state_error"] and "\n" not in report["gone"]["state_error"]
    assert report["gone"]["job"] == ""
    assert gone.received_jobs == []
    assert report["project"] == ["basic_file.blend"]
