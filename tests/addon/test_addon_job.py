"""The add-on's bpy-free side: the background submission job and its helpers, for real."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from flamenco_shaman.engine import Progress
from flamenco_shaman.ui import job
from flamenco_shaman.ui.connection import describe_manager


@pytest.fixture
def project(tmp_path, blendfiles) -> Path:
    """linked_cube.blend (links basic_file.blend) in a writable project directory."""
    root = tmp_path / "project"
    root.mkdir()
    for name in ("linked_cube.blend", "basic_file.blend"):
        shutil.copyfile(blendfiles / name, root / name)
    return root


def make_job(project: Path, url: str, **overrides) -> job.SubmitJob:
    """A job as the Submit operator makes it, with the temp copy Blender would have saved."""
    original = project / "linked_cube.blend"
    temp = job.temp_copy_path(original)
    shutil.copyfile(original, temp)
    request = job.JobRequest(
        original_blend=original,
        temp_blend=temp,
        manager_url=url,
        checkout_path=job.checkout_path_for("", original),
        **overrides,
    )
    return job.SubmitJob(request)


def wait_for(submit_job: job.SubmitJob) -> None:
    assert submit_job._done.wait(60), "the submission did not end"


def test_checkout_name_given_by_the_artist_is_used_made_valid():
    assert job.checkout_path_for(" shot 010/light:ing ", Path("x.blend")) == "shot 010/light_ing"


def test_empty_checkout_name_falls_back_to_blend_name_and_time():
    path = job.checkout_path_for("", Path("/p/my scene.blend"))
    assert path.startswith("my scene-")
    assert len(path) == len("my scene-YYYYmmdd-HHMMSS")


def test_temporary_copy_is_hidden_next_to_the_original():
    original = Path("/proj/shots/scene.blend")
    temp = job.temp_copy_path(original)
    assert temp.parent == original.parent
    assert temp.name.startswith(".flamenco_shaman-scene-")
    assert temp.suffix == ".blend"
    assert temp != job.temp_copy_path(original)


def test_progress_text_names_phase_files_and_bytes():
    progress = Progress("uploading", 3, 10, 1024 * 1024, 4 * 1024 * 1024)
    assert job.progress_text(progress) == "Uploading: 3/10 files, 1.0 MiB / 4.0 MiB"
    assert job.progress_text(Progress("tracing", 0, 0, 0, 0)) == "Finding assets"
    assert job.progress_text(None) == "Starting"


def test_progress_bar_follows_bytes_and_else_files():
    assert job.progress_factor(Progress("hashing", 1, 4, 50, 200)) == 0.25
    assert job.progress_factor(Progress("hashing", 1, 4, 0, 0)) == 0.25
    assert job.progress_factor(None) == 0.0


def test_sizes_are_shown_in_binary_units():
    assert job.format_bytes(512) == "512 B"
    assert job.format_bytes(1536) == "1.5 KiB"
    assert job.format_bytes(3 * 1024**3) == "3.0 GiB"


def test_job_runs_in_a_daemon_thread_and_checks_out_under_the_original_name(manager, project):
    submit_job = make_job(project, manager.url)
    seen: list[Progress] = []
    submit_job._submission._tracker._callback = seen.append
    submit_job.start()
    assert submit_job._thread.daemon
    wait_for(submit_job)
    assert submit_job.error is None
    checkout = manager.jobs / submit_job.result.checkout_path
    assert sorted(p.name for p in checkout.iterdir()) == ["basic_file.blend", "linked_cube.blend"]
    assert submit_job.result.farm_blend_path.endswith("/linked_cube.blend")
    assert seen and seen[-1].phase == "done"


def test_job_progress_is_readable_while_it_runs(manager, project):
    submit_job = make_job(project, manager.url)
    submit_job.start()
    wait_for(submit_job)
    assert submit_job.progress is not None
    assert submit_job.progress.files_total == 2


def test_job_removes_the_temporary_copy_after_success(manager, project):
    submit_job = make_job(project, manager.url)
    submit_job.run()
    assert submit_job.result is not None
    assert sorted(p.name for p in project.iterdir()) == ["basic_file.blend", "linked_cube.blend"]


def test_job_publishes_its_result_for_the_panel(manager, project):
    submit_job = make_job(project, manager.url)
    submit_job.run()
    assert job.last_result is submit_job.result
    assert job.last_error is None


def test_failed_job_keeps_the_engine_message_and_removes_the_copy(project):
    submit_job = make_job(project, "http://127.0.0.1:1/")
    submit_job.run()
    assert submit_job.result is None
    assert submit_job.error
    assert job.last_error == submit_job.error
    assert not submit_job.request.temp_blend.exists()


def test_cancelled_job_creates_no_checkout_and_removes_the_copy(manager, project):
    submit_job = make_job(project, manager.url)
    submit_job.cancel()
    submit_job.run()
    assert submit_job.cancelled
    assert job.last_error == "Submission cancelled"
    assert not submit_job.request.temp_blend.exists()
    assert not manager.jobs.exists() or not any(manager.jobs.iterdir())


def test_cancel_current_stops_a_running_job(manager, project):
    submit_job = make_job(project, manager.url)
    job.current = submit_job
    gate = threading.Event()
    original_run = submit_job._submission.run

    def run_after_gate():
        gate.wait(10)
        return original_run()

    submit_job._submission.run = run_after_gate
    submit_job.start()
    try:
        job.cancel_current(wait=0.0)
        gate.set()
        wait_for(submit_job)
    finally:
        job.current = None
    assert submit_job.cancelled
    assert not submit_job.request.temp_blend.exists()


def test_check_connection_names_the_manager_and_says_shaman_is_enabled(manager):
    ok, message = describe_manager(manager.url)
    assert ok
    assert "Shaman enabled" in message


def test_check_connection_says_when_shaman_is_disabled(manager_factory):
    ok, message = describe_manager(manager_factory(shaman_enabled=False).url)
    assert not ok
    assert "Shaman is disabled" in message


def test_check_connection_says_why_an_address_cannot_be_used():
    ok, message = describe_manager("http://127.0.0.1:1/")
    assert not ok
    assert message.startswith("Cannot reach the manager at http://127.0.0.1:1/")


def test_job_without_a_copy_sends_the_original_and_never_removes_it(manager, project):
    original = project / "linked_cube.blend"
    before = original.read_bytes()
    request = job.JobRequest(original, None, manager.url, job.checkout_path_for("", original))
    submit_job = job.SubmitJob(request)
    submit_job.run()
    assert submit_job.result.farm_blend_path.endswith("/linked_cube.blend")
    assert original.read_bytes() == before
