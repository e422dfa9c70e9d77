"""Checkout path rules and the default checkout name (pure functions)."""

from datetime import datetime
from pathlib import Path

import pytest
from flamenco_shaman.engine.checkout_path import (
    checkout_path_problem,
    default_checkout_path,
    sanitize_checkout_path,
)

VALID = [
    "a",
    "5e5be786-e6d7-480c-90e6-437f9ef5bf5d",
    "with spaces in it",
    "Sprite-Fright/scenename/jobname/2022-03-25-11-30-feb3",
    "ránið/lélegt vélmenni",
]
INVALID = [
    "",
    "/absolute",
    "back\\slash",
    "what?",
    "star*",
    "c:/x",
    "semi;colon",
    "{braces}",
    "path/../../etc/passwd",
    "..",
]


@pytest.mark.parametrize("path", VALID)
def test_valid_checkout_paths_have_no_problem(path):
    assert checkout_path_problem(path) is None


@pytest.mark.parametrize("path", INVALID)
def test_invalid_checkout_paths_are_explained(path):
    assert checkout_path_problem(path)


@pytest.mark.parametrize("path", VALID)
def test_sanitizing_keeps_valid_paths(path):
    assert sanitize_checkout_path(path) == path


@pytest.mark.parametrize("path", [*INVALID, "a/./b", "x//y", "\x00\x1f", "  /  "])
def test_sanitizing_always_gives_a_valid_path(path):
    assert checkout_path_problem(sanitize_checkout_path(path)) is None


def test_sanitizing_drops_parent_components():
    assert sanitize_checkout_path("path/../../etc/passwd") == "path/etc/passwd"


def test_default_checkout_path_is_blend_name_and_timestamp():
    now = datetime(2026, 3, 25, 11, 30, 5)
    assert default_checkout_path(Path("/p/shot_010.blend"), now) == "shot_010-20260325-113005"


def test_default_checkout_path_of_an_odd_name_is_valid():
    path = default_checkout_path(Path("/p/what?: {x}.blend"))
    assert checkout_path_problem(path) is None
    assert path.startswith("what__ _x_-")


@pytest.mark.parametrize("name", ["x" * 300, "é" * 200, "中" * 100])
def test_sanitizing_clips_long_names_to_what_the_manager_takes(name):
    clean = sanitize_checkout_path(f"project/{name}")
    assert checkout_path_problem(clean) is None
    assert clean.startswith("project/") and name.startswith(clean.removeprefix("project/"))


def test_the_engine_refuses_what_the_manager_refuses():
    # These passed the engine's own copy of the rules and then failed at the manager.
    for path in ("a//b", "x" * 256, "a/./b"):
        assert checkout_path_problem(path)
    assert checkout_path_problem(".") is None  # Flamenco's jobs root; becomes ".-xxxx"
