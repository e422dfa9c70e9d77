"""Submit creates the render job: the engine against the stand-in Flamenco Manager (real
HTTP on loopback, Shaman forwarded to our real server, real BAT on real blend files)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from flamenco_shaman.engine import Submission, SubmitCancelled, SubmitError, SubmitOptions
from flamenco_shaman.engine.flamenco import JobSpec
from flamenco_standin import FlamencoStandin
from shared_files import blendfiles_dir

BLENDFILES = blendfiles_dir()
RENDER_SETTINGS = {
    "frames": "1-3",
    "render_output_root": "/render",
    "render_output_path": "/render/shot/{timestamp}/######",
    "fps": 24.0,
    "format": "PNG",
    "image_file_extension": ".png",
    "has_previews": False,
    "scene": "Scene",
}


@pytest.fixture(autouse=True)
def _own_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLAMENCO_SHAMAN_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def blends(tmp_path: Path) -> Path:
    target = tmp_path / "blends"
    target.mkdir()
    for name in ("linked_cube.blend", "basic_file.blend"):
        shutil.copyfile(BLENDFILES / name, target / name)
    return target


def submit(flamenco: FlamencoStandin, blend: Path, job: JobSpec | None, **kw):
    options = SubmitOptions(blendfile=blend, manager_url=flamenco.url, job=job)
    return Submission(options, **kw).run()


def render_job(**changes) -> JobSpec:
    settings = {**RENDER_SETTINGS, **changes.pop("settings", {})}
    return JobSpec(settings=settings, **changes)


def assert_nothing_sent(flamenco: FlamencoStandin) -> None:
    assert flamenco.shaman_requests() == []
    assert flamenco.received_jobs == []
    assert list(flamenco.jobs.iterdir()) == []


def test_the_manager_receives_the_job_flamenco_would_send(flamenco, blends):
    result = submit(flamenco, blends / "linked_cube.blend", render_job(name="Shot 10"))
    used = result.checkout_path
    etag = flamenco.state.job_types["simple-blender-render"]["etag"]
    assert flamenco.received_jobs == [
        {
            "name": "Shot 10",
            "type": "simple-blender-render",
            "type_etag": etag,
            "priority": 50,
            "submitter_platform": "linux",
            "settings": {
                "frames": "1-3",
                "chunk_size": 1,
                "render_output_root": "/render",
                "add_path_components": 0,
                "render_output_path": "/render/shot/{timestamp}/######",
                "fps": 24.0,
                "format": "PNG",
                "image_file_extension": ".png",
                "has_previews": False,
                "blendfile": f"{{jobs}}/{used}/linked_cube.blend",
                "scene": "Scene",
            },
            "metadata": {},
            "storage": {"shaman_checkout_id": used},
        }
    ]
    job_id = next(iter(flamenco.state.jobs))
    assert (result.job_id, result.job_name) == (job_id, "Shot 10")
    assert result.job_url == f"{flamenco.url}app/jobs/{job_id}"
    for name in ("linked_cube.blend", "basic_file.blend"):
        assert (flamenco.jobs / used / name).read_bytes() == (blends / name).read_bytes()


def test_the_check_has_a_placeholder_blendfile_and_comes_before_any_upload(flamenco, blends):
    submit(flamenco, blends / "linked_cube.blend", render_job())
    (check,) = flamenco.received_checks
    assert check["settings"]["blendfile"] == "dummy-for-job-check.blend"
    assert "storage" not in check and check["name"] == "linked_cube"
    paths = [path for _, path in flamenco.state.requests]
    first_shaman = min(i for i, p in enumerate(paths) if p.startswith("/api/v3/shaman/"))
    checkout = paths.index("/api/v3/shaman/checkout/create")
    assert paths.index("/api/v3/jobs/check") < first_shaman
    assert paths.index("/api/v3/jobs") > checkout


def test_priority_worker_tag_metadata_and_initial_status_go_with_the_job(flamenco, blends):
    tag = flamenco.state.worker_tags[0]["id"]
    job = render_job(
        priority=80, worker_tag=tag, metadata={"project": "Sprite"}, initial_status="paused"
    )
    result = submit(flamenco, blends / "basic_file.blend", job)
    (sent,) = flamenco.received_jobs
    assert (sent["priority"], sent["worker_tag"], sent["metadata"]) == (
        80,
        tag,
        {"project": "Sprite"},
    )
    assert sent["initial_status"] == "paused"
    assert flamenco.state.jobs[result.job_id]["status"] == "paused"


def test_a_refused_check_shows_the_managers_message_and_uploads_nothing(flamenco, blends):
    flamenco.refuse("no GPU workers for this")
    with pytest.raises(SubmitError) as info:
        submit(flamenco, blends / "linked_cube.blend", render_job())
    assert (
        str(info.value) == f"the Manager at {flamenco.url} refused the job: no GPU workers for this"
    )
    assert_nothing_sent(flamenco)


def test_a_video_format_is_refused_as_flamenco_refuses_it(flamenco, blends):
    with pytest.raises(SubmitError, match='only renders images, and not "FFMPEG"'):
        submit(flamenco, blends / "linked_cube.blend", render_job(settings={"format": "FFMPEG"}))
    assert_nothing_sent(flamenco)


def test_an_unknown_job_type_is_one_line_and_nothing_is_sent(flamenco, blends):
    with pytest.raises(SubmitError) as info:
        submit(flamenco, blends / "linked_cube.blend", render_job(type="nope"))
    assert str(info.value) == (
        f"the Manager at {flamenco.url} has no job type 'nope' "
        "(it has: echo-sleep-test, settings-test, simple-blender-render)"
    )
    assert flamenco.received_checks == []
    assert_nothing_sent(flamenco)


def test_a_manager_without_shaman_is_a_clear_error_before_anything_is_sent(
    flamenco_factory, blends
):
    flamenco = flamenco_factory(shaman_enabled=False)
    with pytest.raises(SubmitError, match=f"Shaman is disabled on the Manager at {flamenco.url}"):
        submit(flamenco, blends / "linked_cube.blend", render_job())
    assert flamenco.received_checks == []
    assert flamenco.shaman_requests() == [] and flamenco.received_jobs == []


def test_a_missing_required_setting_is_named_before_anything_is_sent(flamenco, blends):
    job = render_job()
    del job.settings["render_output_root"]
    with pytest.raises(
        SubmitError, match="required job setting.* without a value: render_output_root$"
    ):
        submit(flamenco, blends / "linked_cube.blend", job)
    assert flamenco.received_checks == []
    assert_nothing_sent(flamenco)


def test_a_job_type_changed_meanwhile_is_fetched_again_and_checked_once_more(flamenco, blends):
    old = flamenco.state.job_types["simple-blender-render"]["etag"]
    flamenco.change_job_type_after_listing("simple-blender-render")
    submit(flamenco, blends / "basic_file.blend", render_job())
    new = flamenco.state.job_types["simple-blender-render"]["etag"]
    assert new != old
    assert [c["type_etag"] for c in flamenco.received_checks] == [old, new]
    assert [j["type_etag"] for j in flamenco.received_jobs] == [new]


def test_a_manager_gone_after_the_checkout_gives_a_clear_message_and_no_job(flamenco, blends):
    flamenco.go_away_after_checkout()
    with pytest.raises(SubmitError) as info:
        submit(flamenco, blends / "linked_cube.blend", render_job())
    message = str(info.value)
    assert message.startswith("no job was created: cannot reach the manager at ")
    assert "the files are on the farm at {jobs}/" in message and "\n" not in message
    assert flamenco.received_jobs == [] and flamenco.state.jobs == {}


def test_cancel_while_creating_the_job_creates_none(flamenco, blends):
    holder: dict[str, Submission] = {}

    def on_progress(progress):
        if progress.phase == "job":
            holder["sub"].cancel()

    options = SubmitOptions(
        blendfile=blends / "linked_cube.blend", manager_url=flamenco.url, job=render_job()
    )
    holder["sub"] = Submission(options, progress=on_progress)
    with pytest.raises(SubmitCancelled):
        holder["sub"].run()
    assert flamenco.received_jobs == []


def test_without_a_job_spec_no_jobs_api_is_used(flamenco, blends):
    result = submit(flamenco, blends / "linked_cube.blend", None)
    assert result.job_id is None and result.job_url is None
    assert flamenco.received_checks == [] and flamenco.received_jobs == []
    assert (flamenco.jobs / result.checkout_path / "linked_cube.blend").is_file()
