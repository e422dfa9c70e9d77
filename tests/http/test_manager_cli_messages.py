"""shaman-manager's answers to an admin's mistakes: the text and the exit status of each,
from the real command in a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from manager_plugin import __version__

EXIT_CONFIG = 2


def manager_cmd(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "manager_plugin", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def config_error(run) -> str:
    assert run.returncode == EXIT_CONFIG, (run.returncode, run.stdout, run.stderr)
    assert run.stderr.startswith("shaman-manager: config error: "), run.stderr
    return run.stderr.removeprefix("shaman-manager: config error: ").rstrip("\n")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("command", ["gc", "fsck"])
def test_without_config_or_storage_and_no_default_storage_the_flags_are_hinted(command, tmp_path):
    message = config_error(manager_cmd(command, cwd=tmp_path))
    assert message == (
        f"shared_storage_path: {tmp_path / 'flamenco-storage'} does not exist (without "
        "--config or --storage it is ./flamenco-storage in the current directory); "
        "give --storage DIR or --config flamenco-manager.yaml"
    )


@pytest.mark.parametrize("command", ["serve", "gc", "fsck"])
def test_storage_that_is_a_regular_file_is_not_a_directory(command, tmp_path):
    regular = write(tmp_path / "storage", "not a directory")
    message = config_error(manager_cmd(command, "--storage", regular, cwd=tmp_path))
    assert message == f"shared_storage_path: {regular} is not a directory"


def test_a_numeric_token_must_be_quoted(tmp_path):
    config = write(
        tmp_path / "flamenco-manager.yaml",
        f"shared_storage_path: {tmp_path}\nshaman:\n  token: 12345\n",
    )
    message = config_error(manager_cmd("gc", "--config", config, cwd=tmp_path))
    assert (
        message
        == f'{config}: shaman.token (line 3): must be a string; quote it, e.g. token: "12345"'
    )


def test_a_yaml_syntax_error_shows_the_blamed_line_and_the_one_before(tmp_path):
    config = write(
        tmp_path / "flamenco-manager.yaml",
        "listen: ':8080'\nshaman:\n  enabled true\n  token: abc\n",
    )
    message = config_error(manager_cmd("gc", "--config", config, cwd=tmp_path))
    assert message.splitlines() == [
        f"{config}: invalid YAML at line 4: mapping values are not allowed here",
        "     3 |   enabled true",
        "     4 |   token: abc",
    ]


def test_typos_under_shaman_and_at_the_top_level_are_warned_with_their_line(tmp_path):
    storage = tmp_path / "storage"
    (storage / "jobs").mkdir(parents=True)  # as the server leaves every storage
    config = write(
        tmp_path / "flamenco-manager.yaml",
        f"""shared_storage_path: {storage}
manager_name: Flamenco
database: flamenco-manager.sqlite
variables:
  blender: {{values: []}}
shamen:
  enabled: true
shaman:
  enabled: true
  garbagecollect:
    maxAge: 1h
  garbageCollect:
    maxage: 1h
  frobnicate: 1
""",
    )
    run = manager_cmd("gc", "--config", config, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    warnings = [
        line.split(" WARNING manager_plugin.config: ")[1]
        for line in run.stderr.splitlines()
        if "WARNING" in line
    ]
    assert warnings == [
        f"{config}: shamen (line 6): unknown key, ignored; did you mean shaman?",
        f"{config}: shaman.garbagecollect (line 10): unknown key, ignored; "
        "did you mean shaman.garbageCollect?",
        f"{config}: shaman.garbageCollect.maxage (line 13): unknown key, ignored; "
        "did you mean shaman.garbageCollect.maxAge?",
        f"{config}: shaman.frobnicate (line 14): unknown key, ignored",
    ]


def test_flamencos_own_config_is_accepted_without_warnings(tmp_path):
    storage = tmp_path / "storage"
    (storage / "jobs").mkdir(parents=True)  # as the server leaves every storage
    config = write(
        tmp_path / "flamenco-manager.yaml",
        f"""_meta:
  version: 3
manager_name: Flamenco
database: flamenco-manager.sqlite
database_check_period: 1h0m0s
listen: :8080
autodiscoverable: true
local_manager_storage_path: ./flamenco-manager-storage
shared_storage_path: {storage}
shaman:
  enabled: true
  garbageCollect:
    period: 24h0m0s
    maxAge: 744h0m0s
    extraCheckoutPaths: []
task_timeout: 10m0s
worker_timeout: 1m0s
blocklist_threshold: 3
task_fail_after_softfail_count: 3
mqtt:
  client:
    broker: ""
variables:
  blender:
    values:
      - platform: linux
        value: blender
""",
    )
    run = manager_cmd("gc", "--config", config, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "WARNING" not in run.stderr


def test_gc_dry_run_says_would_remove(tmp_path):
    storage = tmp_path / "storage"
    (storage / "jobs").mkdir(parents=True)  # as the server leaves every storage
    run = manager_cmd("gc", "--dry-run", "--storage", storage, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == (
        "would delete 0 blobs (0 bytes); checked 0 blobs, saw 0 links, "
        "would remove 0 stale temps and 0 dirs"
    )


def test_version(tmp_path):
    run = manager_cmd("--version", cwd=tmp_path)
    assert run.returncode == 0
    assert run.stdout.strip() == f"shaman-manager {__version__}"


def serve_with(tmp_path: Path, *args, env: dict | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "manager_plugin", "serve", "--listen", "127.0.0.1:0",
         "--storage", tmp_path / "storage", *map(str, args)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def requirements_status(url: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = {"files": [{"sha": "0" * 64, "size": 1, "path": "a"}]}
    api = url + "api/v3/shaman/checkout/requirements"
    return requests.post(api, json=body, headers=headers, timeout=10).status_code


@pytest.mark.parametrize("source", ["file", "environment"])
def test_serve_takes_the_token_from_a_file_or_the_environment(source, tmp_path):
    if source == "file":
        proc = serve_with(tmp_path, "--token-file", write(tmp_path / "token", "s3cret\n"))
    else:
        proc = serve_with(tmp_path, env={"FLAMENCO_SHAMAN_MANAGER_TOKEN": "s3cret"})
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[3]
        assert requirements_status(url, None) == 401
        assert requirements_status(url, "s3cret") == 200
    finally:
        proc.terminate()
        proc.wait(30)


def test_serve_names_an_unreadable_token_file(tmp_path):
    gone = tmp_path / "no-token"
    message = config_error(
        manager_cmd("serve", "--token-file", gone, "--storage", tmp_path, cwd=tmp_path)
    )
    assert message == f"--token-file: cannot read {gone}: No such file or directory"


def shaman_submit(blend: Path, manager_url: str) -> subprocess.CompletedProcess[str]:
    submit = shutil.which("shaman-submit")
    assert submit, "shaman-submit is not installed (pip install -e .)"
    return subprocess.run(
        [submit, str(blend), "--manager", manager_url, "--no-job"],  # ours: no jobs API
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_fsck_repair_names_each_checkout_file_that_lost_its_blob_and_how_to_heal(
    manager, blendfiles, tmp_path
):
    project = tmp_path / "project"
    project.mkdir()
    for name in ("linked_cube.blend", "basic_file.blend"):
        shutil.copy(blendfiles / name, project / name)
    first = shaman_submit(project / "linked_cube.blend", manager.url)
    assert first.returncode == 0, first.stderr
    checkout = manager.jobs / first.stdout.splitlines()[-2].removeprefix("Checkout: ")
    blob = (checkout / "basic_file.blend").resolve()
    blob.chmod(0o644)
    with open(blob, "r+b") as f:  # the disk flips a byte
        f.seek(100)
        f.write(bytes([f.read(1)[0] ^ 0xFF]))

    run = manager_cmd("fsck", "--repair", "--storage", manager.storage, cwd=tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    start = lines.index("Checkouts that lost a file, whose blob is missing (1):")
    assert lines[start + 1] == f"  {checkout / 'basic_file.blend'}"
    assert lines[start + 2].startswith("To heal them, submit those blend files again: ")
    assert manager_cmd("fsck", "--storage", manager.storage, cwd=tmp_path).returncode == 1

    again = shaman_submit(project / "linked_cube.blend", manager.url)
    assert again.returncode == 0, again.stderr
    size = (project / "basic_file.blend").stat().st_size
    assert f"(1 of 2 files; {size} of " in again.stdout  # exactly the lost file
    assert manager_cmd("fsck", "--storage", manager.storage, cwd=tmp_path).returncode == 0
    assert (checkout / "basic_file.blend").read_bytes() == (
        project / "basic_file.blend"
    ).read_bytes()
