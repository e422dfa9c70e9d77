"""Error paths of the engine against a scripted manager (`responses`): the answers a real
manager rarely gives on demand."""

import hashlib
import json
import re
import shutil
import threading
import time

import pytest
import requests
import responses
from flamenco_shaman.engine import (
    ManagerClient,
    Submission,
    SubmitCancelled,
    SubmitError,
    SubmitOptions,
    client,
    negotiator,
    uploader,
)

URL = "http://farm.test/"
API = URL + "api/v3/"


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch, tmp_path):
    monkeypatch.setattr(uploader, "UPLOAD_RETRY_DELAYS", (0.0, 0.0, 0.0))
    monkeypatch.setattr(negotiator, "ROUND_DELAYS", (0.0,) * 6)
    monkeypatch.setattr(client, "RETRY_DELAYS", (0.0, 0.0))
    monkeypatch.setenv("FLAMENCO_SHAMAN_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def project(tmp_path, blendfiles):
    """linked_cube.blend and the basic_file.blend it links."""
    root = tmp_path / "project"
    root.mkdir()
    for name in ("linked_cube.blend", "basic_file.blend"):
        shutil.copy(blendfiles / name, root / name)
    return root


def identity(path):
    data = path.read_bytes()
    return hashlib.sha256(data).hexdigest(), len(data)


class ScriptedManager:
    """A manager whose upload answers come from a script; everything else is friendly."""

    def __init__(self, rsps, upload_status=lambda sha, attempt: 204, requirement="unknown"):
        self.stored = set()
        self.uploads = []  # (sha, can-defer header, status)
        self.requirement_calls = 0
        self.checkouts = []
        self.upload_status = upload_status
        self.requirement = requirement
        self.checkout_status = [200]
        rsps.add(responses.GET, API + "version", json={"version": "3.6", "name": "test"})
        rsps.add(
            responses.GET,
            API + "configuration",
            json={"storageLocation": "/srv", "shamanEnabled": True, "isFirstRun": False},
        )
        rsps.add_callback(
            responses.POST, API + "shaman/checkout/requirements", callback=self._requirements
        )
        rsps.add_callback(
            responses.POST, re.compile(API + r"shaman/files/(\w+)/(\d+)"), callback=self._upload
        )
        rsps.add_callback(responses.POST, API + "shaman/checkout/create", callback=self._create)
        # Like Flamenco's own manager: no batch-upload extension, so files go one per request.
        rsps.add(
            responses.POST,
            API + "shaman/batch-upload",
            status=404,
            json={"code": 404, "message": "Not Found"},
        )

    def _requirements(self, request):
        self.requirement_calls += 1
        files = json.loads(request.body)["files"]
        wanted = [
            {**f, "status": self.requirement}
            for f in files
            if (f["sha"], f["size"]) not in self.stored
        ]
        return 200, {}, json.dumps({"files": wanted})

    def _upload(self, request):
        sha, size = request.url.rsplit("/", 2)[-2:]
        data = b"".join(bytes(block) for block in request.body) if int(size) else b""
        attempt = sum(1 for u in self.uploads if u[0] == sha)
        status = self.upload_status(sha, attempt)
        if isinstance(status, Exception):
            self.uploads.append((sha, request.headers["X-Shaman-Can-Defer-Upload"], "error"))
            raise status
        self.uploads.append((sha, request.headers["X-Shaman-Can-Defer-Upload"], status))
        if status == 204:
            assert hashlib.sha256(data).hexdigest() == sha and len(data) == int(size)
            self.stored.add((sha, int(size)))
        if status == 208:
            self.stored.add((sha, int(size)))
        body = {"code": status, "message": f"scripted {status}"} if status >= 300 else {}
        return status, {}, json.dumps(body) if body else ""

    def _create(self, request):
        body = json.loads(request.body)
        status = self.checkout_status.pop(0) if len(self.checkout_status) > 1 else 200
        if status == 424:
            return 424, {}, json.dumps({"code": 424, "message": "missing files"})
        missing = [f for f in body["files"] if (f["sha"], f["size"]) not in self.stored]
        if missing:
            return 424, {}, json.dumps({"code": 424, "message": "really missing"})
        self.checkouts.append(body)
        return 200, {}, json.dumps({"checkoutPath": body["checkoutPath"]})


def submit(project, **kwargs):
    opts = SubmitOptions(
        blendfile=project / "linked_cube.blend", manager_url=URL, checkout_path="job", **kwargs
    )
    return Submission(opts).run()


@responses.activate
def test_happy_path_uploads_both_files_and_checks_out(project):
    mgr = ScriptedManager(responses.mock)
    result = submit(project)
    assert result.files_uploaded == 2
    assert result.farm_blend_path == "{jobs}/job/linked_cube.blend"
    assert {f["path"] for f in mgr.checkouts[0]["files"]} == {
        "linked_cube.blend",
        "basic_file.blend",
    }
    assert all(header == "True" for _, header, _ in mgr.uploads)


@responses.activate
def test_417_is_an_error_naming_the_file(project):
    bad_sha, _ = identity(project / "basic_file.blend")
    ScriptedManager(responses.mock, lambda sha, n: 417 if sha == bad_sha else 204)
    with pytest.raises(SubmitError, match=r"basic_file\.blend.*417"):
        submit(project)


@responses.activate
def test_425_forever_fails_after_bounded_rounds_listing_the_file(project):
    stuck, _ = identity(project / "basic_file.blend")
    mgr = ScriptedManager(responses.mock, lambda sha, n: 425 if sha == stuck else 204)
    with pytest.raises(SubmitError, match=r"could not upload 1 file.*basic_file\.blend"):
        submit(project)
    attempts = [header for sha, header, _ in mgr.uploads if sha == stuck]
    assert len(attempts) == negotiator.MAX_ROUNDS
    assert attempts[:-1] == ["True"] * (negotiator.MAX_ROUNDS - 1)
    assert attempts[-1] == "False"  # the last round may not defer
    assert not mgr.checkouts


@responses.activate
def test_425_then_stored_by_someone_else_succeeds(project):
    deferred, size = identity(project / "basic_file.blend")

    def status(sha, attempt):
        if sha == deferred:
            mgr.stored.add((sha, size))  # the other uploader finishes meanwhile
            return 425
        return 204

    mgr = ScriptedManager(responses.mock, status)
    result = submit(project)
    assert result.files_uploaded == 1
    assert [s for sha, _, s in mgr.uploads if sha == deferred] == [425]
    assert mgr.checkouts


@responses.activate
def test_5xx_is_retried_then_succeeds(project):
    mgr = ScriptedManager(responses.mock, lambda sha, n: 500 if n < 2 else 204)
    result = submit(project)
    assert result.files_uploaded == 2
    assert sorted(s for _, _, s in mgr.uploads) == [204, 204, 500, 500, 500, 500]


@responses.activate
def test_dropped_connection_is_retried(project):
    def status(sha, attempt):
        return requests.ConnectionError("connection reset") if attempt == 0 else 204

    mgr = ScriptedManager(responses.mock, status)
    assert submit(project).files_uploaded == 2
    assert len(mgr.uploads) == 4


@responses.activate
def test_persistent_5xx_ends_in_an_error_listing_the_files(project):
    mgr = ScriptedManager(responses.mock, lambda sha, n: 502)
    with pytest.raises(SubmitError, match=r"could not upload 2 file.*basic_file.*linked_cube"):
        submit(project)
    per_file = len(uploader.UPLOAD_RETRY_DELAYS) + 1
    assert len(mgr.uploads) == 2 * per_file * negotiator.MAX_ROUNDS
    assert not mgr.checkouts


@responses.activate
def test_uploading_files_are_sent_after_unknown_ones(project):
    mgr = ScriptedManager(responses.mock)
    busy, _ = identity(project / "linked_cube.blend")
    original = mgr._requirements

    def requirements(request):
        status, headers, body = original(request)
        files = json.loads(body)["files"]
        for f in files:
            if f["sha"] == busy and mgr.requirement_calls == 1:
                f["status"] = "uploading"
        return status, headers, json.dumps({"files": files})

    mgr._requirements = requirements
    responses.mock.remove(responses.POST, API + "shaman/checkout/requirements")
    responses.mock.add_callback(
        responses.POST, API + "shaman/checkout/requirements", callback=requirements
    )
    submit(project, uploads=1)
    assert [sha for sha, _, _ in mgr.uploads][-1] == busy
    assert len(mgr.uploads) == 2


@responses.activate
def test_checkout_424_sends_missing_files_again_then_checks_out(project):
    mgr = ScriptedManager(responses.mock)
    mgr.checkout_status = [424, 200]
    uploads_before_gc = []

    original = mgr._create

    def create(request):
        if not uploads_before_gc:
            uploads_before_gc.append(len(mgr.uploads))
            mgr.stored.clear()  # garbage collected between upload and checkout
        return original(request)

    responses.mock.remove(responses.POST, API + "shaman/checkout/create")
    responses.mock.add_callback(responses.POST, API + "shaman/checkout/create", callback=create)
    result = submit(project)
    assert result.checkout_path == "job"
    assert len(mgr.uploads) == 4  # both files twice
    assert len(mgr.checkouts) == 1


@responses.activate
def test_checkout_424_twice_is_an_error(project):
    ScriptedManager(responses.mock)
    responses.mock.remove(responses.POST, API + "shaman/checkout/create")
    responses.mock.add(
        responses.POST,
        API + "shaman/checkout/create",
        status=424,
        json={"code": 424, "message": "files missing"},
    )
    with pytest.raises(SubmitError, match="missing"):
        submit(project)


@responses.activate
def test_checkout_409_is_an_error(project):
    ScriptedManager(responses.mock)
    responses.mock.remove(responses.POST, API + "shaman/checkout/create")
    responses.mock.add(
        responses.POST, API + "shaman/checkout/create", status=409, json={"message": "taken"}
    )
    with pytest.raises(SubmitError, match="no free checkout directory"):
        submit(project)


@responses.activate
def test_token_is_sent_on_every_request(project):
    ScriptedManager(responses.mock)
    submit(project, token="s3cret")
    assert responses.calls
    assert all(c.request.headers["Authorization"] == "Bearer s3cret" for c in responses.calls)


@responses.activate
def test_no_authorization_header_without_token(project):
    ScriptedManager(responses.mock)
    submit(project)
    assert all("Authorization" not in c.request.headers for c in responses.calls)


@responses.activate
def test_requirements_are_sent_in_batches(project, monkeypatch):
    monkeypatch.setattr(negotiator, "BATCH_SIZE", 1)
    mgr = ScriptedManager(responses.mock)
    submit(project)
    assert mgr.requirement_calls == 2


@responses.activate
def test_shaman_disabled_is_a_clear_error(project):
    responses.add(responses.GET, API + "version", json={"version": "3.6", "name": "test"})
    responses.add(
        responses.GET,
        API + "configuration",
        json={"storageLocation": "/srv", "shamanEnabled": False, "isFirstRun": False},
    )
    with pytest.raises(SubmitError, match="Shaman is disabled"):
        submit(project)


@responses.activate
def test_503_from_shaman_endpoints_means_disabled():
    responses.add(
        responses.POST,
        API + "shaman/checkout/requirements",
        status=503,
        json={"code": 503, "message": "Shaman is disabled"},
    )
    with pytest.raises(SubmitError, match="Shaman is disabled"):
        ManagerClient(URL).requirements([])


@responses.activate
def test_server_that_is_not_flamenco_is_a_clear_error(project):
    responses.add(responses.GET, API + "version", status=404, body="<html>nope</html>")
    with pytest.raises(SubmitError, match="does not look like a Flamenco manager"):
        submit(project)


@responses.activate
def test_refused_token_is_a_clear_error(project):
    responses.add(responses.GET, API + "version", status=401, json={"message": "bad token"})
    with pytest.raises(SubmitError, match="check the token"):
        submit(project, token="wrong")


def test_unreachable_manager_is_a_clear_error(project):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nobody listens here
    opts = SubmitOptions(project / "linked_cube.blend", f"http://127.0.0.1:{port}")
    with pytest.raises(SubmitError, match="cannot reach the manager") as info:
        Submission(opts).run()
    assert "\n" not in str(info.value)


def test_manager_url_without_scheme_is_a_clear_error(project):
    with pytest.raises(SubmitError, match="http://"):
        submit_to = SubmitOptions(project / "linked_cube.blend", "farm:8080")
        Submission(submit_to).run()


def test_submit_errors_are_one_line():
    assert str(SubmitError("manager said:\n  no\r\n")) == "manager said: no"
    assert str(SubmitError("two  spaces kept")) == "two  spaces kept"


@responses.activate
def test_cancel_returns_even_while_the_manager_sits_on_an_upload(project):
    answering = threading.Event()
    release = threading.Event()

    def status(sha, attempt):
        answering.set()
        release.wait(30)  # a manager that takes its time to answer
        return 204

    mgr = ScriptedManager(responses.mock, status)
    sub = Submission(SubmitOptions(project / "linked_cube.blend", URL))
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(_run(sub)))
    thread.start()
    try:
        assert answering.wait(30)
        started = time.monotonic()
        sub.cancel()
        thread.join(10)
        assert not thread.is_alive()
        assert time.monotonic() - started < 5
        assert isinstance(outcome[0], SubmitCancelled)
        assert not mgr.checkouts
    finally:
        release.set()


def _run(sub):
    try:
        return sub.run()
    except Exception as ex:
        return ex
