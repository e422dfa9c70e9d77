"""Batch uploads from the engine against the real manager: many small files per request,
and one request per file when the manager lacks the extension or it is switched off."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from flamenco_shaman.engine import (
    Submission,
    SubmitCancelled,
    SubmitError,
    SubmitOptions,
    batching,
    uploader,
)
from helpers import ACCESS_LOGGER, access_messages

from manager_plugin.http import app as app_module
from manager_plugin.http.batch_upload import setup_batch_upload_route

EXTRA_FRAMES = 400


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("FLAMENCO_SHAMAN_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def sequence(tmp_path, blendfiles) -> Path:
    """image_sequencer.blend with its image sequence grown to a few hundred small frames."""
    root = tmp_path / "project"
    shutil.copytree(blendfiles / "imgseq", root / "imgseq")
    shutil.copy(blendfiles / "image_sequencer.blend", root)
    for frame in range(215, 215 + EXTRA_FRAMES):
        (root / "imgseq" / f"{frame:06d}.png").write_bytes(f"frame {frame}\n".encode() * 40)
    return root / "image_sequencer.blend"


@pytest.fixture
def access(caplog):
    """The manager's access log lines, as (method, path) pairs."""
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)

    def requests(method: str, fragment: str) -> int:
        return sum(
            1
            for line in access_messages(caplog)
            if line.startswith(f"{method} ") and fragment in line.split()[1]
        )

    return requests


def submit(manager, blend: Path, **kwargs) -> object:
    opts = SubmitOptions(blendfile=blend, manager_url=manager.url, **kwargs)
    return Submission(opts).run()


def bigger_than(blend: Path, limit: int) -> int:
    """How many of the project's files are over `limit` bytes (BAT's frames are ~2 MB)."""
    return sum(1 for p in source_files(blend).values() if p.stat().st_size > limit)


def source_files(blend: Path) -> dict[str, Path]:
    root = blend.parent
    return {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}


def assert_checkout_identical(manager, result, blend: Path) -> None:
    checkout = manager.jobs / result.checkout_path
    for pack_path, source in source_files(blend).items():
        if pack_path.startswith("imgseq/0") or pack_path.endswith(".blend"):
            assert (checkout / pack_path).read_bytes() == source.read_bytes(), pack_path


def test_many_small_files_go_in_a_few_batch_requests(manager, sequence, access):
    result = submit(manager, sequence)
    files = len(source_files(sequence)) - 1  # LICENSE.txt is not part of the sequence
    assert result.files_uploaded == files
    assert manager.service.store.blobs_written == files
    assert 1 <= access("POST", "shaman/batch-upload") <= 8
    assert access("POST", "shaman/files/") == bigger_than(sequence, 1 << 20)
    assert_checkout_identical(manager, result, sequence)


def test_manager_without_batch_uploads_gets_one_request_per_file(
    manager_factory, sequence, access, monkeypatch
):
    without = [s for s in app_module.ROUTE_SETS if s is not setup_batch_upload_route]
    monkeypatch.setattr(app_module, "ROUTE_SETS", without)
    manager = manager_factory()
    result = submit(manager, sequence)
    files = len(source_files(sequence)) - 1
    assert result.files_uploaded == files
    assert access("POST", "shaman/files/") == files
    # Only the first batch learns that the route is missing; the rest go per file at once.
    assert 1 <= access("POST", "shaman/batch-upload") <= 4
    assert_checkout_identical(manager, result, sequence)


def test_batch_uploads_switched_off_is_one_request_per_file(manager, sequence, access):
    result = submit(manager, sequence, uploads=1, batch_uploads=False)
    files = len(source_files(sequence)) - 1
    assert result.files_uploaded == files
    assert access("POST", "shaman/batch-upload") == 0
    assert access("POST", "shaman/files/") == files


def test_files_bigger_than_the_batch_limit_get_their_own_request(manager, sequence, access):
    big = sequence.parent / "imgseq" / "000300.png"
    big.write_bytes(b"big frame" * 1000)
    result = submit(manager, sequence, batch_max_file_size=4096)
    assert access("POST", "shaman/files/") == bigger_than(sequence, 4096)
    assert access("POST", "shaman/batch-upload") >= 1
    assert (manager.jobs / result.checkout_path / "imgseq/000300.png").read_bytes() == (
        big.read_bytes()
    )


def test_file_changed_while_its_batch_is_sent_goes_with_its_new_content(
    manager, sequence, monkeypatch
):
    frame = sequence.parent / "imgseq" / "000400.png"
    edited: list[bool] = []

    class EditingBody(batching.BatchBody):
        def __iter__(self):
            if not edited:  # identities checked, body not read yet
                edited.append(True)
                frame.write_bytes(frame.read_bytes() + b"late edit")
            return super().__iter__()

    monkeypatch.setattr(uploader, "BatchBody", EditingBody)
    result = submit(manager, sequence)
    checked_out = (manager.jobs / result.checkout_path / "imgseq/000400.png").read_bytes()
    assert checked_out.endswith(b"late edit")
    assert checked_out == frame.read_bytes()
    assert_checkout_identical(manager, result, sequence)


def test_record_the_manager_rejects_is_a_clear_error_naming_the_file(
    manager, sequence, monkeypatch
):
    original = batching._read_unchanged

    def corrupted(path: Path, size: int, mtime_ns: int) -> bytes | None:
        data = original(path, size, mtime_ns)
        if data is not None and path.name == "000222.png":
            return b"X" + data[1:]  # what a flaky disk or network could do
        return data

    monkeypatch.setattr(batching, "_read_unchanged", corrupted)
    with pytest.raises(SubmitError, match=r"rejected imgseq/000222\.png.*checksum"):
        submit(manager, sequence)
    assert list(manager.jobs.iterdir()) == []


def test_cancel_during_a_batch_stops_and_checks_nothing_out(manager, sequence, monkeypatch):
    holder: list[Submission] = []

    class CancellingBody(batching.BatchBody):
        def __iter__(self):
            holder[0].cancel()
            return super().__iter__()

    monkeypatch.setattr(uploader, "BatchBody", CancellingBody)
    sub = Submission(SubmitOptions(blendfile=sequence, manager_url=manager.url))
    holder.append(sub)
    with pytest.raises(SubmitCancelled):
        sub.run()
    assert list(manager.jobs.iterdir()) == []


def test_progress_counts_batched_files_and_bytes(manager, sequence):
    seen = []
    opts = SubmitOptions(blendfile=sequence, manager_url=manager.url)
    result = Submission(opts, progress=seen.append).run()
    uploading = [p for p in seen if p.phase == "uploading"]
    assert uploading
    done_counts = [p.files_done for p in uploading]
    assert done_counts == sorted(done_counts)
    assert (result.files_uploaded, result.bytes_uploaded) == (
        result.files_total,
        result.bytes_total,
    )
    done = seen[-1]
    assert done.phase == "done"
    assert (done.files_done, done.bytes_done) == (result.files_total, result.bytes_total)
