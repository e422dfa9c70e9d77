"""The suite's own setup: private cache directory, root-only tests, the shared blend files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Runs pytest in this process with a non-root euid, as a developer's account would.
AS_NON_ROOT = """
import os, sys, pytest
os.geteuid = lambda: 1000
sys.exit(pytest.main(sys.argv[1:]))
"""


def test_the_suite_and_its_subprocesses_use_a_private_cache_dir(tmp_path_factory):
    cache = os.environ.get("FLAMENCO_SHAMAN_CACHE_DIR")
    assert cache and Path(cache).is_relative_to(tmp_path_factory.getbasetemp())
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "from flamenco_shaman.engine.cache import default_cache_dir;print(default_cache_dir())",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert child.stdout.strip() == cache


def test_root_tests_are_deselected_with_the_reason_when_not_root(tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            AS_NON_ROOT,
            "tests/reliability/test_reliability_full_disk.py",
            "-p",
            "no:cacheprovider",
            f"--basetemp={tmp_path / 'base'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        # The outer run's options (e.g. which tests to run) must not reach the inner one.
        env={k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"},
    )
    assert run.returncode == 5, run.stdout  # 5: no test ran (all deselected), none failed
    assert "5 deselected" in run.stdout
    assert "5 tests need root to mount a tmpfs (CI runs as root):" in run.stdout
    assert "test_upload_that_does_not_fit_gets_507_and_leaves_no_temp" in run.stdout


def test_blendfiles_fixture_finds_the_shared_files(blendfiles):
    assert (blendfiles / "basic_file_zstandard.blend").is_file()
