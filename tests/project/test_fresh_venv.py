"""A fresh virtual environment with only `pip install .`: the project's declared runtime
dependencies must be enough to submit every kind of .blend Blender writes (plain, gzip
and ZStandard compressed), to the real manager started from the same environment."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BLENDS = ("basic_file.blend", "basic_file_compressed.blend", "basic_file_zstandard.blend")
# What `pip install .` needs from the source tree; no tests, no test extras.
SOURCES = ("pyproject.toml", "README.md", "manager_plugin", "addon")

pytestmark = pytest.mark.slow  # creates a venv and installs the project into it


def run(*args: str | Path, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=600, **kwargs
    )


@pytest.fixture(scope="module")
def venv_bin(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("fresh")
    source = work / "source"
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(
                REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            source.mkdir(exist_ok=True)
            shutil.copy(REPO / name, source / name)
    created = run(sys.executable, "-m", "venv", work / "venv")
    assert created.returncode == 0, created.stderr
    bin_dir = work / "venv" / "bin"
    installed = run(bin_dir / "python", "-m", "pip", "install", "--quiet", source, env=clean_env())
    assert installed.returncode == 0, installed.stderr
    return bin_dir


def clean_env() -> dict[str, str]:
    """This process's environment minus what would let the venv see other packages."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def test_the_venv_has_no_test_extras(venv_bin):
    probe = run(
        venv_bin / "python", "-c",
        "import importlib.util as u;"
        "print([m for m in ('pytest', 'bpy', 'psutil') if u.find_spec(m)])",
        env=clean_env(),
    )  # fmt: skip
    assert probe.stdout.strip() == "[]", probe.stderr


def test_plain_gzip_and_zstd_blends_submit_and_check_out_byte_identical(
    venv_bin, blendfiles, tmp_path
):
    project = tmp_path / "project"
    project.mkdir()
    for name in BLENDS:
        shutil.copy(blendfiles / name, project / name)
    storage = tmp_path / "storage"
    log = open(tmp_path / "manager.log", "wb")  # closed below, after the server
    manager = subprocess.Popen(
        [venv_bin / "shaman-manager", "serve", "--storage", storage, "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=log, text=True, env=clean_env(), cwd=tmp_path,
    )  # fmt: skip
    try:
        assert manager.stdout is not None
        url = manager.stdout.readline().split()[3]
        for name in BLENDS:
            submitted = run(
                venv_bin / "shaman-submit", project / name, "--manager", url, "--no-job",
                env=clean_env(),
            )  # fmt: skip
            assert submitted.returncode == 0, submitted.stderr
            farm_path = submitted.stdout.splitlines()[-1]
            assert farm_path.startswith("{jobs}/") and farm_path.endswith("/" + name)
            checked_out = storage / "jobs" / farm_path.removeprefix("{jobs}/")
            assert checked_out.read_bytes() == (blendfiles / name).read_bytes()
    finally:
        manager.terminate()
        manager.wait(30)
        log.close()


def test_each_blend_becomes_a_render_job_read_from_its_own_scene(venv_bin, blendfiles, flamenco):
    """The job path reads the scene from the blend with BAT too: also compressed ones."""
    project = flamenco.storage.parent / "project"
    project.mkdir()
    for name in BLENDS:
        shutil.copy(blendfiles / name, project / name)
        submitted = run(
            venv_bin / "shaman-submit", project / name, "--manager", flamenco.url,
            "--set", "format=PNG", env=clean_env(),
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        *_, farm_path, job_id = submitted.stdout.splitlines()
        job = flamenco.received_jobs[-1]
        assert job["settings"]["blendfile"] == farm_path and job_id
        assert re.fullmatch(r"\d+-\d+", job["settings"]["frames"])
        checked_out = flamenco.jobs / farm_path.removeprefix("{jobs}/")
        assert checked_out.read_bytes() == (blendfiles / name).read_bytes()
