"""The manager's warnings about a checkout (names Windows/macOS workers cannot hold) reach
the artist: in SubmitResult.warnings, and on shaman-submit's standard error, one line
each. Real manager on loopback, a project generated with Blender whose textures are
`A.png` and `a.png` (one file on a case-folding filesystem)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from flamenco_shaman.engine import Submission, SubmitOptions
from test_submit_cli_messages import shaman_submit

# Run with Blender's Python (bpy): ROOT/project/scene.blend uses //textures/A.png and
# //textures/a.png, two different images.
GENERATE_CLASH = r"""
import os
import sys

import bpy

proj = os.path.join(sys.argv[-1], "project")
os.makedirs(os.path.join(proj, "textures"), exist_ok=True)
bpy.ops.wm.read_factory_settings(use_empty=True)
for name, red in (("A.png", 1.0), ("a.png", 0.2)):
    img = bpy.data.images.new(name, 4, 4, alpha=True)
    img.pixels = [red, 0.0, 0.0, 1.0] * 16
    img.filepath_raw = os.path.join(proj, "textures", name)
    img.file_format = "PNG"
    img.save()
    bpy.data.images.remove(img)
scene_path = os.path.join(proj, "scene.blend")
bpy.ops.wm.save_as_mainfile(filepath=scene_path)
for name in ("A.png", "a.png"):
    bpy.data.images.load("//textures/" + name).use_fake_user = True
bpy.ops.wm.save_as_mainfile(filepath=scene_path)
if os.path.exists(scene_path + "1"):
    os.remove(scene_path + "1")
"""


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clash")
    subprocess.run(
        [sys.executable, "-c", GENERATE_CLASH, str(root)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return root / "project"


@pytest.fixture
def clash(generated, tmp_path) -> Path:
    """A private copy of the project; returns its blend file."""
    shutil.copytree(generated, tmp_path / "project")
    return tmp_path / "project" / "scene.blend"


def test_submission_carries_the_managers_name_warnings(manager, clash):
    result = Submission(SubmitOptions(clash, manager.url, checkout_path="clash")).run()
    assert len(result.warnings) == 1
    (line,) = result.warnings
    assert "textures/a.png" in line and "textures/A.png" in line
    assert "\n" not in line
    # A warning, not a refusal: both files are in the checkout.
    textures = manager.jobs / result.checkout_path / "textures"
    assert sorted(p.name for p in textures.iterdir()) == ["A.png", "a.png"]


def test_submission_without_problem_names_has_no_warnings(manager, tmp_path, blendfiles):
    shutil.copy(blendfiles / "basic_file.blend", tmp_path)
    result = Submission(SubmitOptions(tmp_path / "basic_file.blend", manager.url)).run()
    assert result.warnings == []


def test_submission_has_no_warnings_when_the_manager_checks_no_names(manager_factory, clash):
    quiet = manager_factory(portable_names="off")
    result = Submission(SubmitOptions(clash, quiet.url, checkout_path="clash")).run()
    assert result.warnings == []


def test_shaman_submit_prints_each_warning_on_stderr(manager, clash):
    run = shaman_submit(clash, "--manager", manager.url, "--checkout-path", "aux/clash")
    assert run.returncode == 0, run.stderr
    warnings = [
        line for line in run.stderr.splitlines() if line.startswith("shaman-submit: warning: ")
    ]
    assert len(warnings) == 2, run.stderr
    assert "'aux' is a reserved device name on Windows" in warnings[0]
    assert "textures/a.png" in warnings[1] and "textures/A.png" in warnings[1]
    # The farm path is still the last line of standard output, for scripts.
    assert run.stdout.splitlines()[-1].startswith("{jobs}/aux/clash")
    assert run.stdout.splitlines()[-1].endswith("/scene.blend")


def test_shaman_submit_prints_no_warning_for_portable_names(manager, tmp_path, blendfiles):
    shutil.copy(blendfiles / "basic_file.blend", tmp_path)
    run = shaman_submit(tmp_path / "basic_file.blend", "--manager", manager.url)
    assert run.returncode == 0, run.stderr
    assert "warning" not in run.stderr
