"""The whole repo stays `ruff` clean and the shipped code type-checks under mypy: findings
of either fail the suite like any other bug."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# What ships: the manager, the add-on (engine and UI) and the zip builder.
TYPED = ["manager_plugin", "addon/flamenco_shaman", "tools"]


def test_ruff_finds_nothing_to_complain_about():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", str(REPO)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_no_type_errors_in_the_shipped_code():
    # Run from the repo so mypy reads pyproject.toml's [tool.mypy] (the per-module
    # overrides); no cache, so a stale one can't hide an error.
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir=/dev/null", *TYPED],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout, result.stdout
