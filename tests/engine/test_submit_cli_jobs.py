"""`shaman-submit` creates the render job: the real command against the stand-in Flamenco
Manager, on a project generated with Blender (scene settings the job's settings come from)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from flamenco_standin import SIMPLE_BLENDER_RENDER, FlamencoStandin

SHAMAN_SUBMIT = shutil.which("shaman-submit")

# Run with bpy: <root>/scene.blend (frames 5-9 at 25 fps, PNG into //render/shot_, uses
# textures/wood.png), video.blend (the same rendering to FFMPEG), nooutput.blend (no
# output path).
GENERATE = r"""
import os
import sys

import bpy

root = sys.argv[-1]
os.makedirs(os.path.join(root, "textures"), exist_ok=True)
bpy.ops.wm.read_factory_settings(use_empty=True)
img = bpy.data.images.new("wood.png", 8, 8)
img.filepath_raw = os.path.join(root, "textures", "wood.png")
img.file_format = "PNG"
img.save()
bpy.data.images.remove(img)
scene = bpy.context.scene
scene.frame_start, scene.frame_end = 5, 9
scene.render.fps, scene.render.fps_base = 25, 1.0
scene.render.image_settings.file_format = "PNG"
scene.render.filepath = "//render/shot_"
path = os.path.join(root, "scene.blend")
bpy.ops.wm.save_as_mainfile(filepath=path)
wood = bpy.data.images.load("//textures/wood.png")
wood.use_fake_user = True
bpy.ops.wm.save_as_mainfile(filepath=path)
scene.render.image_settings.file_format = "FFMPEG"
bpy.ops.wm.save_as_mainfile(filepath=os.path.join(root, "video.blend"), copy=True)
scene.render.image_settings.file_format = "PNG"
scene.render.filepath = ""
bpy.ops.wm.save_as_mainfile(filepath=os.path.join(root, "nooutput.blend"), copy=True)
for name in os.listdir(root):
    if name.endswith(".blend1"):
        os.remove(os.path.join(root, name))
"""


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("generated")
    subprocess.run([sys.executable, "-c", GENERATE, str(root)], check=True, capture_output=True)
    return root


@pytest.fixture
def project(generated: Path, tmp_path: Path) -> Path:
    target = tmp_path / "project"
    shutil.copytree(generated, target)
    return target


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "FLAMENCO_SHAMAN_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("FLAMENCO_MANAGER_URL", None)
    env.pop("FLAMENCO_SHAMAN_TOKEN", None)
    return env


def shaman_submit(*args, env):
    assert SHAMAN_SUBMIT, "shaman-submit is not installed (pip install -e .)"
    return subprocess.run(
        [SHAMAN_SUBMIT, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def assert_refused_with_nothing_sent(run, flamenco: FlamencoStandin, message: str) -> None:
    assert run.returncode == 1
    assert run.stdout == ""
    assert run.stderr == f"shaman-submit: error: {message}\n"
    assert flamenco.shaman_requests() == [] and flamenco.received_jobs == []
    assert list(flamenco.jobs.iterdir()) == []


def test_the_job_id_is_last_and_the_manager_got_the_job_with_the_scenes_settings(
    flamenco, project, env
):
    run = shaman_submit(
        project / "scene.blend",
        "--manager",
        flamenco.url,
        "--job-type",
        "simple-blender-render",
        "--set",
        "frames=1-3",
        env=env,
    )
    assert run.returncode == 0, run.stderr
    *_, job_line, farm_path, job_id = run.stdout.splitlines()
    (job,) = flamenco.received_jobs
    checkout = farm_path.removeprefix("{jobs}/").removesuffix("/scene.blend")
    assert job == {
        "name": "scene",
        "type": "simple-blender-render",
        "type_etag": flamenco.state.job_types["simple-blender-render"]["etag"],
        "priority": 50,
        "submitter_platform": "linux",
        "settings": {
            "frames": "1-3",
            "chunk_size": 1,
            "render_output_root": str(project / "render"),
            "add_path_components": 0,
            "render_output_path": f"{project}/render/scene/{{timestamp}}/######",
            "fps": 25.0,
            "format": "PNG",
            "image_file_extension": ".png",
            "has_previews": False,
            "blendfile": farm_path,
            "scene": "Scene",
        },
        "metadata": {},
        "storage": {"shaman_checkout_id": checkout},
    }
    assert list(flamenco.state.jobs) == [job_id]
    assert job_line == f"Job: scene {flamenco.url}app/jobs/{job_id}"
    for name in ("scene.blend", "textures/wood.png"):
        assert (flamenco.jobs / checkout / name).read_bytes() == (project / name).read_bytes()


def test_unset_settings_come_from_the_blend_and_set_ones_are_typed(flamenco, project, env):
    run = shaman_submit(
        project / "scene.blend",
        "--manager",
        flamenco.url,
        "--set",
        "chunk_size=2",
        "--set",
        "add_path_components=1",
        "--job-name",
        "Shot 10",
        "--priority",
        "70",
        env=env,
    )
    assert run.returncode == 0, run.stderr
    (job,) = flamenco.received_jobs
    settings = job["settings"]
    assert (settings["frames"], settings["chunk_size"], settings["add_path_components"]) == (
        "5-9",
        2,
        1,
    )
    assert (
        settings["render_output_path"] == f"{project}/render/project/Shot 10/{{timestamp}}/######"
    )
    assert (job["name"], job["priority"]) == ("Shot 10", 70)


def test_the_manager_may_come_from_the_environment_and_a_worker_tag_by_name(flamenco, project, env):
    env["FLAMENCO_MANAGER_URL"] = flamenco.url
    run = shaman_submit(project / "scene.blend", "--worker-tag", "GPU", env=env)
    assert run.returncode == 0, run.stderr
    (job,) = flamenco.received_jobs
    assert job["worker_tag"] == flamenco.state.worker_tags[0]["id"]


def test_a_refused_check_exits_1_with_one_line_and_sends_no_file(flamenco, project, env):
    run = shaman_submit(project / "video.blend", "--manager", flamenco.url, env=env)
    assert_refused_with_nothing_sent(
        run,
        flamenco,
        f"the Manager at {flamenco.url} refused the job: This job type only renders images, "
        'and not "FFMPEG" at compileJob (simple_blender_render.js:70:9(27))',
    )


def test_an_unknown_job_type_exits_1_with_one_line(flamenco, project, env):
    run = shaman_submit(
        project / "scene.blend", "--manager", flamenco.url, "--job-type", "nope", env=env
    )
    assert_refused_with_nothing_sent(
        run,
        flamenco,
        f"the Manager at {flamenco.url} has no job type 'nope' "
        "(it has: echo-sleep-test, settings-test, simple-blender-render)",
    )
    assert flamenco.received_checks == []


def test_a_required_setting_without_a_value_is_named_before_anything_is_sent(
    flamenco, project, env
):
    run = shaman_submit(project / "nooutput.blend", "--manager", flamenco.url, env=env)
    assert_refused_with_nothing_sent(
        run, flamenco, "required job setting(s) without a value: render_output_root"
    )
    assert flamenco.received_checks == []


def test_an_expression_that_raises_names_the_setting(flamenco_factory, project, env):
    broken = {
        **SIMPLE_BLENDER_RENDER,
        "settings": [
            *SIMPLE_BLENDER_RENDER["settings"],
            {"key": "camera", "type": "string", "eval": "C.scene.camera.name"},
        ],
    }
    flamenco = flamenco_factory(job_types=(broken,))
    run = shaman_submit(project / "scene.blend", "--manager", flamenco.url, env=env)
    assert_refused_with_nothing_sent(
        run,
        flamenco,
        "setting 'camera': AttributeError: 'types.SimpleNamespace' object has no attribute "
        "'camera'",
    )


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("colour=red", "job type 'simple-blender-render' has no setting 'colour' (it has: "),
        ("chunk_size=two", "setting 'chunk_size': 'two' is not a valid int32"),
        ("frames", "--set 'frames': expected KEY=VALUE"),
        ("blendfile=x.blend", "--set blendfile: the blend file's path is set by the submission"),
    ],
)
def test_bad_set_values_are_one_line_errors(flamenco, project, env, assignment, message):
    run = shaman_submit(
        project / "scene.blend", "--manager", flamenco.url, "--set", assignment, env=env
    )
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.startswith(f"shaman-submit: error: {message}")
    assert run.stderr.count("\n") == 1
    assert flamenco.shaman_requests() == [] and flamenco.received_checks == []


def test_a_manager_without_shaman_is_a_clear_error(flamenco_factory, project, env):
    flamenco = flamenco_factory(shaman_enabled=False)
    run = shaman_submit(project / "scene.blend", "--manager", flamenco.url, env=env)
    assert run.returncode == 1
    assert run.stderr.startswith(
        f"shaman-submit: error: Shaman is disabled on the Manager at {flamenco.url}"
    )
    assert flamenco.shaman_requests() == [] and flamenco.received_jobs == []


def test_no_job_against_go_answers_first_and_after_the_manager_lost_its_files(
    flamenco, project, env
):
    runs = []
    for _ in range(2):
        run = shaman_submit(project / "scene.blend", "--manager", flamenco.url, "--no-job", env=env)
        assert run.returncode == 0, run.stderr
        farm_path = run.stdout.splitlines()[-1]
        checkout = flamenco.jobs / farm_path.removeprefix("{jobs}/").removesuffix("/scene.blend")
        for name in ("scene.blend", "textures/wood.png"):
            assert (checkout / name).read_bytes() == (project / name).read_bytes()
        runs.append(run)
        flamenco.lose_files()
    assert "Uploaded" in runs[1].stdout and "(2 of 2 files;" in runs[1].stdout
    assert flamenco.received_checks == [] and flamenco.received_jobs == []


def test_job_options_with_no_job_are_a_usage_error(flamenco, project, env):
    run = shaman_submit(
        project / "scene.blend", "--manager", flamenco.url, "--no-job", "--set", "frames=1", env=env
    )
    assert run.returncode == 2 and "--no-job creates no job" in run.stderr
    assert flamenco.state.requests == []


def test_without_a_manager_url_it_says_where_one_comes_from(project, env):
    run = shaman_submit(project / "scene.blend", env=env)
    assert run.returncode == 2 and "give --manager URL or set $FLAMENCO_MANAGER_URL" in run.stderr
