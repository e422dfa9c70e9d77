"""The engine against a Manager that answers as Flamenco's Go server does: 200 for a stored
upload, 500 for a checkout of missing files, no batch uploads, RFC 2047 filenames."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from flamenco_shaman.engine import Submission, SubmitOptions
from flamenco_shaman.engine.http_text import encode_original_filename
from flamenco_standin import FlamencoStandin, decode_rfc2047
from shared_files import blendfiles_dir

BLENDFILES = blendfiles_dir()
NAMES = ("linked_cube.blend", "basic_file.blend")


@pytest.fixture(autouse=True)
def _own_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLAMENCO_SHAMAN_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def blends(tmp_path: Path) -> Path:
    target = tmp_path / "blends"
    target.mkdir()
    for name in NAMES:
        shutil.copyfile(BLENDFILES / name, target / name)
    return target


def upload_only(flamenco: FlamencoStandin, blend: Path):
    return Submission(SubmitOptions(blendfile=blend, manager_url=flamenco.url)).run()


def assert_checkout_matches(flamenco: FlamencoStandin, result, blends: Path) -> None:
    for name in NAMES:
        target = flamenco.jobs / result.checkout_path / name
        assert target.read_bytes() == (blends / name).read_bytes()


def test_a_first_submission_uploads_through_200_answers(flamenco, blends):
    result = upload_only(flamenco, blends / "linked_cube.blend")
    assert result.files_uploaded == 2 and result.bytes_uploaded == result.bytes_total
    assert_checkout_matches(flamenco, result, blends)


def test_without_batch_uploads_each_file_gets_its_own_request(flamenco, blends):
    upload_only(flamenco, blends / "linked_cube.blend")
    requests = flamenco.shaman_requests()
    assert ("POST", "/api/v3/shaman/batch-upload") in requests
    assert sum(1 for m, p in requests if m == "POST" and p.startswith("/api/v3/shaman/files/")) == 2


def test_a_cached_resubmission_after_the_manager_lost_its_files_sends_them_again(flamenco, blends):
    upload_only(flamenco, blends / "linked_cube.blend")
    flamenco.lose_files()
    result = upload_only(flamenco, blends / "linked_cube.blend")
    # Every hash came from the cache, so the checkout went first and Go answered 500.
    assert result.files_hashed == 0 and result.files_uploaded == 2
    assert_checkout_matches(flamenco, result, blends)


def test_a_cached_resubmission_to_a_manager_that_has_everything_uploads_nothing(flamenco, blends):
    upload_only(flamenco, blends / "linked_cube.blend")
    result = upload_only(flamenco, blends / "linked_cube.blend")
    assert result.files_uploaded == 0
    assert_checkout_matches(flamenco, result, blends)


def test_original_filenames_arrive_encoded_on_one_line_and_decode_to_the_path(flamenco, tmp_path):
    folder = tmp_path / "ránið lélegt vélmenni" / "with a rather long folder name to pass 76 chars"
    folder.mkdir(parents=True)
    blend = folder / "Sprite Fright — shot_0010 lighting (final) v3.blend"
    shutil.copyfile(BLENDFILES / "basic_file.blend", blend)
    upload_only(flamenco, blend)
    ((raw, decoded),) = flamenco.state.original_filenames
    assert decoded == blend.name and len(raw) > 76
    assert "\r" not in raw and "\n" not in raw and raw.startswith("=?utf-8?q?")


@pytest.mark.parametrize(
    ("name", "encoded"),
    [
        ("linked_cube.blend", "=?utf-8?q?linked=5Fcube=2Eblend?="),
        ("a b/c?.blend", "=?utf-8?q?a_b/c=3F=2Eblend?="),
        ("ñ", "=?utf-8?q?=C3=B1?="),
    ],
)
def test_filename_header_encoding(name, encoded):
    assert encode_original_filename(name) == encoded
    assert decode_rfc2047(encoded) == name
