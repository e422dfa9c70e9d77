"""Pure rules: checksum, size and path validation, Go durations."""

from __future__ import annotations

from datetime import timedelta

import pytest

from manager_plugin.durations import parse_duration
from manager_plugin.errors import InvalidChecksum, InvalidPath, InvalidSize
from manager_plugin.paths import (
    parse_size,
    validate_checkout_path,
    validate_checksum,
    validate_path,
    validate_size,
)

FLAMENCO_VALID = [
    "a",
    "5e5be786-e6d7-480c-90e6-437f9ef5bf5d",
    "with spaces in it",
    "Sprite-Fright/scenename/jobname/2022-03-25-11-30-feb3",
    "ránið/lélegt vélmenni",
]
FLAMENCO_INVALID = [
    "",
    "/absolute/path",
    "back\\slash",
    "what?",
    "star*",
    "co:lon",
    "semi;colon",
    "{brace",
    "brace}",
    "c:/x",
    "C:\\Windows",
    "path/../../etc/passwd",
    "..",
]
OUR_EXTRA_INVALID = [
    ".",
    "a/./b",
    "a//b",
    "a/b/..",
    "nul\x00byte",
    "new\nline",
    "del\x7f",
    "x" * 256,
    "ok/" + "é" * 128,  # 256 bytes of UTF-8 in one component
    "lone\udc80surrogate",
]


@pytest.mark.parametrize("path", FLAMENCO_VALID)
def test_flamenco_valid_checkout_paths_are_accepted(path):
    assert validate_checkout_path(path) == path
    assert validate_path(path) == path


@pytest.mark.parametrize("path", FLAMENCO_INVALID + OUR_EXTRA_INVALID)
def test_invalid_paths_are_rejected_naming_the_field(path):
    with pytest.raises(InvalidPath, match=r"^files\[2\]\.path: "):
        validate_path(path, "files[2].path")
    with pytest.raises(InvalidPath, match="^checkoutPath: "):
        validate_checkout_path(path)


def test_non_string_path_is_rejected():
    with pytest.raises(InvalidPath, match="expected string"):
        validate_path(12)


def test_checkout_path_trailing_slash_is_normalized_away():
    assert validate_checkout_path("project/job/") == "project/job"


def test_component_of_exactly_255_bytes_is_fine():
    assert validate_path("d/" + "x" * 255)


@pytest.mark.parametrize(
    "value",
    ["", "a" * 63, "a" * 65, "A" * 64, "g" * 64, "../" + "a" * 61, None, 5, "a" * 63 + "\n"],
)
def test_bad_checksums_are_rejected(value):
    with pytest.raises(InvalidChecksum, match="^sha: expected 64 lowercase hex"):
        validate_checksum(value)


def test_good_checksum_is_returned():
    assert validate_checksum("0123456789abcdef" * 4) == "0123456789abcdef" * 4


@pytest.mark.parametrize("value", [-1, 1.5, "3", True, None])
def test_bad_sizes_are_rejected(value):
    with pytest.raises(InvalidSize, match=r"^files\[3\]\.size: "):
        validate_size(value, "files[3].size")


def test_size_in_json_must_be_an_integer_and_the_message_says_so():
    with pytest.raises(InvalidSize, match=r"files\[3\]\.size: expected integer"):
        validate_size("12", "files[3].size")


@pytest.mark.parametrize("text", ["", "-1", "1.0", "abc", "١٢", "9" * 21, "+5"])
def test_bad_url_sizes_are_rejected(text):
    with pytest.raises(InvalidSize):
        parse_size(text)


def test_url_size_parses_digits():
    assert parse_size("0") == 0
    assert parse_size("3221225472") == 3 * 1024**3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h0m0s", timedelta(hours=24)),
        ("744h0m0s", timedelta(hours=744)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("90s", timedelta(seconds=90)),
        ("1.5h", timedelta(hours=1.5)),
        ("0", timedelta(0)),
        ("0s", timedelta(0)),
        ("300ms", timedelta(milliseconds=300)),
        ("1us", timedelta(microseconds=1)),
        ("1µs", timedelta(microseconds=1)),
        ("2000ns", timedelta(microseconds=2)),
        ("-1m", timedelta(minutes=-1)),
        ("1h1m1s", timedelta(hours=1, minutes=1, seconds=1)),
    ],
)
def test_go_durations_parse(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "10", "h", "1d", "1h 2m", "1.2.3s", "s1", "-", "one hour"])
def test_bad_go_durations_raise(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)
