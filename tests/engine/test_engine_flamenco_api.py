"""FlamencoAPI against the stand-in Manager (and against servers that are not one)."""

from __future__ import annotations

import socket

import pytest
from flamenco_shaman.engine import SubmitError
from flamenco_shaman.engine.flamenco import FlamencoAPI, JobRefused, JobTypeChanged
from flamenco_standin import FlamencoStandin


@pytest.fixture
def api(flamenco: FlamencoStandin):
    with FlamencoAPI(flamenco.url.rstrip("/")) as client:
        yield client


def job_for(api: FlamencoAPI, **changes) -> dict:
    kind = api.job_type("echo-sleep-test")
    job = {
        "name": "echo",
        "type": kind.name,
        "type_etag": kind.etag,
        "priority": 50,
        "submitter_platform": "linux",
        "settings": {"message": "hi"},
        "metadata": {},
        "storage": {"shaman_checkout_id": "c"},
    }
    job.update(changes)
    return job


def test_information_calls(api, flamenco):
    assert api.version()["shortversion"] == "3.9"
    storage = api.shared_storage("windows")
    assert (storage["platform"], storage["location"]) == ("windows", str(flamenco.jobs))
    names = [t.name for t in api.job_types()]
    assert names == ["echo-sleep-test", "settings-test", "simple-blender-render"]
    assert [t["name"] for t in api.worker_tags()] == ["GPU"]


def test_check_refusal_keeps_the_managers_reason(api, flamenco):
    flamenco.refuse("not today")
    with pytest.raises(JobRefused) as info:
        api.check_job(job_for(api))
    assert info.value.reason == "not today"
    assert str(info.value) == f"the Manager at {flamenco.url} refused the job: not today"


def test_a_stale_etag_is_job_type_changed(api):
    with pytest.raises(JobTypeChanged, match="refresh the job types"):
        api.check_job(job_for(api, type_etag="stale"))


def test_submit_then_delete_removes_the_checkout(api, flamenco):
    (flamenco.jobs / "c").mkdir()
    created = api.submit_job(job_for(api))
    assert api.job_url(created["id"]) == f"{flamenco.url}app/jobs/{created['id']}"
    api.delete_job(created["id"])
    assert not (flamenco.jobs / "c").exists() and flamenco.state.jobs == {}


def test_our_plain_shaman_server_is_not_taken_for_a_flamenco_manager(manager):
    with FlamencoAPI(manager.url) as api, pytest.raises(SubmitError) as info:
        api.job_types()
    assert str(info.value) == (
        f"{manager.url} does not look like a Flamenco manager (404 when asking its job types)"
    )


def test_an_unreachable_manager_is_one_line_naming_it():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with FlamencoAPI(f"http://127.0.0.1:{port}") as api, pytest.raises(SubmitError) as info:
        api.version()
    assert str(info.value).startswith(f"cannot reach the manager at http://127.0.0.1:{port}/ (")
    assert "\n" not in str(info.value)
