"""Guarantee 10: the optional shared token guards every Shaman endpoint and is never logged.

Without `shaman.token` the server is as open as Flamenco (other tests cover
that); with it, every Shaman endpoint answers 401 JSON unless the request
carries `Authorization: Bearer <token>`. Version and configuration stay open so
clients can still find out what they are talking to.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
import requests
from helpers import sha256, stored_files
from reliability_support import json_error

TOKEN = "s3cret-Tok3n-for-the-farm"
DATA = b"guarded by a token\n"
SPEC = {"sha": sha256(DATA), "size": len(DATA), "path": "a.txt"}

# (method, endpoint, kwargs) for every Shaman endpoint.
SHAMAN_ENDPOINTS = [
    ("GET", f"api/v3/shaman/files/{SPEC['sha']}/{SPEC['size']}", {}),
    ("POST", f"api/v3/shaman/files/{SPEC['sha']}/{SPEC['size']}", {"data": DATA}),
    ("POST", "api/v3/shaman/checkout/requirements", {"json": {"files": [SPEC]}}),
    ("POST", "api/v3/shaman/checkout/create", {"json": {"files": [SPEC], "checkoutPath": "j"}}),
]
ENDPOINT_IDS = ["file-status", "file-upload", "requirements", "checkout"]

WRONG_AUTHORIZATIONS = {
    "missing": None,
    "empty": "",
    "bearer-empty": "Bearer ",
    "wrong": "Bearer not-the-token",
    "prefix": f"Bearer {TOKEN[:-1]}",
    "longer": f"Bearer {TOKEN}x",
    "no-scheme": TOKEN,
    "basic": f"Basic {TOKEN}",
}


@pytest.fixture
def guarded(manager_factory, caplog):
    caplog.set_level(logging.DEBUG)  # capture everything the server logs, debug included
    return manager_factory(token=TOKEN)


def call(manager, method: str, endpoint: str, authorization: str | None, **kwargs):
    headers = {} if authorization is None else {"Authorization": authorization}
    return requests.request(method, manager.url + endpoint, headers=headers, timeout=10, **kwargs)


@pytest.mark.parametrize(("method", "endpoint", "kwargs"), SHAMAN_ENDPOINTS, ids=ENDPOINT_IDS)
@pytest.mark.parametrize("authorization", list(WRONG_AUTHORIZATIONS))
def test_shaman_endpoints_refuse_missing_or_wrong_token(
    guarded, method, endpoint, kwargs, authorization
):
    resp = call(guarded, method, endpoint, WRONG_AUTHORIZATIONS[authorization], **kwargs)
    assert resp.status_code == 401, resp.text
    json_error(resp)
    assert stored_files(guarded.store) == []
    assert list(guarded.jobs.iterdir()) == []


def test_right_token_allows_the_whole_submission(guarded):
    auth = f"Bearer {TOKEN}"
    for method, endpoint, kwargs in SHAMAN_ENDPOINTS:
        resp = call(guarded, method, endpoint, auth, **kwargs)
        assert resp.status_code in (200, 204), (endpoint, resp.status_code, resp.text)
    assert (guarded.jobs / "j" / "a.txt").read_bytes() == DATA


def test_bearer_scheme_is_case_insensitive(guarded):
    resp = call(guarded, *SHAMAN_ENDPOINTS[0][:2], f"bearer {TOKEN}")
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("endpoint", ["api/v3/version", "api/v3/configuration"])
def test_version_and_configuration_stay_open(guarded, endpoint):
    assert call(guarded, "GET", endpoint, None).status_code == 200


def test_token_never_appears_in_server_logs(guarded, caplog, capfd):
    big = os.urandom(100_000)
    bad = f"{sha256(big)[:-1]}0"
    for auth in [f"Bearer {TOKEN}", f"Bearer {TOKEN}x", TOKEN, f"Basic {TOKEN}"]:
        for method, endpoint, kwargs in SHAMAN_ENDPOINTS:
            call(guarded, method, endpoint, auth, **kwargs)
        # Failures are what get logged most verbosely: provoke some.
        call(guarded, "POST", f"api/v3/shaman/files/{bad}/{len(big)}", auth, data=big)
        call(guarded, "POST", "api/v3/shaman/checkout/create", auth, data=b"{broken")
    out, err = capfd.readouterr()
    assert caplog.records, "expected the server to log something"
    logged = caplog.text + out + err
    assert TOKEN not in logged
    assert TOKEN[:-1] not in logged


# The legacy protocol (bat pack) is Shaman too: same token, text answers.
LEGACY_ENDPOINTS = [
    ("POST", "checkout/requirements", {"data": f"{SPEC['sha']} {SPEC['size']} a.txt"}),
    ("POST", f"files/{SPEC['sha']}/{SPEC['size']}", {"data": DATA}),
    ("POST", "checkout/create/legacy-job", {"data": f"{SPEC['sha']} {SPEC['size']} a.txt"}),
]


@pytest.mark.parametrize(
    ("method", "endpoint", "kwargs"), LEGACY_ENDPOINTS, ids=["requirements", "upload", "checkout"]
)
@pytest.mark.parametrize("authorization", ["missing", "wrong", "no-scheme"])
def test_legacy_endpoints_refuse_missing_or_wrong_token(
    guarded, method, endpoint, kwargs, authorization
):
    resp = call(guarded, method, endpoint, WRONG_AUTHORIZATIONS[authorization], **kwargs)
    assert resp.status_code == 401, resp.text
    assert stored_files(guarded.store) == []
    assert list(guarded.jobs.iterdir()) == []


def test_legacy_get_token_does_not_hand_out_the_token(guarded):
    resp = call(guarded, "GET", "get-token", None)
    assert resp.status_code >= 400
    assert TOKEN not in resp.text


def test_legacy_endpoints_work_with_the_right_token(guarded):
    auth = f"Bearer {TOKEN}"
    for method, endpoint, kwargs in LEGACY_ENDPOINTS:
        resp = call(guarded, method, endpoint, auth, **kwargs)
        assert resp.status_code < 300, (endpoint, resp.status_code, resp.text)
    assert (guarded.jobs / "legacy-job" / "a.txt").read_bytes() == DATA


def test_token_never_appears_in_the_command_line_servers_output(tmp_path):
    """The real `shaman-manager serve` process, its stdout and stderr captured whole."""
    config = tmp_path / "flamenco-manager.yaml"
    config.write_text(f"shared_storage_path: {tmp_path / 'storage'}\nshaman:\n  token: {TOKEN}\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "manager_plugin", "serve", "--config", str(config)]
        + ["--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = re.search(r"http://\S+/", line)
        assert url, line
        server = SimpleNamespace(url=url[0])
        for auth in [f"Bearer {TOKEN}", f"Bearer {TOKEN}x", TOKEN, None]:
            for method, endpoint, kwargs in SHAMAN_ENDPOINTS + LEGACY_ENDPOINTS:
                call(server, method, endpoint, auth, **kwargs)
            call(server, "POST", "api/v3/shaman/checkout/create", auth, data=b"{broken")
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert "GET /api/v3/shaman/files" in err or "POST" in err, "expected access log lines"
    assert TOKEN not in line + out + err
    assert TOKEN[:-1] not in line + out + err


def test_config_repr_hides_the_token(guarded):
    """A config printed in a log line or a traceback must not carry the token."""
    assert guarded.config.token == TOKEN
    assert TOKEN not in repr(guarded.config)
    assert TOKEN not in repr(guarded)
