"""Our add-on in real Blender (bpy 4.5), submitting through the gateway: Shaman answered
by the gateway, the render job created on the (stand-in) Flamenco Manager behind it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from gateway_helpers import RunningGateway
from shared_files import blendfiles_dir
from test_addon_blender import addon_zip, run_blender  # noqa: F401  (fixture)

pytestmark = pytest.mark.blender

BLENDFILES = blendfiles_dir()

SUBMIT = """
install(sys.argv[1])
bpy.ops.wm.open_mainfile(filepath=sys.argv[2])
bpy.context.scene.render.image_settings.file_format = "PNG"  # it renders a video
bpy.ops.wm.save_mainfile()
state = bpy.context.window_manager.flamenco_shaman
outcome = sorted(bpy.ops.flamenco_shaman.submit())
done(outcome=outcome, job_id=state.job_id, job_url=state.job_url, farm_path=state.farm_path)
"""


def test_the_addon_submits_through_the_gateway(
    addon_zip: Path,  # noqa: F811
    gateway: RunningGateway,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    project = tmp_path / "project"
    shutil.copytree(BLENDFILES, project)
    monkeypatch.setenv("FLAMENCO_MANAGER_URL", gateway.url)
    report = run_blender(tmp_path, SUBMIT, addon_zip, project / "linked_cube.blend")
    assert report["outcome"] == ["FINISHED"]
    flamenco = gateway.flamenco
    (job,) = flamenco.received_jobs
    assert report["job_id"] in flamenco.state.jobs
    assert report["job_url"] == f"{gateway.url}app/jobs/{report['job_id']}"
    assert job["settings"]["blendfile"] == report["farm_path"]
    assert flamenco.shaman_requests() == []  # every upload went to the gateway's Shaman
    checkout = gateway.storage / "jobs" / job["storage"]["shaman_checkout_id"]
    # The open file goes as Blender saves its temporary copy; its library as it is on disk.
    assert (checkout / "linked_cube.blend").read_bytes().startswith(b"BLENDER")
    assert (checkout / "basic_file.blend").read_bytes() == (
        project / "basic_file.blend"
    ).read_bytes()
