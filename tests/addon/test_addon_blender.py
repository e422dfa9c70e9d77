"""The add-on in real Blender (bpy 4.5): install the built zip, enable it, submit for real.

Submissions go to the stand-in Flamenco Manager (tests/flamenco_standin.py), which serves
Shaman through this project's own server and creates the render job Submit asks for.

Every Blender session runs in a fresh `python3` subprocess with a throwaway Blender user
directory (BLENDER_USER_RESOURCES), so nothing touches the developer's Blender setup and
each install starts from scratch. A session prints one `RESULT:<json>` line.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from flamenco_standin import FlamencoStandin

pytestmark = pytest.mark.blender

REPO = Path(__file__).resolve().parents[2]
EXTENSION = "bl_ext.user_default.flamenco_shaman"


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        "build_addon_zip", REPO / "tools/build_addon_zip.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def addon_zip(tmp_path_factory) -> Path:
    """The zip as a TD builds it; BAT wheels downloaded once per session."""
    tool = _load_tool()
    wheel_dir = tmp_path_factory.getbasetemp() / "bat-wheels"
    if not wheel_dir.exists():
        partial = tmp_path_factory.mktemp("bat-wheels-download")
        tool.fetch_wheels(partial)
        partial.rename(wheel_dir)
    return tool.build(tmp_path_factory.mktemp("addon-dist"), wheel_dir)


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    """(url, jobs dir) of a stand-in Flamenco Manager for this module's Blender sessions."""
    standin = FlamencoStandin(tmp_path_factory.mktemp("farm-storage"))
    standin.start()
    yield standin.url, standin.jobs
    standin.stop()


# Helpers every session gets: install the zip, reach the preferences, submit.
PRELUDE = """
import json, os, sys
import bpy

EXTENSION = "bl_ext.user_default.flamenco_shaman"


def install(zip_path):
    result = bpy.ops.extensions.package_install_files(
        filepath=zip_path, repo="user_default", enable_on_install=True
    )
    assert result == {"FINISHED"}, result


def prefs():
    return bpy.context.preferences.addons[EXTENSION].preferences


def call(operator, **kwargs):
    # bpy.ops raises RuntimeError carrying the operator's error report.
    try:
        return sorted(operator(**kwargs)), ""
    except RuntimeError as ex:
        return ["CANCELLED"], str(ex)


def done(**values):
    print("RESULT:" + json.dumps(values), flush=True)
"""


def run_blender(tmp_path: Path, script: str, *args: object, timeout: float = 180) -> dict:
    """Run `script` (after PRELUDE) in a fresh bpy process; return what it passed to done()."""
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "blender-user"))
    # Blender must load the add-on from the installed zip only, never from the source tree
    # a developer put on PYTHONPATH (the legacy install's `flamenco_shaman` would be shadowed).
    source = str(REPO / "addon")
    paths = [
        p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and os.path.abspath(p) != source
    ]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    proc = subprocess.run(
        [sys.executable, "-c", PRELUDE + script, *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
    )
    output = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.returncode == 0, output
    results = [line for line in proc.stdout.splitlines() if line.startswith("RESULT:")]
    assert results, output
    return json.loads(results[-1][len("RESULT:") :])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- Registration --------------------------------------------------------------------

REGISTRATION = """
install(sys.argv[1])
ops = (
    "submit",
    "cancel",
    "copy_farm_path",
    "open_job",
    "check_connection",
    "refresh_job_types",
    "eval_setting",
)
classes = ["FLAMENCO_SHAMAN_PT_submit"] + [f"FLAMENCO_SHAMAN_OT_{op}" for op in ops]
enabled = {
    "addon": EXTENSION in bpy.context.preferences.addons,
    "classes": [name for name in classes if hasattr(bpy.types, name)],
    "manager_url": prefs().manager_url,
    "uploads": prefs().uploads,
    "token_subtype": type(prefs()).bl_rna.properties["token"].subtype,
    "panel_context": bpy.types.FLAMENCO_SHAMAN_PT_submit.bl_context,
    "scene_props": hasattr(bpy.context.scene, "flamenco_shaman"),
    "wm_props": hasattr(bpy.context.window_manager, "flamenco_shaman"),
    "bat_loaded": "blender_asset_tracer" in sys.modules,
}
bpy.ops.preferences.addon_disable(module=EXTENSION)
disabled = {
    "addon": EXTENSION in bpy.context.preferences.addons,
    "classes": [name for name in classes if hasattr(bpy.types, name)],
    "scene_props": hasattr(bpy.types.Scene, "flamenco_shaman"),
    "wm_props": hasattr(bpy.types.WindowManager, "flamenco_shaman"),
    "load_pre": [h.__name__ for h in bpy.app.handlers.load_pre if "cancel" in h.__name__],
}
done(enabled=enabled, disabled=disabled)
"""


@pytest.fixture(scope="module")
def registration(addon_zip, tmp_path_factory) -> dict:
    return run_blender(tmp_path_factory.mktemp("registration"), REGISTRATION, addon_zip)


def test_extension_install_registers_panel_and_operators(registration):
    assert registration["enabled"]["addon"]
    assert registration["enabled"]["classes"] == [
        "FLAMENCO_SHAMAN_PT_submit",
        "FLAMENCO_SHAMAN_OT_submit",
        "FLAMENCO_SHAMAN_OT_cancel",
        "FLAMENCO_SHAMAN_OT_copy_farm_path",
        "FLAMENCO_SHAMAN_OT_open_job",
        "FLAMENCO_SHAMAN_OT_check_connection",
        "FLAMENCO_SHAMAN_OT_refresh_job_types",
        "FLAMENCO_SHAMAN_OT_eval_setting",
    ]


def test_panel_lives_in_the_output_properties(registration):
    assert registration["enabled"]["panel_context"] == "output"


def test_preferences_default_to_localhost_and_four_uploads(registration):
    assert registration["enabled"]["manager_url"] == "http://localhost:8080/"
    assert registration["enabled"]["uploads"] == 4
    assert registration["enabled"]["token_subtype"] == "PASSWORD"


def test_enabling_does_not_import_bat(registration):
    assert not registration["enabled"]["bat_loaded"]


def test_disabling_unregisters_classes_properties_and_handlers(registration):
    assert registration["enabled"]["scene_props"] and registration["enabled"]["wm_props"]
    assert registration["disabled"] == {
        "addon": False,
        "classes": [],
        "scene_props": False,
        "wm_props": False,
        "load_pre": [],
    }


# --- Check connection --------------------------------------------------------------------

CHECK_CONNECTION = """
install(sys.argv[1])
prefs().manager_url = sys.argv[2]
outcome, error = call(bpy.ops.flamenco_shaman.check_connection)
done(outcome=outcome, error=error, message=prefs().last_check)
"""


def test_check_connection_reports_name_version_and_shaman(addon_zip, farm, tmp_path):
    report = run_blender(tmp_path, CHECK_CONNECTION, addon_zip, farm[0])
    assert report["outcome"] == ["FINISHED"]
    assert report["message"].endswith(": Shaman enabled")


def test_check_connection_says_why_the_manager_cannot_be_reached(addon_zip, tmp_path):
    report = run_blender(tmp_path, CHECK_CONNECTION, addon_zip, "http://127.0.0.1:1/")
    assert report["outcome"] == ["CANCELLED"]
    assert "Cannot reach the manager at http://127.0.0.1:1/" in report["error"]


# --- Submit in background mode on a generated project ---------------------------------

GENERATE_PROJECT = """
root = sys.argv[1]
for sub in ("lib", "textures", "seq"):
    os.makedirs(os.path.join(root, sub))


def write_png(path, rgba):
    image = bpy.data.images.new("scratch", 4, 4)
    image.pixels = rgba * 16
    image.filepath_raw = path
    image.file_format = "PNG"
    image.save()
    bpy.data.images.remove(image)


bpy.ops.wm.read_factory_settings(use_empty=True)
library_object = bpy.data.objects.new("LibCube", bpy.data.meshes.new("LibMesh"))
bpy.context.scene.collection.objects.link(library_object)
bpy.ops.wm.save_as_mainfile(filepath=os.path.join(root, "lib", "library.blend"))

write_png(os.path.join(root, "textures", "external.png"), [1.0, 0.0, 0.0, 1.0])
write_png(os.path.join(root, "textures", "to_pack.png"), [0.0, 0.0, 1.0, 1.0])
for frame in (1, 2, 3):
    write_png(os.path.join(root, "seq", f"frame_{frame:04}.png"), [0.0, frame / 3, 0.0, 1.0])

bpy.ops.wm.read_factory_settings(use_empty=True)
with bpy.data.libraries.load(
    os.path.join(root, "lib", "library.blend"), link=True, relative=True
) as (source, target):
    target.objects = ["LibCube"]
for linked in target.objects:
    bpy.context.scene.collection.objects.link(linked)

external = bpy.data.images.load(os.path.join(root, "textures", "external.png"))
packed = bpy.data.images.load(os.path.join(root, "textures", "to_pack.png"))
packed.pack()
sequence = bpy.data.images.load(os.path.join(root, "seq", "frame_0001.png"))
sequence.source = "SEQUENCE"
for image in (external, packed, sequence):
    image.use_fake_user = True

main = os.path.join(root, "main.blend")
bpy.ops.wm.save_as_mainfile(filepath=main)
bpy.ops.file.make_paths_relative()
bpy.ops.wm.save_as_mainfile(filepath=main)
os.remove(os.path.join(root, "textures", "to_pack.png"))  # only the packed copy remains
os.remove(main + "1")  # the backup Blender made on the second save
done(images=sorted(i.filepath for i in bpy.data.images), libraries=[
    lib.filepath for lib in bpy.data.libraries
])
"""

SUBMIT = """
install(sys.argv[1])
prefs().manager_url = sys.argv[2]
bpy.ops.wm.open_mainfile(filepath=sys.argv[3])
if len(sys.argv) > 4:  # an output format the job type accepts, set as the artist would
    bpy.context.scene.render.image_settings.file_format = sys.argv[4]
dirty_before = bpy.data.is_dirty
filepath_before = bpy.data.filepath
outcome, error = call(bpy.ops.flamenco_shaman.submit)
state = bpy.context.window_manager.flamenco_shaman
job = sys.modules[EXTENSION + ".ui.job"]
done(
    outcome=outcome,
    error=error,
    farm_path=state.farm_path,
    checkout_path=state.checkout_path,
    files_total=state.files_total,
    last_result_farm_path=job.last_result.farm_blend_path if job.last_result else None,
    dirty_before=dirty_before,
    dirty_after=bpy.data.is_dirty,
    filepath_before=filepath_before,
    filepath_after=bpy.data.filepath,
    bat_leaked="blender_asset_tracer" in sys.modules,
    project_after=sorted(os.listdir(os.path.dirname(sys.argv[3]))),
)
"""

OPEN_CHECKOUT = """
bpy.ops.wm.open_mainfile(filepath=sys.argv[1])
checkout = os.path.dirname(sys.argv[1])


def where(path):
    absolute = os.path.normpath(bpy.path.abspath(path))
    return {
        "path": path,
        "exists": os.path.exists(absolute),
        "inside": absolute.startswith(checkout + os.sep),
    }


done(
    filepath=bpy.data.filepath,
    libraries=[where(lib.filepath) for lib in bpy.data.libraries],
    images=[where(i.filepath) for i in bpy.data.images if not i.packed_file],
    packed=[i.name for i in bpy.data.images if i.packed_file],
    linked_objects=[o.name for o in bpy.data.objects if o.library],
)
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A generated project: linked library in a subfolder, external, packed, sequence images."""
    work = tmp_path_factory.mktemp("project-gen")
    root = work / "project"
    root.mkdir()
    run_blender(work, GENERATE_PROJECT, root)
    return root


@pytest.fixture(scope="module")
def submitted(addon_zip, farm, project, tmp_path_factory) -> dict:
    """One background-mode Submit of the generated project; the facts the tests check."""
    blend = project / "main.blend"
    before = {p: sha256(p) for p in project.rglob("*") if p.is_file()}
    report = run_blender(tmp_path_factory.mktemp("submit"), SUBMIT, addon_zip, farm[0], blend)
    report["hashes_before"] = before
    report["checkout"] = farm[1] / report["checkout_path"] if report["checkout_path"] else None
    return report


@pytest.fixture(scope="module")
def opened_checkout(submitted, tmp_path_factory) -> dict:
    """The checked-out main.blend opened with bpy from inside the checkout."""
    blend = submitted["checkout"] / "main.blend"
    return run_blender(tmp_path_factory.mktemp("open-checkout"), OPEN_CHECKOUT, blend)


def test_submit_in_background_mode_finishes(submitted):
    assert submitted["outcome"] == ["FINISHED"], submitted["error"]


def test_submit_leaves_the_farm_path_for_the_calling_script(submitted):
    expected = f"{{jobs}}/{submitted['checkout_path']}/main.blend"
    assert submitted["farm_path"] == expected
    assert submitted["last_result_farm_path"] == expected


def test_checkout_holds_every_asset_byte_identical(submitted, project):
    checkout = submitted["checkout"]
    sent = sorted(p.relative_to(checkout).as_posix() for p in checkout.rglob("*") if p.is_file())
    assert sent == [
        "lib/library.blend",
        "main.blend",
        "seq/frame_0001.png",
        "seq/frame_0002.png",
        "seq/frame_0003.png",
        "textures/external.png",
    ]
    for relative in sent:
        if relative != "main.blend":  # the submitted blend is Blender's fresh save of it
            assert sha256(checkout / relative) == submitted["hashes_before"][project / relative]


def test_checkout_names_the_blend_after_the_artists_file(submitted):
    assert (submitted["checkout"] / "main.blend").is_file()
    assert not any(".flamenco_shaman-" in p.name for p in submitted["checkout"].rglob("*"))


def test_checked_out_blend_finds_its_library_inside_the_checkout(opened_checkout):
    assert opened_checkout["libraries"] == [
        {"path": "//lib/library.blend", "exists": True, "inside": True}
    ]
    assert opened_checkout["linked_objects"] == ["LibCube"]


def test_checked_out_blend_finds_its_images_inside_the_checkout(opened_checkout):
    assert sorted(i["path"] for i in opened_checkout["images"]) == [
        "//seq/frame_0001.png",
        "//textures/external.png",
    ]
    assert all(i["exists"] and i["inside"] for i in opened_checkout["images"])
    assert opened_checkout["packed"] == ["to_pack.png"]


def test_artists_files_are_unchanged_on_disk_after_submit(submitted, project):
    after = {p: sha256(p) for p in project.rglob("*") if p.is_file()}
    assert after == submitted["hashes_before"]


def test_submit_removes_its_temporary_copy(submitted):
    assert submitted["project_after"] == ["lib", "main.blend", "seq", "textures"]


def test_submit_keeps_the_open_file_and_its_unsaved_state(submitted):
    assert submitted["filepath_after"] == submitted["filepath_before"]
    assert submitted["dirty_after"] == submitted["dirty_before"]


def test_submit_does_not_leak_bat_into_other_add_ons_imports(submitted):
    assert not submitted["bat_leaked"]


# --- Acceptance: linked_cube.blend --------------------------------------------------------


def test_submit_linked_cube_gives_a_checkout_with_both_blend_files(
    addon_zip, farm, tmp_path, blendfiles
):
    project = tmp_path / "project"
    project.mkdir()
    for name in ("linked_cube.blend", "basic_file.blend"):
        shutil.copyfile(blendfiles / name, project / name)
    # linked_cube.blend renders a video, which simple-blender-render refuses.
    blend = project / "linked_cube.blend"
    report = run_blender(tmp_path, SUBMIT, addon_zip, farm[0], blend, "PNG")
    assert report["outcome"] == ["FINISHED"], report["error"]
    checkout = farm[1] / report["checkout_path"]
    assert sorted(p.name for p in checkout.iterdir()) == ["basic_file.blend", "linked_cube.blend"]
    assert sha256(checkout / "basic_file.blend") == sha256(blendfiles / "basic_file.blend")


# --- Refusals and failures ----------------------------------------------------------------

SUBMIT_UNSAVED = """
install(sys.argv[1])
outcome, error = call(bpy.ops.flamenco_shaman.submit)
done(outcome=outcome, error=error)
"""


def test_submit_refuses_a_file_that_was_never_saved(addon_zip, tmp_path):
    report = run_blender(tmp_path, SUBMIT_UNSAVED, addon_zip)
    assert report["outcome"] == ["CANCELLED"]
    assert "Save the blend file first" in report["error"]


SUBMIT_WHILE_RUNNING = """
install(sys.argv[1])
bpy.ops.wm.open_mainfile(filepath=sys.argv[2])
job = sys.modules[EXTENSION + ".ui.job"]


class Running:
    running = True


job.current = Running()
outcome, error = call(bpy.ops.flamenco_shaman.submit)
job.current = None
done(outcome=outcome, error=error, project=sorted(os.listdir(os.path.dirname(sys.argv[2]))))
"""


def test_second_submit_while_one_runs_is_refused(addon_zip, tmp_path, blendfiles):
    shutil.copyfile(blendfiles / "basic_file.blend", tmp_path / "basic_file.blend")
    report = run_blender(tmp_path, SUBMIT_WHILE_RUNNING, addon_zip, tmp_path / "basic_file.blend")
    assert report["outcome"] == ["CANCELLED"]
    assert "already running" in report["error"]


def test_submit_to_an_unreachable_manager_fails_clearly_and_cleans_up(
    addon_zip, tmp_path, blendfiles
):
    shutil.copyfile(blendfiles / "basic_file.blend", tmp_path / "basic_file.blend")
    blend = tmp_path / "basic_file.blend"
    report = run_blender(tmp_path, SUBMIT, addon_zip, "http://127.0.0.1:1/", blend)
    assert report["outcome"] == ["CANCELLED"]
    assert "cannot reach the manager at http://127.0.0.1:1/" in report["error"]
    assert report["farm_path"] == ""
    assert report["project_after"] == ["basic_file.blend", "blender-user"]


# --- Quitting mid-submission --------------------------------------------------------------

QUIT_MID_SUBMISSION = """
install(sys.argv[1])
prefs().manager_url = sys.argv[2]
bpy.ops.wm.open_mainfile(filepath=sys.argv[3])
job = sys.modules[EXTENSION + ".ui.job"]
original = job.Path(bpy.data.filepath)
temp = job.temp_copy_path(original)
bpy.ops.wm.save_as_mainfile(filepath=str(temp), copy=True)
# What the Submit button does: start the job in its thread, then return to the UI.
request = job.JobRequest(original, temp, sys.argv[2], job.checkout_path_for("", original))
job.current = job.SubmitJob(request)
job.current.start()
done(started=job.current.running, temp_existed=temp.exists())
sys.exit(0)  # Blender quits while the manager has not answered yet
"""


def test_quitting_mid_submission_does_not_hang_and_removes_the_copy(
    addon_zip, tmp_path, blendfiles
):
    # A manager that accepts connections and never answers keeps the upload in flight.
    with socket.socket() as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen()
        url = f"http://127.0.0.1:{black_hole.getsockname()[1]}/"
        shutil.copyfile(blendfiles / "basic_file.blend", tmp_path / "basic_file.blend")
        blend = tmp_path / "basic_file.blend"
        report = run_blender(tmp_path, QUIT_MID_SUBMISSION, addon_zip, url, blend, timeout=60)
    assert report == {"started": True, "temp_existed": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["basic_file.blend", "blender-user"]


# --- Legacy install -----------------------------------------------------------------------

LEGACY = """
import addon_utils

result = bpy.ops.preferences.addon_install(filepath=sys.argv[1])
module = addon_utils.enable("flamenco_shaman", default_set=True)
import flamenco_shaman.bat_import as bat_import

bat = bat_import.import_bat()
done(
    install=sorted(result),
    enabled="flamenco_shaman" in bpy.context.preferences.addons,
    module_file=module.__file__,
    panel=hasattr(bpy.types, "FLAMENCO_SHAMAN_PT_submit"),
    manager_url=bpy.context.preferences.addons["flamenco_shaman"].preferences.manager_url,
    bat_file=bat.__file__,
    scripts=bpy.utils.user_resource("SCRIPTS"),
)
"""


@pytest.fixture(scope="module")
def legacy(addon_zip, tmp_path_factory) -> dict:
    return run_blender(tmp_path_factory.mktemp("legacy"), LEGACY, addon_zip)


def test_legacy_install_enables_the_add_on(legacy):
    assert legacy["install"] == ["FINISHED"]
    assert legacy["enabled"] and legacy["panel"]
    assert legacy["module_file"] == f"{legacy['scripts']}/addons/flamenco_shaman/__init__.py"
    assert legacy["manager_url"] == "http://localhost:8080/"


def test_legacy_install_loads_bat_from_its_bundled_wheel(legacy):
    wheel = f"{legacy['scripts']}/addons/flamenco_shaman/wheels/blender_asset_tracer-1.23-"
    assert legacy["bat_file"].startswith(wheel)


# --- What the panel and the preferences draw ---------------------------------------------

# Drawing without a window: the panel's and preferences' draw functions called on a stand-in.
LAYOUT = """
UILayout = bpy.types.UILayout


class Props:
    # What layout.operator() returns: only the operator's own properties may be set.
    def __init__(self, rna):
        object.__setattr__(self, "rna", rna)

    def __setattr__(self, name, value):
        assert name in self.rna.properties, name


class Layout:
    # No UILayout exists without a window; this stand-in checks every call against
    # UILayout's real API (functions, keyword names, icons, properties, operators).
    # Each call is recorded as [function, text]: the property name for prop(), the
    # operator for operator(), the text for label(). Greyed-out placeholders of text
    # fields land in Layout.placeholders, by property name.
    placeholders = {}

    def __init__(self, calls):
        object.__setattr__(self, "calls", calls)

    def __setattr__(self, name, value):
        assert name in UILayout.bl_rna.properties, name

    def __getattr__(self, name):
        function = UILayout.bl_rna.functions.get(name)
        if function is None:
            raise AttributeError(name)
        params = function.parameters

        def call(*args, **kwargs):
            for key, value in kwargs.items():
                assert key in params, (name, key)
                if key == "icon":
                    assert value in params["icon"].enum_items, value
            if name == "prop":
                assert args[1] in args[0].bl_rna.properties, args[1]
                if "placeholder" in kwargs:
                    Layout.placeholders[args[1]] = kwargs["placeholder"]
                self.calls.append([name, args[1]])
                return Layout(self.calls)
            if name == "operator":
                category, op = args[0].split(".")
                rna = getattr(getattr(bpy.ops, category), op).get_rna_type()
                self.calls.append([name, args[0]])
                return Props(rna)
            self.calls.append([name, kwargs.get("text", "")])
            return Layout(self.calls)

        return call


def draw(function, *args):
    calls = []
    function(Layout(calls), *args)
    return calls
"""

DRAW = (
    """
bpy.ops.wm.open_mainfile(filepath=sys.argv[2])
install(sys.argv[1])
panel = sys.modules[EXTENSION + ".ui.panel"]
preferences = sys.modules[EXTENSION + ".ui.preferences"]
job = sys.modules[EXTENSION + ".ui.job"]
engine = sys.modules[EXTENSION + ".engine"]
"""
    + LAYOUT
    + """
idle = draw(panel.draw_panel, bpy.context)


class Running:
    running = True
    progress = engine.Progress("uploading", 1, 3, 1024, 4096, "textures/a.png")


job.current = Running()
running = draw(panel.draw_panel, bpy.context)
job.current = None

state = bpy.context.window_manager.flamenco_shaman
state.farm_path = "{jobs}/shot/main.blend"
job.last_result = engine.SubmitResult(
    checkout_path="shot",
    farm_blend_path=state.farm_path,
    missing_files=[f"/gone/{i:02}.png" for i in range(12)],
    files_total=5,
    bytes_total=2048,
    files_uploaded=2,
    bytes_uploaded=1024,
)
finished = draw(panel.draw_panel, bpy.context)
copied = call(bpy.ops.flamenco_shaman.copy_farm_path)
prefs().last_check = "Manager 3.6: Shaman enabled"
preference_calls = draw(preferences.draw_preferences, prefs())
done(idle=idle, running=running, finished=finished, preferences=preference_calls, copied=copied)
"""
)


@pytest.fixture(scope="module")
def drawn(addon_zip, tmp_path_factory, blendfiles) -> dict:
    work = tmp_path_factory.mktemp("draw")
    shutil.copyfile(blendfiles / "basic_file.blend", work / "basic_file.blend")
    return run_blender(work, DRAW, addon_zip, work / "basic_file.blend")


def test_panel_offers_settings_and_submit_when_idle(drawn):
    assert drawn["idle"] == [
        ["column", ""],
        ["prop", "job_name"],
        ["prop", "priority"],
        ["prop", "submit_paused"],
        ["row", ""],
        ["prop", "job_type_menu"],
        ["operator", "flamenco_shaman.refresh_job_types"],
        ["prop", "worker_tag_menu"],
        ["label", "Refresh to get the Manager's job types"],
        ["column", ""],
        ["prop", "checkout_name"],
        ["prop", "project_root"],
        ["prop", "relative_only"],
        ["row", ""],
        ["operator", "flamenco_shaman.submit"],
    ]


def test_panel_shows_progress_and_cancel_while_running(drawn):
    assert ["progress", "Uploading: 1/3 files, 1.0 KiB / 4.0 KiB"] in drawn["running"]
    assert ["operator", "flamenco_shaman.cancel"] in drawn["running"]
    assert ["operator", "flamenco_shaman.submit"] not in drawn["running"]


def test_panel_shows_farm_path_totals_and_missing_assets_afterwards(drawn):
    labels = [text for kind, text in drawn["finished"] if kind == "label"]
    assert "{jobs}/shot/main.blend" in labels
    assert ["operator", "flamenco_shaman.copy_farm_path"] in drawn["finished"]
    assert "Uploaded 2 of 5 files, 1.0 KiB of 2.0 KiB" in labels
    assert "12 missing asset(s):" in labels
    assert "/gone/09.png" in labels and "/gone/10.png" not in labels
    assert "... and 2 more" in labels


def test_copy_farm_path_runs_once_there_is_a_farm_path(drawn):
    assert drawn["copied"] == [["FINISHED"], ""]


def test_preferences_show_url_uploads_token_and_the_last_check(drawn):
    assert drawn["preferences"] == [
        ["prop", "manager_url"],
        ["prop", "uploads"],
        ["prop", "token"],
        ["row", ""],
        ["operator", "flamenco_shaman.check_connection"],
        ["label", "Manager 3.6: Shaman enabled"],
    ]
