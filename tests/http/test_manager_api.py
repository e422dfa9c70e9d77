"""Flamenco 3 API over real HTTP: the cycle, every status code, auth and disabled Shaman."""

from __future__ import annotations

import asyncio
import os

import aiohttp
import pytest
import requests
from helpers import ACCESS_LOGGER, access_messages, blob_path, ident, pending_path, stored_files

from manager_plugin.config import Config
from manager_plugin.http.server import start_site

API = "api/v3/"


def entry(data: bytes, path: str) -> dict[str, object]:
    sha, size = ident(data)
    return {"sha": sha, "size": size, "path": path}


def upload(manager, data: bytes, **headers: str) -> requests.Response:
    sha, size = ident(data)
    return requests.post(f"{manager.url}{API}shaman/files/{sha}/{size}", data=data, headers=headers)


def requirements(manager, files: list[dict[str, object]]) -> requests.Response:
    return requests.post(f"{manager.url}{API}shaman/checkout/requirements", json={"files": files})


def checkout(manager, files: list[dict[str, object]], path: str) -> requests.Response:
    return requests.post(
        f"{manager.url}{API}shaman/checkout/create", json={"files": files, "checkoutPath": path}
    )


def everything_under(root) -> set[str]:
    return {
        os.path.relpath(os.path.join(d, n), root) for d, ds, fs in os.walk(root) for n in ds + fs
    }


BLEND = b"BLENDER-v405" + os.urandom(5000)
TEXTURE = os.urandom(20000)


def test_version_answers_a_flamenco_3_version(manager):
    body = requests.get(f"{manager.url}{API}version").json()
    assert body["version"].startswith("3.")
    assert body["name"]


def test_configuration_reports_storage_and_shaman(manager):
    body = requests.get(f"{manager.url}{API}configuration").json()
    assert body == {
        "storageLocation": str(manager.storage),
        "shamanEnabled": True,
        "isFirstRun": False,
    }


def test_full_cycle_gives_relative_symlinks_with_the_sent_bytes(manager):
    files = [entry(BLEND, "scene.blend"), entry(TEXTURE, "textures/wood.png")]
    answer = requirements(manager, files).json()["files"]
    assert {f["path"]: f["status"] for f in answer} == {
        "scene.blend": "unknown",
        "textures/wood.png": "unknown",
    }
    assert (
        upload(manager, BLEND, **{"X-Shaman-Original-Filename": "scene.blend"}).status_code == 204
    )
    assert upload(manager, TEXTURE).status_code == 204

    resp = checkout(manager, files, "project/shot/job-1")
    assert resp.status_code == 200
    assert resp.json() == {"checkoutPath": "project/shot/job-1"}
    root = manager.jobs / "project/shot/job-1"
    link = root / "textures/wood.png"
    assert link.is_symlink()
    assert not os.readlink(link).startswith("/")
    assert os.readlink(link).startswith("../../../../../file-store/stored/")
    assert link.read_bytes() == TEXTURE
    assert (root / "scene.blend").read_bytes() == BLEND


def test_resent_requirements_answer_an_empty_list(manager):
    files = [entry(BLEND, "scene.blend")]
    upload(manager, BLEND)
    assert requirements(manager, files).json() == {"files": []}


def test_requirements_list_each_identity_once(manager):
    files = [entry(BLEND, "a.blend"), entry(BLEND, "copy/a.blend"), entry(TEXTURE, "t.png")]
    answer = requirements(manager, files).json()["files"]
    assert sorted(f["path"] for f in answer) == ["a.blend", "t.png"]
    assert all(set(f) == {"sha", "size", "path", "status"} for f in answer)


def test_requirements_touch_stored_blobs(manager):
    upload(manager, BLEND)
    files = [entry(BLEND, "x.blend")]
    pending = pending_path(manager.store, BLEND)  # a small upload, not synced yet
    os.utime(pending, (1000, 1000))
    requirements(manager, files)
    assert pending.stat().st_mtime > 1000
    assert checkout(manager, files, "durable").status_code == 200  # renames it to .blob
    blob = blob_path(manager.store, BLEND)
    assert not pending.exists()
    os.utime(blob, (1000, 1000))
    requirements(manager, files)
    assert blob.stat().st_mtime > 1000


def test_second_checkout_to_the_same_path_gets_a_suffix(manager):
    files = [entry(BLEND, "scene.blend")]
    upload(manager, BLEND)
    first = checkout(manager, files, "proj/job").json()["checkoutPath"]
    second = checkout(manager, files, "proj/job").json()["checkoutPath"]
    assert first == "proj/job"
    assert second.startswith("proj/job-") and len(second) == len("proj/job-") + 4
    assert second[-4:].isalnum() and second[-4:] == second[-4:].lower()


def test_file_status_reports_unknown_then_stored_without_touching(manager):
    sha, size = ident(BLEND)
    url = f"{manager.url}{API}shaman/files/{sha}/{size}"
    assert requests.get(url).json() == {"status": "unknown"}
    upload(manager, BLEND)
    pending = pending_path(manager.store, BLEND)  # a small upload, not synced yet
    os.utime(pending, (1000, 1000))
    assert requests.get(url).json() == {"status": "stored"}
    assert pending.stat().st_mtime == 1000
    assert checkout(manager, [entry(BLEND, "s.blend")], "durable").status_code == 200
    blob = blob_path(manager.store, BLEND)
    assert not pending.exists()
    os.utime(blob, (1000, 1000))
    assert requests.get(url).json() == {"status": "stored"}
    assert blob.stat().st_mtime == 1000


def test_upload_of_a_stored_file_is_208(manager):
    assert upload(manager, BLEND).status_code == 204
    assert upload(manager, BLEND).status_code == 208


def test_wrong_checksum_is_417_and_nothing_is_stored(manager):
    sha, size = ident(BLEND)
    resp = requests.post(f"{manager.url}{API}shaman/files/{'ab' * 32}/{size}", data=BLEND)
    assert resp.status_code == 417
    assert resp.json()["code"] == 417
    assert not stored_files(manager.store)
    assert not [p for p in (manager.store / "uploading").rglob("*") if p.is_file()]


@pytest.mark.parametrize("declared", [len(BLEND) - 1, len(BLEND) + 1, 0])
def test_wrong_size_is_417_and_nothing_is_stored(manager, declared):
    sha, _ = ident(BLEND)
    resp = requests.post(f"{manager.url}{API}shaman/files/{sha}/{declared}", data=BLEND)
    assert resp.status_code == 417
    assert "size" in resp.json()["message"]
    assert not stored_files(manager.store)
    assert not [p for p in (manager.store / "uploading").rglob("*") if p.is_file()]


def test_empty_file_can_be_stored(manager):
    assert upload(manager, b"").status_code == 204
    assert requirements(manager, [entry(b"", "empty.txt")]).json() == {"files": []}


@pytest.mark.parametrize(
    ("checksum", "size"),
    [
        ("ABCDEF" + "0" * 58, "10"),
        ("a" * 63, "10"),
        ("...", "10"),
        ("a" * 64, "-1"),
        ("a" * 64, "ten"),
        ("%2e%2e%2f%2e%2e", "1"),
    ],
)
def test_malformed_checksum_or_size_in_url_is_400(manager, checksum, size):
    before = everything_under(manager.storage)
    for method in (requests.get, requests.post):
        resp = method(f"{manager.url}{API}shaman/files/{checksum}/{size}", data=b"x")
        assert resp.status_code == 400, resp.text
        assert resp.json()["code"] == 400
    assert everything_under(manager.storage) == before


def test_can_defer_header_gets_425_while_another_upload_runs(manager):
    import socket

    sha, size = ident(TEXTURE)
    host, port = manager.url.split("//")[1].rstrip("/").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            f"POST /{API}shaman/files/{sha}/{size} HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: {size}\r\n\r\n".encode()
            + TEXTURE[:100]
        )
        url = f"{manager.url}{API}shaman/files/{sha}/{size}"
        for _ in range(100):
            if requests.get(url).json()["status"] == "uploading":
                break
        for flag in ("true", "True", "1"):
            resp = upload(manager, TEXTURE, **{"X-Shaman-Can-Defer-Upload": flag})
            assert resp.status_code == 425
            assert resp.json()["code"] == 425
        sock.sendall(TEXTURE[100:])
        assert sock.recv(1000).startswith(b"HTTP/1.1 204")
    assert requests.get(url).json() == {"status": "stored"}


def test_checkout_with_missing_files_is_424_and_creates_nothing(manager):
    upload(manager, BLEND)
    resp = checkout(manager, [entry(BLEND, "a.blend"), entry(TEXTURE, "t.png")], "proj/job")
    assert resp.status_code == 424
    assert "t.png" in resp.json()["message"]
    assert everything_under(manager.jobs) == set()


def test_no_free_checkout_dir_is_409(manager, monkeypatch):
    import manager_plugin.checkout as checkout_module

    upload(manager, BLEND)
    files = [entry(BLEND, "a.blend")]
    checkout(manager, files, "job")
    # Force every suffix to collide with one existing directory.
    monkeypatch.setattr(checkout_module.secrets, "choice", lambda _alphabet: "z")
    assert checkout(manager, files, "job").json()["checkoutPath"] == "job-zzzz"
    resp = checkout(manager, files, "job")
    assert resp.status_code == 409
    assert resp.json()["code"] == 409
    assert sorted(p.name for p in manager.jobs.iterdir()) == ["job", "job-zzzz"]


@pytest.mark.parametrize(
    "checkout_path",
    ["", "/abs", "../escape", "a/../../etc", "c:/x", "a\\b", "what?", "x;y", "{a}", "a/./b"],
)
def test_invalid_checkout_path_is_400_and_creates_nothing(manager, checkout_path):
    upload(manager, BLEND)
    resp = checkout(manager, [entry(BLEND, "a.blend")], checkout_path)
    assert resp.status_code == 400
    assert "checkoutPath" in resp.json()["message"]
    assert everything_under(manager.jobs) == set()


@pytest.mark.parametrize(
    "file_path",
    ["/etc/passwd", "../../../outside", "a/../../x", "c:/x.blend", "a\\b", "", "a//b", "."],
)
def test_hostile_file_path_is_400_naming_it_and_creates_nothing(manager, file_path, tmp_path):
    upload(manager, BLEND)
    files = [entry(BLEND, "ok.blend"), entry(BLEND, file_path)]
    before = everything_under(manager.storage.parent)
    resp = checkout(manager, files, "proj/job")
    assert resp.status_code == 400
    assert "files[1].path" in resp.json()["message"]
    assert everything_under(manager.storage.parent) == before


def test_checkout_through_a_symlinked_directory_in_jobs_is_400(manager, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    manager.jobs.mkdir(exist_ok=True)
    (manager.jobs / "sneaky").symlink_to(outside)
    upload(manager, BLEND)
    resp = checkout(manager, [entry(BLEND, "a.blend")], "sneaky/job")
    assert resp.status_code == 400
    assert list(outside.iterdir()) == []


def test_same_path_with_different_content_is_400(manager):
    upload(manager, BLEND)
    upload(manager, TEXTURE)
    resp = checkout(manager, [entry(BLEND, "a"), entry(TEXTURE, "a")], "job")
    assert resp.status_code == 400
    assert everything_under(manager.jobs) == set()


def test_same_path_with_same_content_twice_is_fine(manager):
    upload(manager, BLEND)
    resp = checkout(manager, [entry(BLEND, "a"), entry(BLEND, "a")], "job")
    assert resp.status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "body"),
        (b"[]", "body"),
        (b'{"files": 3}', "files"),
        (b'{"files": [{"sha": "' + b"a" * 64 + b'", "size": "12", "path": "x"}]}', "files[0].size"),
        (b'{"files": [{"sha": 12, "size": 12, "path": "x"}]}', "files[0].sha"),
        (b'{"files": [{"sha": "' + b"a" * 64 + b'", "size": 1, "path": 5}]}', "files[0].path"),
        (b'{"files": ["x"]}', "files[0]"),
    ],
)
def test_malformed_json_is_400_naming_the_field(manager, body, field):
    for endpoint in ("requirements", "create"):
        resp = requests.post(
            f"{manager.url}{API}shaman/checkout/{endpoint}",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        assert resp.status_code == 400
        assert resp.json()["message"].startswith(field)


def test_unknown_json_fields_are_ignored(manager):
    files = [dict(entry(BLEND, "a.blend"), extra=1)]
    resp = requests.post(
        f"{manager.url}{API}shaman/checkout/requirements", json={"files": files, "x": {}}
    )
    assert resp.status_code == 200


def test_oversized_json_body_is_413(manager):
    resp = requests.post(
        f"{manager.url}{API}shaman/checkout/requirements",
        data=b" " * (65 * 1024 * 1024),
        headers={"Content-Type": "application/json"},
    )
    assert resp.status_code == 413
    assert resp.json()["code"] == 413


def test_unknown_route_is_a_json_404(manager):
    resp = requests.get(f"{manager.url}{API}shaman/nope")
    assert resp.status_code == 404
    assert resp.json()["code"] == 404


def test_disabled_shaman_answers_503_on_shaman_endpoints(manager_factory):
    manager = manager_factory(shaman_enabled=False)
    sha, size = ident(BLEND)
    for resp in (
        requirements(manager, [entry(BLEND, "a")]),
        upload(manager, BLEND),
        requests.get(f"{manager.url}{API}shaman/files/{sha}/{size}"),
        checkout(manager, [entry(BLEND, "a")], "job"),
    ):
        assert resp.status_code == 503
        assert resp.json()["code"] == 503
    config = requests.get(f"{manager.url}{API}configuration").json()
    assert config["shamanEnabled"] is False
    assert requests.get(f"{manager.url}{API}version").status_code == 200


def test_token_is_required_on_shaman_endpoints_when_configured(manager_factory):
    manager = manager_factory(token="s3cret")
    assert requirements(manager, [entry(BLEND, "a")]).status_code == 401
    assert upload(manager, BLEND, Authorization="Bearer wrong").status_code == 401
    assert upload(manager, BLEND, Authorization="Bearer s3cret").status_code == 204
    assert requests.get(f"{manager.url}{API}version").status_code == 200
    assert requests.get(f"{manager.url}{API}configuration").status_code == 200


def test_access_log_has_one_line_per_request_without_the_token(manager_factory, caplog):
    manager = manager_factory(token="s3cret")
    caplog.set_level("INFO", logger=ACCESS_LOGGER)
    upload(
        manager,
        BLEND,
        Authorization="Bearer s3cret",
        **{"X-Shaman-Original-Filename": "s.blend"},
    )
    lines = access_messages(caplog)
    assert len(lines) == 1
    assert lines[0].startswith("POST /api/v3/shaman/files/")
    assert " 204 " in lines[0] and f"in={len(BLEND)}" in lines[0] and "s.blend" in lines[0]
    assert "s3cret" not in caplog.text


def test_access_lines_still_waiting_are_written_when_the_server_stops(tmp_path, caplog):
    """Lines are written a few ms after their answers, several per turn of the loop;
    a server stopped right after answering still writes every one of them."""

    async def answer_then_stop() -> None:
        config = Config(listen="127.0.0.1:0", storage_path=tmp_path / "storage")
        runner, url = await start_site(config)
        try:
            async with aiohttp.ClientSession() as session:
                for _ in range(3):
                    async with session.get(f"{url}{API}version") as response:
                        assert response.status == 200
        finally:
            await runner.cleanup()  # at once: before WRITE_DELAY has passed

    caplog.set_level("INFO", logger=ACCESS_LOGGER)
    asyncio.run(answer_then_stop())
    lines = [r.getMessage() for r in caplog.records if r.name == ACCESS_LOGGER]
    assert [line.split()[:3] for line in lines] == [["GET", f"/{API}version", "200"]] * 3
