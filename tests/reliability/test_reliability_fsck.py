"""Guarantee 1: every stored blob is what its name says (`shaman-manager fsck`).

The storage is built by hand in the protocol's layout (docs/protocol.md), then
damaged on purpose; fsck must find each kind of damage and --repair must
quarantine (never delete) bad blobs and remove stale temps only.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from manager_plugin import fsck
from manager_plugin.store.pending import READ_SIZE


def put_blob(storage: Path, data: bytes) -> Path:
    """Store `data` as a verified blob, read-only like the server leaves it."""
    sha = hashlib.sha256(data).hexdigest()
    path = storage / "file-store" / "stored" / sha[:2] / sha[2:] / f"{len(data)}.blob"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o444)
    return path


def put_temp(storage: Path, data: bytes, *, age: float) -> Path:
    sha = hashlib.sha256(data).hexdigest()
    path = storage / "file-store" / "uploading" / sha[:2] / sha[2:] / f"{len(data)}-x1y2.tmp"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: len(data) // 2])
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def flip_byte(path: Path, offset: int = 0) -> None:
    path.chmod(0o644)
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def link_into_jobs(storage: Path, rel: str, target: Path) -> Path:
    link = storage / "jobs" / rel
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(target, link.parent))
    return link


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    root = tmp_path / "storage"
    (root / "jobs").mkdir(parents=True)
    (root / "file-store" / "stored").mkdir(parents=True)
    (root / "file-store" / "uploading").mkdir(parents=True)
    return root


@pytest.fixture
def healthy(storage: Path) -> list[Path]:
    """A few good blobs (one larger than fsck's read size) linked into a checkout."""
    blobs = [
        put_blob(storage, b""),
        put_blob(storage, b"hello shaman\n"),
        put_blob(storage, os.urandom(3 * READ_SIZE + 17)),
    ]
    for i, blob in enumerate(blobs):
        link_into_jobs(storage, f"proj/job-1/file{i}.bin", blob)
    return blobs


def kinds(report: fsck.FsckReport) -> list[str]:
    return sorted(p.kind for p in report.problems)


def test_clean_store_reports_no_problems(storage, healthy):
    report = fsck.run_fsck(storage)
    assert report.problems == []
    assert report.ok
    assert report.blobs_checked == 3
    assert report.bytes_checked == sum(p.stat().st_size for p in healthy)
    assert report.links_checked == 3


def test_finds_blob_corrupted_on_purpose(storage, healthy):
    flip_byte(healthy[2], offset=2 * READ_SIZE + 5)
    report = fsck.run_fsck(storage)
    assert kinds(report) == [fsck.BAD_CHECKSUM]
    assert report.problems[0].path == healthy[2]
    assert not report.ok


def test_finds_blob_of_wrong_size(storage, healthy):
    healthy[1].chmod(0o644)
    with open(healthy[1], "ab") as f:
        f.write(b"extra")
    report = fsck.run_fsck(storage)
    assert kinds(report) == [fsck.BAD_SIZE]
    assert "name says 13" in report.problems[0].detail


def test_finds_file_not_named_like_a_blob(storage, healthy):
    stray = storage / "file-store" / "stored" / "zz" / "not-a-sha" / "12.blob"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"who put this here")
    report = fsck.run_fsck(storage)
    assert kinds(report) == [fsck.STRAY_FILE]


def test_finds_stale_temp_but_not_a_young_one(storage, healthy):
    stale = put_temp(storage, b"stale upload data", age=fsck.STALE_TEMP_AGE + 5)
    put_temp(storage, b"a young upload", age=0)
    report = fsck.run_fsck(storage)
    assert kinds(report) == [fsck.STALE_TEMP]
    assert report.problems[0].path == stale
    assert report.live_temps == 0  # the young one is unlocked: not an upload in progress


def test_temp_held_by_a_live_upload_is_not_stale(storage, healthy):
    temp = put_temp(storage, b"live upload data", age=fsck.STALE_TEMP_AGE + 5)
    with open(temp, "rb") as owner:
        fcntl.flock(owner, fcntl.LOCK_EX)
        report = fsck.run_fsck(storage, repair=True)
        assert report.problems == []
        assert report.live_temps == 1
        assert temp.exists()


def test_finds_dangling_link(storage, healthy):
    gone = storage / "file-store" / "stored" / "00" / ("0" * 62) / "5.blob"
    link = link_into_jobs(storage, "proj/job-2/missing.txt", gone)
    report = fsck.run_fsck(storage)
    assert kinds(report) == [fsck.DANGLING_LINK]
    assert report.problems[0].path == link


def test_finds_link_pointing_outside_the_store(storage, healthy, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("not a blob")
    link_into_jobs(storage, "proj/job-3/escape.txt", outside)
    # A symlinked directory is a link too, and os.walk must not follow it.
    (storage / "jobs" / "proj" / "evil-dir").symlink_to(tmp_path)
    report = fsck.run_fsck(storage)
    assert kinds(report) == [fsck.OUTSIDE_LINK, fsck.OUTSIDE_LINK]


def test_checks_links_in_extra_checkout_paths(storage, healthy, tmp_path):
    extra = tmp_path / "extra-checkouts"
    extra.mkdir()
    (extra / "dangling").symlink_to(storage / "file-store" / "stored" / "nope.blob")
    assert kinds(fsck.run_fsck(storage)) == []
    report = fsck.run_fsck(storage, extra_checkout_paths=[extra])
    assert kinds(report) == [fsck.DANGLING_LINK]


def test_repair_quarantines_bad_blobs_and_keeps_their_bytes(storage, healthy):
    flip_byte(healthy[1])
    corrupted = healthy[1].read_bytes()
    report = fsck.run_fsck(storage, repair=True)
    # The job that linked the bad blob has lost that file: reported, and not ok.
    assert kinds(report) == [fsck.BAD_CHECKSUM, fsck.DANGLING_LINK]
    assert report.problems[0].repaired and not report.ok
    assert report.problems[1].path == storage / "jobs/proj/job-1/file1.bin"
    assert not healthy[1].exists()
    quarantine = storage / "file-store" / "quarantine"
    moved = [p for p in quarantine.rglob("*") if p.is_file()]
    assert len(moved) == 1
    assert moved[0].read_bytes() == corrupted
    assert moved[0].relative_to(report.quarantine_dir) == healthy[1].relative_to(
        storage / "file-store" / "stored"
    )
    # Good blobs are untouched, and a second run is clean apart from the link
    # that pointed at the quarantined blob.
    assert healthy[0].exists() and healthy[2].exists()
    assert kinds(fsck.run_fsck(storage)) == [fsck.DANGLING_LINK]


def test_repair_removes_stale_temps_only(storage, healthy):
    stale = put_temp(storage, b"stale upload data", age=fsck.STALE_TEMP_AGE + 5)
    young = put_temp(storage, b"a young upload", age=0)
    report = fsck.run_fsck(storage, repair=True)
    assert report.ok
    assert not stale.exists()
    assert young.exists()


def test_repair_does_not_touch_links(storage, healthy, tmp_path):
    link = link_into_jobs(storage, "proj/job-3/escape.txt", tmp_path)
    report = fsck.run_fsck(storage, repair=True)
    assert kinds(report) == [fsck.OUTSIDE_LINK]
    assert not report.ok, "an unrepaired problem must not read as ok"
    assert link.is_symlink()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "manager_plugin", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def write_config(tmp_path: Path, storage: Path) -> Path:
    config = tmp_path / "flamenco-manager.yaml"
    config.write_text(f"shared_storage_path: {storage}\nshaman:\n  enabled: true\n")
    return config


def test_cli_exits_zero_on_clean_store(storage, healthy, tmp_path):
    result = run_cli("fsck", "--config", str(write_config(tmp_path, storage)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 problems" in result.stdout


def test_cli_exits_nonzero_and_names_corrupt_blob(storage, healthy, tmp_path):
    flip_byte(healthy[0 + 1])
    result = run_cli("fsck", "--config", str(write_config(tmp_path, storage)))
    assert result.returncode != 0
    assert str(healthy[1]) in result.stdout
    assert "bad-checksum" in result.stdout


def test_cli_repair_exits_zero_once_everything_is_repaired(storage, healthy, tmp_path):
    unlinked = put_blob(storage, b"no job links this one")
    flip_byte(unlinked)
    config = str(write_config(tmp_path, storage))
    result = run_cli("fsck", "--repair", "--config", config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "quarantine" in result.stdout
    assert run_cli("fsck", "--config", config).returncode == 0


def test_cli_repair_exits_nonzero_while_a_job_links_the_quarantined_blob(
    storage, healthy, tmp_path
):
    flip_byte(healthy[1])
    config = str(write_config(tmp_path, storage))
    result = run_cli("fsck", "--repair", "--config", config)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "quarantine" in result.stdout
    assert f"  {storage / 'jobs/proj/job-1/file1.bin'}" in result.stdout.splitlines()
    assert run_cli("fsck", "--config", config).returncode != 0  # link to it still dangles


def test_server_startup_removes_temps_no_live_upload_owns(manager_factory, tmp_path):
    storage = tmp_path / "taken-over"
    (storage / "jobs").mkdir(parents=True)
    blob = put_blob(storage, b"survives startup\n")
    # A crash leftover (even a fresh one: no upload of a new process can own it)...
    dead = put_temp(storage, b"left by a crashed upload", age=0)
    # ...and a temp a live upload of another process on the same storage holds.
    live = put_temp(storage, b"still being uploaded elsewhere", age=fsck.STALE_TEMP_AGE + 5)
    with open(live, "rb") as owner:
        fcntl.flock(owner, fcntl.LOCK_EX)
        manager_factory(storage_path=storage)
        assert not dead.exists()
        assert live.exists()
    assert blob.exists()
    report = fsck.run_fsck(storage)
    assert [p.path for p in report.problems] == [live]  # its owner is gone now: stale
