"""`shaman-submit --no-job` (upload and checkout only), run as a command against our own
manager, which has no jobs API. Job creation: test_submit_cli_jobs.py."""

import os
import pty
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

SHAMAN_SUBMIT = shutil.which("shaman-submit")


@pytest.fixture
def blends(tmp_path, blendfiles):
    target = tmp_path / "blendfiles"
    shutil.copytree(blendfiles, target)
    return target


@pytest.fixture
def env(tmp_path):
    return {**os.environ, "FLAMENCO_SHAMAN_CACHE_DIR": str(tmp_path / "cache")}


def shaman_submit(*args, env, **kwargs):
    assert SHAMAN_SUBMIT, "shaman-submit is not installed (pip install -e .)"
    return subprocess.run(
        [SHAMAN_SUBMIT, *map(str, args), "--no-job"],
        stdout=subprocess.PIPE,
        stderr=kwargs.pop("stderr", subprocess.PIPE),
        text=True,
        timeout=120,
        env=env,
        **kwargs,
    )


def farm_checkout(manager, farm_path, blend_name):
    assert farm_path.startswith("{jobs}/") and farm_path.endswith("/" + blend_name)
    return manager.jobs / farm_path[len("{jobs}/") : -len("/" + blend_name)]


def test_linked_cube_prints_a_farm_path_whose_checkout_holds_both_blends(manager, blends, env):
    run = shaman_submit(blends / "linked_cube.blend", "--manager", manager.url, env=env)
    assert run.returncode == 0, run.stderr
    farm_path = run.stdout.splitlines()[-1]
    checkout = farm_checkout(manager, farm_path, "linked_cube.blend")
    for name in ("linked_cube.blend", "basic_file.blend"):
        assert (checkout / name).read_bytes() == (blends / name).read_bytes()
    assert sorted(p.name for p in checkout.iterdir()) == ["basic_file.blend", "linked_cube.blend"]


def test_running_it_again_uploads_0_bytes(manager, blends, env):
    url = manager.url.rstrip("/")  # with or without the trailing slash, or the scheme
    first = shaman_submit(blends / "linked_cube.blend", "--manager", url, env=env)
    bare = url.removeprefix("http://")
    again = shaman_submit(blends / "linked_cube.blend", "--manager", bare, env=env)
    assert first.returncode == again.returncode == 0
    assert "Uploaded 0 B of" in again.stdout
    assert "0 of 984080 bytes" in again.stdout
    assert again.stdout.splitlines()[-1] != first.stdout.splitlines()[-1]


def test_missing_library_is_named_and_the_submit_succeeds(manager, blends, env):
    run = shaman_submit(blends / "doubly_linked.blend", "--manager", manager.url, env=env)
    assert run.returncode == 0, run.stderr
    assert "material_textures.blend" in run.stdout
    assert run.stdout.splitlines()[-1].endswith("/doubly_linked.blend")


def test_project_and_checkout_path_options(manager, blends, env):
    run = shaman_submit(
        blends / "subdir" / "doubly_linked_up.blend",
        "--manager",
        manager.url,
        "--project",
        blends,
        "--checkout-path",
        "show/shot 010",
        "--exclude",
        "*basic_file.blend",
        "--jobs",
        "2",
        "--uploads",
        "2",
        env=env,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "{jobs}/show/shot 010/subdir/doubly_linked_up.blend"
    checkout = manager.jobs / "show" / "shot 010"
    assert sorted(p.relative_to(checkout).as_posix() for p in checkout.rglob("*.blend")) == [
        "linked_cube.blend",
        "subdir/doubly_linked_up.blend",
    ]


def test_token_option_is_sent(manager_factory, blends, env):
    manager = manager_factory(token="s3cret")
    run = shaman_submit(
        blends / "basic_file.blend", "--manager", manager.url, "--token", "s3cret", env=env
    )
    assert run.returncode == 0, run.stderr


def one_line_error(run):
    assert run.returncode not in (0, None)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert run.stdout == ""
    return lines[0]


def test_unreachable_manager_exits_non_zero_with_one_line(blends, env):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run = shaman_submit(
        blends / "basic_file.blend", "--manager", f"http://127.0.0.1:{port}", env=env
    )
    assert "cannot reach the manager" in one_line_error(run)


def test_shaman_disabled_exits_non_zero_with_one_line(manager_factory, blends, env):
    manager = manager_factory(shaman_enabled=False)
    run = shaman_submit(blends / "basic_file.blend", "--manager", manager.url, env=env)
    assert "Shaman is disabled" in one_line_error(run)


def test_missing_blend_file_exits_non_zero_with_one_line(manager, tmp_path, env):
    run = shaman_submit(tmp_path / "gone.blend", "--manager", manager.url, env=env)
    assert "not found" in one_line_error(run)


def test_not_a_blend_file_exits_non_zero_with_one_line(manager, tmp_path, env):
    bogus = tmp_path / "bogus.blend"
    bogus.write_text("hello")
    run = shaman_submit(bogus, "--manager", manager.url, env=env)
    assert "bogus.blend" in one_line_error(run)


def test_bad_arguments_are_a_usage_error(blends, env):
    run = shaman_submit(
        blends / "basic_file.blend", "--manager", "http://x", "--jobs", "0", env=env
    )
    assert run.returncode == 2
    assert "--jobs" in run.stderr


def test_progress_bar_is_drawn_on_a_terminal(manager, blends, env):
    master, slave = pty.openpty()
    drawn = []

    def read_terminal():
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO once the writing end is closed
                return
            if not chunk:
                return
            drawn.append(chunk)

    reader = threading.Thread(target=read_terminal)
    reader.start()
    try:
        run = shaman_submit(
            blends / "image_sequencer.blend", "--manager", manager.url, env=env, stderr=slave
        )
    finally:
        os.close(slave)
        reader.join(10)
        os.close(master)
    assert run.returncode == 0
    text = b"".join(drawn).decode(errors="replace")
    assert "\r[" in text and "files" in text and "/s" in text


def test_no_progress_bar_when_not_on_a_terminal(manager, blends, env):
    run = shaman_submit(blends / "basic_file.blend", "--manager", manager.url, env=env)
    assert run.returncode == 0
    assert run.stderr == ""


def _holds_a_temp(uploading: Path) -> bool:
    """Whether an upload temp exists; its dirs come and go while the walk runs."""
    try:
        return any(uploading.rglob("*.tmp"))
    except FileNotFoundError:
        return False


def test_ctrl_c_cancels_mid_upload_without_a_checkout(manager, blends, env):
    frame = blends / "imgseq" / "000210.png"
    with open(frame, "r+b") as f:
        f.truncate(1 << 30)  # sparse: a large upload that is quick to make
    proc = subprocess.Popen(
        [
            SHAMAN_SUBMIT,
            str(blends / "image_sequencer.blend"),
            "--manager",
            manager.url,
            "--no-job",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        uploading = manager.store / "uploading"
        while not _holds_a_temp(uploading):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the upload never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(manager.storage / "file-store", ignore_errors=True)
    assert proc.returncode == 130
    assert stderr.strip() == "shaman-submit: cancelled"
    assert stdout == ""
    assert not manager.jobs.exists() or list(manager.jobs.iterdir()) == []
