"""Optimistic checkout: a resubmission whose every file is a checksum-cache hit skips the
requirements round and checks out at once; a manager that lacks some of those files
answers 424 and gets them sent. Real manager, real BAT, a blend saved by bpy."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
from flamenco_shaman.engine import Submission, SubmitOptions
from helpers import ACCESS_LOGGER, access_messages, clear_access_log

from bench.project import Project, make_project

FILES = [f"textures/t{i:02d}.png" for i in range(12)] + ["sounds/a.wav", "cache/b.vdb"]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Project:
    root = tmp_path_factory.mktemp("optimistic") / "project"
    return make_project(root, FILES, [100 + 37 * i for i in range(len(FILES))])


@pytest.fixture
def project(template: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FLAMENCO_SHAMAN_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "project"
    shutil.copytree(template.root, root)
    return root


def submit(manager, blend: Path):
    opts = SubmitOptions(blendfile=blend, manager_url=manager.url)
    return Submission(opts).run()


def requests_made(caplog: pytest.LogCaptureFixture) -> list[str]:
    """'METHOD /path status' of each request the manager(s) logged, in order."""
    return [" ".join(line.split()[:3]) for line in access_messages(caplog)]


def assert_checkout_matches(manager, result, root: Path) -> None:
    checkout = manager.jobs / result.checkout_path
    for rel in [*FILES, "scene.blend"]:
        assert (checkout / rel).read_bytes() == (root / rel).read_bytes(), rel


def test_unchanged_resubmission_asks_nothing_and_checks_out_at_once(manager, project, caplog):
    blend = project / "scene.blend"
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    submit(manager, blend)
    clear_access_log(caplog)
    result = submit(manager, blend)
    made = requests_made(caplog)
    assert not [r for r in made if "requirements" in r], made
    assert [r for r in made if "checkout/create" in r] == [
        "POST /api/v3/shaman/checkout/create 200"
    ]
    assert (result.files_uploaded, result.bytes_uploaded) == (0, 0)
    assert result.files_total == len(FILES) + 1
    assert_checkout_matches(manager, result, project)


def test_manager_that_lost_files_gets_them_sent_after_its_424(manager, project, caplog):
    blend = project / "scene.blend"
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    submit(manager, blend)
    lost = sorted((manager.store / "stored").rglob("*.blob"))[:3]
    for blob in lost:  # as if GC had collected them
        os.chmod(blob.parent, 0o755)
        blob.unlink()
    clear_access_log(caplog)
    result = submit(manager, blend)
    made = requests_made(caplog)
    creates = [r for r in made if "checkout/create" in r]
    assert creates == [
        "POST /api/v3/shaman/checkout/create 424",
        "POST /api/v3/shaman/checkout/create 200",
    ]
    assert result.files_uploaded == 3
    assert result.bytes_uploaded == sum(int(b.name.split(".")[0]) for b in lost)
    assert all(blob.is_file() for blob in lost)
    assert_checkout_matches(manager, result, project)
    # Only the failed attempt was refused: nothing half-built is left in jobs/.
    assert len(list(manager.jobs.iterdir())) == 2


def test_warm_cache_and_a_new_manager_sends_everything(manager_factory, project):
    blend = project / "scene.blend"
    submit(manager_factory(), blend)
    other = manager_factory()
    result = submit(other, blend)
    assert result.files_uploaded == len(FILES) + 1
    assert_checkout_matches(other, result, project)


def test_a_changed_file_ends_the_optimism(manager, project, caplog):
    blend = project / "scene.blend"
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    submit(manager, blend)
    changed = project / FILES[5]
    changed.write_bytes(b"retouched " * 50)
    clear_access_log(caplog)
    result = submit(manager, blend)
    made = requests_made(caplog)
    assert [r for r in made if "requirements" in r]  # negotiated the normal way
    assert [r for r in made if "checkout/create" in r] == [
        "POST /api/v3/shaman/checkout/create 200"
    ]
    assert (result.files_uploaded, result.bytes_uploaded) == (1, changed.stat().st_size)
    assert_checkout_matches(manager, result, project)
