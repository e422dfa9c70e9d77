"""Guarantee 11, the engine side: the manager dies in the middle of a submission's uploads.

When it comes back (same port, same storage) the engine retries and completes; when it
stays down the engine gives up after its retry budget with a one-line message naming the
manager. Either way no checkout is ever created from a partial set of uploads.

The kill is triggered by watching the storage: the first upload temp file that has
received bytes means "mid-upload", however fast or slow the machine is.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
from flamenco_shaman.engine import Progress, Submission, SubmitError, SubmitOptions
from helpers import stored_files
from reliability_helpers import (
    ManagerProcess,
    uploading_temps,
    verify_store,
)

FRAME_SIZE = 12 * 1024 * 1024
FRAMES = [f"imgseq/{n:06d}.png" for n in range(210, 215)]

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLAMENCO_SHAMAN_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def project(tmp_path: Path, blendfiles: Path) -> Path:
    """The image-sequence blend with its five frames made large (BAT only reads names)."""
    proj = tmp_path / "project"
    (proj / "imgseq").mkdir(parents=True)
    shutil.copy(blendfiles / "image_sequencer.blend", proj)
    for i, rel in enumerate(FRAMES):
        # Distinct bytes per frame, cheap to make: a repeated 1 MiB block with a marker.
        block = (i.to_bytes(4, "big") * 1024) + bytes(range(256)) * 4092
        (proj / rel).write_bytes(block * (FRAME_SIZE // len(block)))
    return proj


class KillMidUpload:
    """Kills the manager as soon as an upload temp file has bytes in it; optionally
    restarts it (same port, same storage) after `down_for` seconds."""

    def __init__(self, mgr: ManagerProcess, restart_after: float | None) -> None:
        self.mgr = mgr
        self.restart_after = restart_after
        self.blobs_at_kill = -1
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            if any(p.stat().st_size > 0 for p in _safe(uploading_temps, self.mgr.store)):
                break
            time.sleep(0.002)
        else:
            return
        self.mgr.kill()
        self.blobs_at_kill = len(stored_files(self.mgr.store))
        if self.restart_after is not None:
            time.sleep(self.restart_after)
            self.mgr.start()

    def __enter__(self) -> KillMidUpload:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)


def _safe(func, *args):  # the uploader removes temp files while we look
    try:
        return func(*args)
    except FileNotFoundError:
        return []


def _submit(mgr: ManagerProcess, project: Path) -> Submission:
    return Submission(
        SubmitOptions(
            blendfile=project / "image_sequencer.blend",
            manager_url=mgr.url,
            checkout_path="restart/job",
            uploads=2,
        )
    )


def _checkouts(jobs: Path) -> list[Path]:
    return (
        [p for p in jobs.rglob("*") if p.is_dir() and not p.is_symlink()] if jobs.exists() else []
    )


def test_manager_restarting_mid_upload_lets_the_submission_complete(
    tmp_path: Path, project: Path
) -> None:
    mgr = ManagerProcess(tmp_path / "storage").start()
    try:
        with KillMidUpload(mgr, restart_after=0.2) as killer:
            result = _submit(mgr, project).run()
        # The kill really cut the uploads short: not every file was stored yet.
        assert 0 <= killer.blobs_at_kill < len(FRAMES) + 1
        assert mgr.running
        checkout = mgr.jobs / result.checkout_path
        for rel in [*FRAMES, "image_sequencer.blend"]:
            assert (checkout / rel).is_symlink()
            assert (checkout / rel).read_bytes() == (project / rel).read_bytes(), rel
        assert verify_store(mgr.store) == []
    finally:
        mgr.stop()
    # Exactly one checkout request, after all uploads, and it succeeded.
    creates = [line for line in mgr.lines if "/api/v3/shaman/checkout/create" in line]
    assert len(creates) == 1 and " 200 " in creates[0], creates


def test_manager_staying_down_fails_clearly_and_creates_no_checkout(
    tmp_path: Path, project: Path
) -> None:
    mgr = ManagerProcess(tmp_path / "storage").start()
    try:
        with KillMidUpload(mgr, restart_after=None) as killer:
            with pytest.raises(SubmitError) as failed:
                _submit(mgr, project).run()
        assert 0 <= killer.blobs_at_kill < len(FRAMES) + 1
        message = str(failed.value)
        assert "\n" not in message
        assert mgr.url.rstrip("/") in message, message
        # Nothing was checked out: no checkout directory, not even a hidden one.
        assert _checkouts(mgr.jobs) == []
        assert verify_store(mgr.store) == []
    finally:
        mgr.stop()
    assert not any("/api/v3/shaman/checkout/create" in line for line in mgr.lines)


def test_manager_down_when_the_checkout_is_requested_lets_the_submission_complete(
    tmp_path: Path, project: Path
) -> None:
    mgr = ManagerProcess(tmp_path / "storage").start()
    restarted = threading.Event()
    killed = threading.Event()

    def restart() -> None:
        time.sleep(0.2)
        mgr.start()
        restarted.set()

    def on_progress(progress: Progress) -> None:
        # Called in the submitting thread right before it sends checkout/create.
        if progress.phase == "checkout" and not killed.is_set():
            killed.set()
            mgr.kill()
            threading.Thread(target=restart, daemon=True).start()

    try:
        sub = Submission(
            SubmitOptions(
                blendfile=project / "image_sequencer.blend",
                manager_url=mgr.url,
                checkout_path="restart/job",
            ),
            progress=on_progress,
        )
        result = sub.run()
        assert restarted.wait(30)
        checkout = mgr.jobs / result.checkout_path
        for rel in [*FRAMES, "image_sequencer.blend"]:
            assert (checkout / rel).read_bytes() == (project / rel).read_bytes(), rel
        # One checkout, not a duplicate from a retried request that had got through.
        assert [p.name for p in (mgr.jobs / "restart").iterdir()] == ["job"]
    finally:
        restarted.wait(30)
        mgr.stop()
