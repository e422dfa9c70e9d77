"""Large files: cancel in the middle of an upload, and memory that stays flat while
multi-GB files stream to the real manager."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import pytest
from flamenco_shaman.engine import Submission, SubmitCancelled, SubmitOptions

MiB = 1 << 20
GiB = 1 << 30

# Blender writes scene.blend with one image, //big.bin, kept by a fake user.
GENERATE_BLEND = r"""
import sys
import bpy
bpy.ops.wm.read_factory_settings(use_empty=True)
img = bpy.data.images.new("big", 4, 4)
img.source = "FILE"
img.filepath = "//big.bin"
img.use_fake_user = True
bpy.ops.wm.save_as_mainfile(filepath=sys.argv[-1])
"""

# Submits argv[1] to argv[2] and prints RSS samples taken while big.bin streams.
MEASURE_RSS = r"""
import json, sys, threading, time
import psutil
from flamenco_shaman.engine import Submission, SubmitOptions

proc = psutil.Process()
state = {"streamed": 0}
samples = []

def progress(p):
    if p.current_file == "big.bin" and p.phase == "uploading":
        state["streamed"] = p.bytes_done

done = threading.Event()

def sample():
    while not done.is_set():
        samples.append((state["streamed"], proc.memory_info().rss))
        time.sleep(0.05)

sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
result = Submission(SubmitOptions(sys.argv[1], sys.argv[2]), progress=progress).run()
done.set()
sampler.join()
print(json.dumps({"samples": samples, "uploaded": result.bytes_uploaded}))
"""


@pytest.fixture(scope="module")
def template_blend(tmp_path_factory):
    blend = tmp_path_factory.mktemp("large") / "scene.blend"
    subprocess.run(
        [sys.executable, "-c", GENERATE_BLEND, str(blend)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return blend


@pytest.fixture
def big_project(template_blend, tmp_path):
    """scene.blend next to a big.bin of the given size (sparse: quick to make and read)."""

    def make(size):
        project = tmp_path / "project"
        project.mkdir()
        shutil.copy(template_blend, project / "scene.blend")
        with open(project / "big.bin", "wb") as f:
            f.write(tmp_path.name.encode() * 64)  # unique per test
            f.truncate(size)
        return project / "scene.blend"

    return make


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("FLAMENCO_SHAMAN_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def drop_storage(manager):
    """The multi-GB blobs are not worth keeping in pytest's last three tmp dirs."""
    yield
    shutil.rmtree(manager.storage, ignore_errors=True)


def test_cancel_mid_upload_stops_quickly_and_checks_nothing_out(
    manager, big_project, drop_storage, tmp_path, monkeypatch
):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    blend = big_project(GiB)
    streaming = threading.Event()

    def progress(p):
        if p.phase == "uploading" and p.current_file == "big.bin" and p.bytes_done > 16 * MiB:
            streaming.set()

    sub = Submission(SubmitOptions(blend, manager.url), progress=progress)
    outcome = []

    def run():
        try:
            outcome.append(sub.run())
        except BaseException as ex:
            outcome.append(ex)

    thread = threading.Thread(target=run)
    thread.start()
    assert streaming.wait(120), "the upload never started"
    started = time.monotonic()
    sub.cancel()
    thread.join(30)
    elapsed = time.monotonic() - started
    assert not thread.is_alive()
    assert isinstance(outcome[0], SubmitCancelled)
    assert elapsed < 5  # behaviour, not speed: "within a second", generously
    assert not manager.jobs.exists() or list(manager.jobs.iterdir()) == []
    assert list(scratch.iterdir()) == []


@pytest.mark.slow  # writes, hashes and uploads 2 GiB (about 30 s); CI runs every marker
def test_client_memory_stays_flat_while_a_multi_gb_file_streams(
    manager, big_project, drop_storage, tmp_path
):
    size = 2 * GiB + 12345
    blend = big_project(size)
    env = {"FLAMENCO_SHAMAN_CACHE_DIR": str(tmp_path / "cache")}
    run = subprocess.run(
        [sys.executable, "-c", MEASURE_RSS, str(blend), manager.url],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["uploaded"] > size
    streaming = [rss for streamed, rss in report["samples"] if streamed > 64 * MiB]
    assert len(streaming) > 5, "too few samples during the upload"
    growth = max(streaming) - streaming[0]
    assert growth < 32 * MiB, f"RSS grew by {growth / MiB:.1f} MiB while streaming"
