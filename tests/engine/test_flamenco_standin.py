"""The stand-in Flamenco Manager answers as Flamenco 3.9 does (its quirks included)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import uuid

import pytest
import requests
from flamenco_standin import FlamencoStandin, decode_rfc2047


def _blob(data: bytes) -> tuple[str, int]:
    return hashlib.sha256(data).hexdigest(), len(data)


def _upload(flamenco: FlamencoStandin, data: bytes, **headers: str) -> requests.Response:
    sha, size = _blob(data)
    return requests.post(
        flamenco.api(f"api/v3/shaman/files/{sha}/{size}"), data=data, headers=headers
    )


def _job(flamenco: FlamencoStandin, **changes: object) -> dict:
    job_type = requests.get(flamenco.api("api/v3/jobs/type/simple-blender-render")).json()
    job = {
        "name": "shot",
        "type": "simple-blender-render",
        "type_etag": job_type["etag"],
        "priority": 50,
        "submitter_platform": "linux",
        "settings": {
            "frames": "1-3",
            "chunk_size": 1,
            "render_output_root": "/render",
            "add_path_components": 0,
            "render_output_path": "/render/shot/{timestamp}/######",
            "blendfile": "{jobs}/x/scene.blend",
            "fps": 24.0,
            "format": "PNG",
            "image_file_extension": ".png",
            "has_previews": False,
        },
        "metadata": {},
        "storage": {"shaman_checkout_id": "x"},
    }
    job.update(changes)
    return job


def test_version_and_configuration_point_at_the_jobs_dir(flamenco: FlamencoStandin) -> None:
    version = requests.get(flamenco.api("api/v3/version")).json()
    assert set(version) == {"version", "shortversion", "name", "git"}
    config = requests.get(flamenco.api("api/v3/configuration")).json()
    assert config["storageLocation"] == str(flamenco.jobs)
    shared = requests.get(flamenco.api("api/v3/configuration/shared-storage/users/linux")).json()
    assert shared == {
        "location": str(flamenco.jobs),
        "audience": "users",
        "platform": "linux",
        "shamanEnabled": True,
    }


def test_without_shaman_storage_is_the_plain_path_and_shaman_answers_503(flamenco_factory) -> None:
    flamenco = flamenco_factory(shaman_enabled=False)
    shared = requests.get(flamenco.api("api/v3/configuration/shared-storage/users/linux")).json()
    assert shared["location"] == str(flamenco.storage) and shared["shamanEnabled"] is False
    answer = _upload(flamenco, b"x")
    assert answer.status_code == 503
    assert answer.json() == {"code": 503, "message": "shaman server not active"}


def test_a_stored_upload_is_200_with_an_empty_body_then_208(flamenco: FlamencoStandin) -> None:
    first = _upload(flamenco, b"hello", **{"X-Shaman-Original-Filename": "=?utf-8?q?a=5Fb.blend?="})
    assert (first.status_code, first.content) == (200, b"")
    assert _upload(flamenco, b"hello").status_code == 208
    assert flamenco.state.original_filenames == [("=?utf-8?q?a=5Fb.blend?=", "a_b.blend")]


def test_an_undecodable_original_filename_is_400(flamenco: FlamencoStandin) -> None:
    answer = _upload(flamenco, b"hello", **{"X-Shaman-Original-Filename": "=?koi8-r?q?x?="})
    assert answer.status_code == 400
    assert "invalid X-Shaman-Original-Filename header" in answer.json()["message"]


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        ("plain.blend", "plain.blend"),
        ("=?utf-8?q?r=C3=A1ni=C3=B0_x.blend?=", "ráni\u00f0 x.blend"),
        ("=?utf-8?b?w6Fi?= =?utf-8?q?c?=", "\u00e1bc"),
        ("=?utf-8?x?abc?=", "=?utf-8?x?abc?="),
        ("=?utf-8?q?bad=ZZ?=", "=?utf-8?q?bad=ZZ?="),
    ],
)
def test_rfc2047_decoding_matches_go(raw: str, decoded: str) -> None:
    assert decode_rfc2047(raw) == decoded


def test_a_checkout_of_missing_files_is_500_unknown_files(flamenco: FlamencoStandin) -> None:
    sha, size = _blob(b"never uploaded")
    answer = requests.post(
        flamenco.api("api/v3/shaman/checkout/create"),
        json={"files": [{"sha": sha, "size": size, "path": "a.blend"}], "checkoutPath": "c"},
    )
    assert answer.status_code == 500
    assert answer.json() == {
        "code": 500,
        "message": "unexpected error: unknown files requested in checkout",
    }


def test_there_is_no_batch_upload_extension(flamenco: FlamencoStandin) -> None:
    answer = requests.post(flamenco.api("api/v3/shaman/batch-upload"), data=b"")
    assert (answer.status_code, answer.json()) == (404, {"message": "Not Found"})


def test_job_types_carry_etags_and_eval_expressions(flamenco: FlamencoStandin) -> None:
    types = requests.get(flamenco.api("api/v3/jobs/types")).json()["job_types"]
    by_name = {t["name"]: t for t in types}
    render = by_name["simple-blender-render"]
    assert len(render["etag"]) == 40
    frames = next(s for s in render["settings"] if s["key"] == "frames")
    assert frames["eval"] == "f'{C.scene.frame_start}-{C.scene.frame_end}'"
    assert requests.get(flamenco.api("api/v3/jobs/type/nope")).status_code == 404


def test_check_refuses_video_formats_unknown_types_and_stale_etags(
    flamenco: FlamencoStandin,
) -> None:
    check = flamenco.api("api/v3/jobs/check")
    assert requests.post(check, json=_job(flamenco)).status_code == 204
    video = _job(flamenco)
    video["settings"]["format"] = "FFMPEG"
    answer = requests.post(check, json=video)
    assert answer.status_code == 400 and "FFMPEG" in answer.json()["message"]
    answer = requests.post(check, json=_job(flamenco, type="nope"))
    assert (answer.status_code, answer.json()["message"]) == (400, "job type unknown")
    assert requests.post(check, json=_job(flamenco, type_etag="old")).status_code == 412
    assert len(flamenco.received_checks) == 4 and flamenco.received_jobs == []


def test_submit_stores_the_exact_json_and_answers_the_job(flamenco: FlamencoStandin) -> None:
    job = _job(flamenco)
    answer = requests.post(flamenco.api("api/v3/jobs"), json=job)
    assert answer.status_code == 200
    created = answer.json()
    uuid.UUID(created["id"])
    assert (
        created["status"] == "queued"
        and "{timestamp}" not in created["settings"]["render_output_path"]
    )
    assert flamenco.received_jobs == [job]
    assert requests.get(flamenco.api(f"api/v3/jobs/{created['id']}")).json() == created


def test_deleting_a_job_removes_its_checkout_and_the_empty_parent(
    flamenco: FlamencoStandin,
) -> None:
    checkout = flamenco.jobs / "project" / "shot-1"
    checkout.mkdir(parents=True)
    (checkout / "scene.blend").write_bytes(b"x")
    job = _job(flamenco, storage={"shaman_checkout_id": "project/shot-1"})
    job_id = requests.post(flamenco.api("api/v3/jobs"), json=job).json()["id"]
    assert requests.delete(flamenco.api(f"api/v3/jobs/{job_id}")).status_code == 204
    assert not (flamenco.jobs / "project").exists() and flamenco.jobs.is_dir()
    assert requests.get(flamenco.api(f"api/v3/jobs/{job_id}")).status_code == 404


def test_after_going_away_the_manager_refuses_connections(flamenco: FlamencoStandin) -> None:
    data = b"content"
    sha, size = _blob(data)
    assert _upload(flamenco, data).status_code == 200
    flamenco.go_away_after_checkout()
    answer = requests.post(
        flamenco.api("api/v3/shaman/checkout/create"),
        json={"files": [{"sha": sha, "size": size, "path": "a.blend"}], "checkoutPath": "c"},
        timeout=30,
    )
    assert answer.json() == {"checkoutPath": "c"}
    with pytest.raises(requests.ConnectionError):
        requests.post(flamenco.api("api/v3/jobs"), json=_job(flamenco), timeout=10)
    assert flamenco.received_jobs == []
    assert os.path.islink(flamenco.jobs / "c" / "a.blend")


def test_refuse_makes_check_answer_400_with_the_message(flamenco: FlamencoStandin) -> None:
    flamenco.refuse("no workers for this")
    answer = requests.post(flamenco.api("api/v3/jobs/check"), json=_job(flamenco))
    assert answer.status_code == 400 and answer.json()["message"] == "no workers for this"
    assert json.loads(json.dumps(flamenco.received_checks[0])) == _job(flamenco)


def test_an_idle_keep_alive_connection_is_closed_by_the_manager(flamenco: FlamencoStandin) -> None:
    host, port = flamenco.url.removeprefix("http://").rstrip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /api/v3/version HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        answer = b""
        while b"}" not in answer:
            answer += sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 200")
        # Idle from here on: the Manager hangs up (after 1 s) well before this timeout.
        assert sock.recv(1) == b""
