"""Submitting through the gateway: the real `shaman-submit`, Shaman served by the gateway,
the job created on the (stand-in) Flamenco Manager behind it, and deleted through it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
from gateway_helpers import RunningGateway
from shared_files import blendfiles_dir

BLENDFILES = blendfiles_dir()
SHAMAN_SUBMIT = shutil.which("shaman-submit")
SETTINGS = (
    "--job-type",
    "simple-blender-render",
    "--set",
    "frames=1-3",
    "--set",
    "render_output_root=/tmp/render",  # never written: nothing renders here
    "--set",
    "format=PNG",  # these blends render to FFMPEG, which the job type refuses
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    # Deep enough that the files' paths exceed the length add-ons 3.6-3.8.5 would fold.
    target = tmp_path / "studio-projects" / "a-rather-long-production-name" / "shots"
    shutil.copytree(BLENDFILES, target)
    return target


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "FLAMENCO_SHAMAN_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("FLAMENCO_MANAGER_URL", None)
    env.pop("FLAMENCO_SHAMAN_TOKEN", None)
    return env


def shaman_submit(*args: object, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    assert SHAMAN_SUBMIT, "shaman-submit is not installed (pip install -e .)"
    return subprocess.run(
        [SHAMAN_SUBMIT, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_shaman_submit_through_the_gateway_creates_the_job_on_the_upstream(
    gateway: RunningGateway, project: Path, env: dict[str, str]
):
    blend = project / "subdir" / "doubly_linked_up.blend"
    run = shaman_submit(
        blend,
        "--manager",
        gateway.url,
        "--project",
        project,
        *SETTINGS,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    *_, job_line, farm_path, job_id = run.stdout.splitlines()
    flamenco = gateway.flamenco
    (job,) = flamenco.received_jobs
    checkout = job["storage"]["shaman_checkout_id"]
    assert job["type"] == "simple-blender-render"
    assert job["settings"]["frames"] == "1-3"
    assert job["settings"]["blendfile"] == farm_path
    assert farm_path == f"{{jobs}}/{checkout}/subdir/doubly_linked_up.blend"
    assert list(flamenco.state.jobs) == [job_id]
    assert job_line.endswith(f"{gateway.url}app/jobs/{job_id}")
    # Shaman was the gateway's own; the files are where the Manager's {jobs} points.
    assert flamenco.shaman_requests() == []
    jobs_dir = requests.get(gateway.api("api/v3/configuration")).json()["storageLocation"]
    checkout_dir = Path(jobs_dir) / checkout
    for name in ("subdir/doubly_linked_up.blend", "linked_cube.blend", "basic_file.blend"):
        assert (checkout_dir / name).read_bytes() == (project / name).read_bytes()

    deleted = requests.delete(gateway.api(f"api/v3/jobs/{job_id}"))
    assert deleted.status_code == 204
    assert not checkout_dir.exists()
    assert flamenco.state.jobs == {}

    # Flamenco Manager also removes jobs/ itself once its last checkout is gone (Go's
    # EraseCheckout removes the parent when empty); the next submission still works.
    Path(jobs_dir).rmdir()
    again = shaman_submit(blend, "--manager", gateway.url, "--project", project, *SETTINGS, env=env)
    assert again.returncode == 0, again.stderr
    (_, job) = flamenco.received_jobs
    assert (Path(jobs_dir) / job["storage"]["shaman_checkout_id"]).is_dir()


def test_deleting_a_job_through_the_gateway_removes_its_nested_checkout(
    gateway: RunningGateway, project: Path, env: dict[str, str]
):
    run = shaman_submit(
        project / "basic_file.blend",
        "--manager",
        gateway.url,
        "--checkout-path",
        "shot-010/lighting",
        *SETTINGS,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    job_id = run.stdout.splitlines()[-1]
    jobs = gateway.storage / "jobs"
    assert (jobs / "shot-010" / "lighting" / "basic_file.blend").is_file()
    assert requests.delete(gateway.api(f"api/v3/jobs/{job_id}")).status_code == 204
    assert list(jobs.iterdir()) == []  # the checkout and its then empty parent
