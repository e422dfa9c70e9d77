"""One table of checkout and file paths, checked through every place that applies the rules:
the shared protocol module, the engine's check before a submission, the running server
(a real checkout over HTTP) and the OpenAPI document's patterns.

Each row says whether the path is fine as a file path in a checkout and as a checkout
path. Rows marked `bytes` break a byte limit, which a regex cannot state: the OpenAPI
pattern accepts them and the code refuses them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import pytest
import requests
from flamenco_shaman import protocol as addon_protocol
from flamenco_shaman.engine.checkout_path import checkout_path_problem as engine_problem

from manager_plugin import protocol
from manager_plugin.http.openapi import openapi_document


@dataclass(frozen=True)
class Row:
    path: str
    file_ok: bool
    checkout_ok: bool
    bytes: bool = False  # breaks a byte limit only: beyond what the OpenAPI pattern states


TABLE = [
    Row("a", True, True),
    Row("with spaces in it", True, True),
    Row("Sprite-Fright/scenename/jobname/2022-03-25-11-30-feb3", True, True),
    Row("ránið/lélegt vélmenni", True, True),
    Row(".hidden/..dots/...", True, True),
    Row("x" * 255, True, True),
    Row("d/" + "é" * 127, True, True),  # 254 bytes of UTF-8 in one component
    # Flamenco's 3.9 add-on sends "." for a scripted submission; Go makes it ".-xxxx".
    Row(".", False, True),
    Row("project/job/", False, True),  # trailing slashes are tolerated on a checkout path
    Row("", False, False),
    Row("/absolute/path", False, False),
    Row("back\\slash", False, False),
    Row("what?", False, False),
    Row("star*", False, False),
    Row("co:lon", False, False),
    Row("c:/x", False, False),
    Row("semi;colon", False, False),
    Row("{brace", False, False),
    Row("brace}", False, False),
    Row("..", False, False),
    Row("path/../../etc/passwd", False, False),
    Row("./x", False, False),
    Row("x/.", False, False),
    Row("a/./b", False, False),
    Row("a//b", False, False),
    Row("nul\x00byte", False, False),
    Row("new\nline", False, False),
    Row("del\x7f", False, False),
    Row("x" * 256, False, False, bytes=True),
    Row("ok/" + "é" * 128, False, False, bytes=True),  # 256 bytes of UTF-8
]
IDS = [repr(row.path)[:40] for row in TABLE]


def test_the_manager_uses_the_add_on_s_rules():
    assert protocol.path_problem is addon_protocol.path_problem
    assert protocol.checkout_path_problem is addon_protocol.checkout_path_problem


@pytest.mark.parametrize("row", TABLE, ids=IDS)
def test_protocol_rules(row: Row):
    assert (protocol.path_problem(row.path) is None) == row.file_ok
    assert (protocol.checkout_path_problem(row.path) is None) == row.checkout_ok


@pytest.mark.parametrize("row", TABLE, ids=IDS)
def test_engine_checks_the_checkout_path_as_the_manager_does(row: Row):
    assert (engine_problem(row.path) is None) == row.checkout_ok


def _pattern(schema: str, field: str) -> str:
    schemas = openapi_document()["components"]["schemas"]
    return schemas[schema]["properties"][field]["pattern"]


@pytest.mark.parametrize("row", TABLE, ids=IDS)
def test_openapi_patterns_state_the_same_rules(row: Row):
    file_pattern = _pattern("ShamanCheckoutFileSpec", "path")
    checkout_pattern = _pattern("ShamanCheckout", "checkoutPath")
    assert (re.search(file_pattern, row.path) is not None) == (row.file_ok or row.bytes)
    assert (re.search(checkout_pattern, row.path) is not None) == (row.checkout_ok or row.bytes)


CONTENT = b"one file every checkout of this table links to\n"
SHA = hashlib.sha256(CONTENT).hexdigest()


def _checkout(manager, checkout_path: str, file_path: str) -> requests.Response:
    return requests.post(
        manager.api("api/v3/shaman/checkout/create"),
        json={
            "checkoutPath": checkout_path,
            "files": [{"sha": SHA, "size": len(CONTENT), "path": file_path}],
        },
        timeout=30,
    )


@pytest.mark.parametrize("row", TABLE, ids=IDS)
def test_the_running_server_applies_the_table(manager, row: Row):
    stored = requests.post(manager.api(f"api/v3/shaman/files/{SHA}/{len(CONTENT)}"), CONTENT)
    assert stored.status_code == 204

    as_file = _checkout(manager, "as-file", row.path)
    assert as_file.status_code == (200 if row.file_ok else 400), as_file.text
    if not row.file_ok:
        assert as_file.json()["message"].startswith("files[0].path: ")

    as_checkout = _checkout(manager, row.path, "scene.blend")
    assert as_checkout.status_code == (200 if row.checkout_ok else 400), as_checkout.text
    if row.checkout_ok:
        used = as_checkout.json()["checkoutPath"]
        assert (manager.jobs / used / "scene.blend").read_bytes() == CONTENT
    else:
        assert as_checkout.json()["message"].startswith("checkoutPath: ")
