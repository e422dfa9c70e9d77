"""Guarantee 6: nothing escapes, property-tested with hypothesis against the real server.

Hypothesis generates checkout paths, per-file paths and upload-URL checksums
built from hostile pieces: `..` in every position, absolute paths, backslashes,
drive letters, NUL and control characters, very long names, Unicode look-alikes
of dots and slashes, and names of a symlinked directory planted inside `jobs/`
that points outside the storage. For every example:

- nothing appears or changes outside `jobs/<the checkout the server answered>`
  (a sentinel directory next to the storage and the storage tree apart from
  `jobs/` and `file-store/` are snapshotted), and a refused request adds
  nothing anywhere;
- input that the protocol's rules call invalid gets 400, never 2xx or 5xx.

One server per test (hypothesis runs all examples of a test against it).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import unicodedata
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from helpers import sha256, temps, wait_until
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from reliability_support import host_port, upload

from manager_plugin import paths

SERVER_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    # One real server per test is deliberate: every example must leave it clean.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
CHECKOUT = "api/v3/shaman/checkout/create"
CONTENT = b"the one blob every generated checkout links to\n"
PLANTED = "planted-link"  # jobs/planted-link -> sentinel dir outside the storage

# -- generating hostile paths ---------------------------------------------------

PLAIN_NAMES = st.from_regex(r"[A-Za-z0-9 _.\-áéðþæ中]{1,16}", fullmatch=True)
COMPONENTS = st.one_of(
    st.sampled_from(
        [
            "..",
            ".",
            "",
            "...",
            "a",
            "with spaces",
            "ránið",
            PLANTED,
            "c:",
            "C:",
            "\\..",
            "..\\..",
            "..%2f",
            "%2e%2e",
            "\x00",
            "a\x00b",
            "\n",
            "\x1b[31m",
            "\x7f",
            "\u2024\u2024",  # ONE DOT LEADER x2, looks like ".."
            "\u2025",  # TWO DOT LEADER
            "\uff0e\uff0e",  # FULLWIDTH FULL STOP x2
            "\uff0f",  # FULLWIDTH SOLIDUS, looks like "/"
            "\u2215",  # DIVISION SLASH
            "\u29f5",  # REVERSE SOLIDUS OPERATOR, looks like "\"
            "x" * 255,
            "y" * 256,
            "é" * 200,  # 400 bytes in UTF-8
            "?",
            "*",
            ";",
            "{}",
        ]
    ),
    st.text(min_size=1, max_size=12),
    # Plain names, so that accepted checkouts are common too (and get checked).
    PLAIN_NAMES,
    PLAIN_NAMES,
)
SEPARATORS = st.sampled_from(["/"] * 6 + ["\\", "\uff0f", "//"])
PREFIXES = st.sampled_from(
    [""] * 6
    + ["/", "//", "c:/", "C:\\", "\\\\server\\share\\", "~/"]
    + [f"{PLANTED}/", f"existing/{PLANTED}/"]  # through the planted directory symlinks
)


@st.composite
def hostile_paths(draw: st.DrawFn) -> str:
    parts = draw(st.lists(COMPONENTS, min_size=1, max_size=5))
    sep = draw(SEPARATORS)
    return draw(PREFIXES) + sep.join(parts) + draw(st.sampled_from(["", "", "/"]))


def clearly_invalid(path: str) -> bool:
    """The protocol's rules (docs/protocol.md), stated independently of the server's code."""
    if path == "" or path.startswith("/") or "\\" in path or "\x00" in path:
        return True
    if any(c in path for c in "?*:;{}"):
        return True
    return ".." in path.split("/")


def clearly_valid(path: str) -> bool:
    """Plain names: no dot components, no empty ones, no control chars, short enough."""
    if clearly_invalid(path) or path.endswith("/"):
        return False
    parts = path.split("/")
    return (
        all(
            p not in ("", ".", PLANTED)
            and len(p.encode()) <= 255
            and not any(unicodedata.category(c).startswith("C") for c in p)
            for p in parts
        )
        and len(path.encode()) < 1024
    )


# -- the filesystem outside the checkout ---------------------------------------


def snapshot(root: Path, skip: set[Path]) -> dict[str, tuple[str, str]]:
    """Every entry under root (links not followed), minus `skip` subtrees."""
    out: dict[str, tuple[str, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) not in skip]
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            if p.is_symlink():
                out[str(p)] = ("link", os.readlink(p))
            elif p.is_dir():
                out[str(p)] = ("dir", "")
            else:
                out[str(p)] = ("file", hashlib.sha256(p.read_bytes()).hexdigest())
    return out


class World:
    """The server plus everything a test must see unchanged."""

    def __init__(self, manager) -> None:
        self.manager = manager
        self.outside = manager.storage.parent
        self.sentinel = self.outside / "sentinel"
        self.sentinel.mkdir(exist_ok=True)
        (self.sentinel / "precious.txt").write_text("must never change\n")
        (manager.storage / "not-jobs").mkdir(exist_ok=True)
        manager.jobs.mkdir(exist_ok=True)
        (manager.jobs / PLANTED).symlink_to(self.sentinel, target_is_directory=True)
        (manager.jobs / "existing").mkdir()
        (manager.jobs / "existing" / PLANTED).symlink_to(self.sentinel)
        assert upload(manager.url, CONTENT).status_code == 204
        self.skip = {manager.jobs, manager.store}

    def outside_state(self) -> dict[str, tuple[str, str]]:
        return snapshot(self.outside, self.skip)

    def jobs_state(self) -> dict[str, tuple[str, str]]:
        return snapshot(self.manager.jobs, set())

    def stored_names(self) -> set[str]:
        return {str(p) for p in Path(self.manager.store, "stored").rglob("*")}


@pytest.fixture
def world(manager_factory, tmp_path: Path) -> World:
    # Storage inside this test's own tmp dir, so "outside" is small and ours alone.
    return World(manager_factory(storage_path=tmp_path / "storage"))


def checkout(world: World, checkout_path: str, file_paths: list[str]) -> requests.Response:
    files = [{"sha": sha256(CONTENT), "size": len(CONTENT), "path": p} for p in file_paths]
    return requests.post(
        world.manager.url + CHECKOUT,
        json={"files": files, "checkoutPath": checkout_path},
        timeout=30,
    )


def assert_contained(world: World, resp: requests.Response, before_jobs: dict) -> None:
    """Everything new under jobs/ lies inside the checkout the server reported."""
    after_jobs = world.jobs_state()
    new = set(after_jobs) - set(before_jobs)
    changed = {k for k in before_jobs if after_jobs.get(k) != before_jobs[k]}
    assert not changed, f"existing entries in jobs/ changed: {sorted(changed)}"
    if resp.status_code != 200:
        assert not new, f"a refused checkout left {sorted(new)}"
        return
    used = resp.json()["checkoutPath"]
    root = world.manager.jobs / used
    # The checkout root itself must be a real directory reached without symlinks.
    assert os.path.realpath(root) == os.path.join(os.path.realpath(world.manager.jobs), used)
    stored = os.path.realpath(world.manager.store / "stored")
    for entry in new:
        p = Path(entry)
        if p.is_relative_to(root):
            if p.is_symlink():
                assert os.path.realpath(p).startswith(stored + os.sep), entry
            continue
        # Only the parents of the checkout root may be created outside it.
        assert root.is_relative_to(p) and after_jobs[entry][0] == "dir", entry


# -- checkout paths and file paths against the real server ----------------------


@SERVER_SETTINGS
@given(checkout_path=hostile_paths())
def test_hostile_checkout_paths_create_nothing_outside_the_checkout(world, checkout_path):
    before_outside, before_jobs = world.outside_state(), world.jobs_state()
    resp = checkout(world, checkout_path, ["scene.blend"])
    event(f"status {resp.status_code}")  # --hypothesis-show-statistics: both kinds occur
    assert resp.status_code in (200, 400), (checkout_path, resp.status_code, resp.text)
    if clearly_invalid(checkout_path):
        assert resp.status_code == 400, checkout_path
    if clearly_valid(checkout_path):
        assert resp.status_code == 200, (checkout_path, resp.text)
    assert world.outside_state() == before_outside
    assert_contained(world, resp, before_jobs)


@SERVER_SETTINGS
@given(file_paths=st.lists(hostile_paths(), min_size=1, max_size=3))
def test_hostile_file_paths_create_nothing_outside_the_checkout(world, file_paths):
    before_outside, before_jobs = world.outside_state(), world.jobs_state()
    resp = checkout(world, "job", file_paths)
    event(f"status {resp.status_code}")
    # 409 only if two generated paths collide (e.g. "a" and "a/b").
    assert resp.status_code in (200, 400, 409), (file_paths, resp.status_code, resp.text)
    if any(clearly_invalid(p) for p in file_paths):
        assert resp.status_code == 400, file_paths
    assert world.outside_state() == before_outside
    assert_contained(world, resp, before_jobs)


def test_checkout_through_planted_symlink_dir_is_refused(world):
    before = world.outside_state()
    for path in (f"{PLANTED}/job", f"existing/{PLANTED}/job", f"{PLANTED}"):
        resp = checkout(world, path, ["scene.blend"])
        if resp.status_code == 200:
            # Only acceptable if the server picked a fresh, real directory.
            assert not (world.manager.jobs / resp.json()["checkoutPath"]).is_symlink()
        else:
            assert resp.status_code == 400, resp.text
    assert world.outside_state() == before
    assert list(world.sentinel.iterdir()) == [world.sentinel / "precious.txt"]


def test_look_alike_dots_and_slashes_stay_plain_names(world):
    resp = checkout(world, "\u2024\u2024\uff0fescape", ["\uff0e\uff0e\u2215x.blend"])
    assert resp.status_code == 200, resp.text
    used = resp.json()["checkoutPath"]
    link = world.manager.jobs / used / "\uff0e\uff0e\u2215x.blend"
    assert link.is_symlink() and link.read_bytes() == CONTENT


@pytest.mark.parametrize("name", ["\U0001f600" * 63, "é" * 127, "a" * 255], ids=len)
def test_longest_valid_names_are_checked_out_twice(world, name):
    """A name of up to 255 bytes is valid; asking twice must give a suffixed sibling."""
    used = []
    for _ in range(2):
        resp = checkout(world, f"long/{name}", ["scene.blend"])
        assert resp.status_code == 200, resp.text
        used.append(resp.json()["checkoutPath"])
        assert (world.manager.jobs / used[-1] / "scene.blend").read_bytes() == CONTENT
    assert used[0] == f"long/{name}" and used[1] != used[0]
    assert len(used[1].rpartition("/")[2].encode()) <= 255


# -- checksums and sizes in upload URLs ----------------------------------------

CHECKSUM_PIECES = st.one_of(
    st.sampled_from(
        [
            "..",
            "../..",
            "%2e%2e",
            "%2e%2e%2f",
            "%2E%2E%2F",
            "..%2f..%2f",
            "%252e%252e%252f",
            "%2f",
            "%5c",
            "%00",
            "/",
            "\\",
            "a" * 64,
            "A" * 64,
            "a" * 63,
            "a" * 65,
            "g" * 64,
            "\uff0e\uff0e",
            "",
        ]
    ),
    st.text(alphabet="0123456789abcdef./%\\", min_size=1, max_size=70),
)
SIZES = st.one_of(
    st.sampled_from(["0", "1", "-1", "1e3", "0x10", "+5", " 7", "99999999999999999999999", ".."]),
    st.integers(min_value=0, max_value=2**64).map(str),
)


def raw_request(world: World, method: str, path: str, body: bytes = b"") -> int:
    """http.client sends the path exactly as given (no dot-segment cleanup)."""
    host, port = host_port(world.manager.url)
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request(method, path, body=body if method == "POST" else None)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (ConnectionError, http.client.RemoteDisconnected):
        return 0  # server hung up: acceptable for garbage, checked for leftovers below
    finally:
        conn.close()


@SERVER_SETTINGS
@given(pieces=st.lists(CHECKSUM_PIECES, min_size=1, max_size=3), size=SIZES)
def test_hostile_checksums_in_urls_touch_nothing_outside_the_file_store(world, pieces, size):
    checksum = "".join(pieces)
    # Keep generated non-ASCII legal on the wire; %-sequences stay as generated.
    checksum_wire = quote(checksum, safe="/%.\\")
    size_wire = quote(size, safe="+.")  # a space cannot be sent raw in a request line
    valid = re.fullmatch(r"[0-9a-f]{64}", checksum) is not None and re.fullmatch(r"\d+", size)
    before_outside, before_jobs = world.outside_state(), world.jobs_state()
    before_stored = world.stored_names()
    for method in ("GET", "POST"):
        status = raw_request(
            world, method, f"/api/v3/shaman/files/{checksum_wire}/{size_wire}", b"some bytes"
        )
        event(f"{method} status {status}")
        assert status < 500, (method, checksum, size, status)
        if not valid:
            assert status == 0 or 400 <= status < 500, (method, checksum, size, status)
    assert world.outside_state() == before_outside
    assert world.jobs_state() == before_jobs
    # The body never matches any checksum asked for, so nothing may be stored, and
    # the failed upload's temp file must go.
    assert world.stored_names() == before_stored
    assert wait_until(lambda: not temps(world.manager.store)), temps(world.manager.store)


# -- the pure validators ----------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(path=hostile_paths())
def test_path_validator_accepts_only_paths_that_stay_inside(path):
    """Whatever the validator accepts joins to a place strictly inside the base."""
    try:
        parts = paths.validate_checkout_path(path)
    except paths.InvalidPath:
        return
    assert not clearly_invalid(path), path
    base = "/base/jobs"
    joined = os.path.normpath(os.path.join(base, str(parts)))
    assert joined.startswith(base + "/"), (path, joined)


@settings(max_examples=300, deadline=None)
@given(path=hostile_paths())
def test_path_validator_accepts_every_plain_path(path):
    if clearly_valid(path):
        paths.validate_checkout_path(path)
