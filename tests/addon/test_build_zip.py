"""tools/build_addon_zip.py: one reproducible zip that installs both as extension and add-on."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "build_addon_zip.py"


def _load_tool():
    spec = importlib.util.spec_from_file_location("build_addon_zip", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while executing it
    spec.loader.exec_module(module)
    return module


tool = _load_tool()


@pytest.fixture(scope="session")
def bat_wheels(tmp_path_factory) -> Path:
    """Both pinned BAT wheels, downloaded once per session (shared with the Blender tests)."""
    wheel_dir = tmp_path_factory.getbasetemp() / "bat-wheels"
    if not wheel_dir.exists():
        partial = tmp_path_factory.mktemp("bat-wheels-download")
        tool.fetch_wheels(partial)
        partial.rename(wheel_dir)
    return wheel_dir


def run_tool(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(TOOL), *args], capture_output=True, text=True, env=env, check=False
    )


@pytest.fixture
def package_copy(tmp_path) -> Path:
    """A scratch copy of the add-on package, for builds from altered sources."""
    copy = tmp_path / "src" / "flamenco_shaman"
    shutil.copytree(
        REPO / "addon" / "flamenco_shaman",
        copy,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.whl"),
    )
    return copy


def test_same_inputs_build_byte_identical_zips(bat_wheels, tmp_path):
    first = run_tool("--wheel-dir", str(bat_wheels), "--out", str(tmp_path / "a"))
    second = run_tool("--wheel-dir", str(bat_wheels), "--out", str(tmp_path / "b"))
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    zip_a, zip_b = Path(first.stdout.strip()), Path(second.stdout.strip())
    assert zip_a.name == zip_b.name
    assert zip_a.read_bytes() == zip_b.read_bytes()


def test_zip_is_named_after_the_pyproject_version(bat_wheels, tmp_path):
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    done = run_tool("--wheel-dir", str(bat_wheels), "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == tmp_path / f"flamenco_shaman-{version}.zip"


def test_zip_holds_one_folder_with_package_manifest_and_both_bat_wheels(bat_wheels, tmp_path):
    names = zipfile.ZipFile(tool.build(tmp_path, bat_wheels)).namelist()
    assert {n.split("/")[0] for n in names} == {"flamenco_shaman"}
    assert "flamenco_shaman/__init__.py" in names
    assert "flamenco_shaman/blender_manifest.toml" in names
    assert "flamenco_shaman/engine/__init__.py" in names
    assert "flamenco_shaman/wheels/blender_asset_tracer-1.23-py3-none-any.whl" in names
    assert "flamenco_shaman/wheels/blender_asset_tracer-2.2.1-py3-none-any.whl" in names
    assert names == sorted(names)


def test_zip_entries_have_fixed_timestamps_and_permissions(bat_wheels, tmp_path):
    for info in zipfile.ZipFile(tool.build(tmp_path, bat_wheels)).infolist():
        assert info.date_time == (1980, 1, 1, 0, 0, 0)
        assert info.external_attr >> 16 == 0o100644


def test_source_date_epoch_sets_the_timestamps(bat_wheels, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # 2023-11-14 22:13:20 UTC
    info = zipfile.ZipFile(tool.build(tmp_path, bat_wheels)).infolist()[0]
    assert info.date_time == (2023, 11, 14, 22, 13, 20)


def test_manifest_in_zip_has_what_blender_requires(bat_wheels, tmp_path):
    archive = zipfile.ZipFile(tool.build(tmp_path, bat_wheels))
    manifest = tomllib.loads(archive.read("flamenco_shaman/blender_manifest.toml").decode())
    assert manifest["schema_version"] == "1.0.0"
    assert manifest["id"] == "flamenco_shaman"
    assert manifest["type"] == "add-on"
    assert manifest["blender_version_min"] == "4.2.0"
    assert manifest["license"] == ["SPDX:GPL-3.0-or-later"]
    assert set(manifest["permissions"]) == {"network", "files"}
    assert "wheels" not in manifest  # BAT is loaded privately, not installed for everyone


def test_caches_and_stray_wheels_in_the_source_tree_do_not_reach_the_zip(
    bat_wheels, tmp_path, package_copy
):
    clean = tool.build(tmp_path / "clean", bat_wheels, package_dir=package_copy)
    (package_copy / "__pycache__").mkdir()
    (package_copy / "__pycache__" / "bat_import.cpython-311.pyc").write_bytes(b"junk")
    (package_copy / "wheels").mkdir()
    (package_copy / "wheels" / "blender_asset_tracer-9.9-py3-none-any.whl").write_bytes(b"x")
    dirty = tool.build(tmp_path / "dirty", bat_wheels, package_dir=package_copy)
    assert dirty.read_bytes() == clean.read_bytes()


def test_all_four_version_declarations_agree_in_the_repo():
    versions = tool.read_versions(REPO / "addon" / "flamenco_shaman", REPO / "pyproject.toml")
    assert tool.check_versions(versions) == versions.pyproject


def test_build_refuses_a_manifest_version_that_disagrees(bat_wheels, tmp_path, package_copy):
    manifest = package_copy / "blender_manifest.toml"
    manifest.write_text(manifest.read_text().replace('\nversion = "', '\nversion = "9'))
    with pytest.raises(tool.BuildError, match="versions disagree"):
        tool.build(tmp_path, bat_wheels, package_dir=package_copy)
    assert not list(tmp_path.glob("*.zip"))


def test_build_refuses_a_manifest_that_lists_bat_wheels(bat_wheels, tmp_path, package_copy):
    manifest = package_copy / "blender_manifest.toml"
    manifest.write_text(
        manifest.read_text().replace(
            "blender_version_min",
            'wheels = ["./wheels/blender_asset_tracer-1.23-py3-none-any.whl"]\nblender_version_min',
        )
    )
    with pytest.raises(tool.BuildError, match="must not list the BAT wheels"):
        tool.build(tmp_path, bat_wheels, package_dir=package_copy)


def test_build_refuses_a_manifest_that_is_not_toml(bat_wheels, tmp_path, package_copy):
    (package_copy / "blender_manifest.toml").write_text("id = flamenco_shaman\n")
    with pytest.raises(tool.BuildError, match="not valid TOML"):
        tool.build(tmp_path, bat_wheels, package_dir=package_copy)


def test_missing_wheel_fails_with_a_clear_message_and_no_zip(tmp_path):
    (tmp_path / "wheels").mkdir()
    done = run_tool("--wheel-dir", str(tmp_path / "wheels"), "--out", str(tmp_path / "out"))
    assert done.returncode == 1
    assert "blender_asset_tracer-1.23-py3-none-any.whl not found" in done.stderr
    assert not list((tmp_path / "out").glob("*.zip"))


def test_package_that_does_not_import_fails_the_build(bat_wheels, tmp_path, package_copy):
    (package_copy / "engine" / "__init__.py").write_text("import no_such_module_anywhere\n")
    with pytest.raises(tool.BuildError, match="does not import.*no_such_module_anywhere"):
        tool.build(tmp_path, bat_wheels, package_dir=package_copy)
    assert not list(tmp_path.glob("*.zip"))


def test_default_build_fetches_the_pinned_wheels_with_pip(tmp_path):
    done = run_tool("--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    names = zipfile.ZipFile(done.stdout.strip()).namelist()
    assert "flamenco_shaman/wheels/blender_asset_tracer-1.23-py3-none-any.whl" in names
    assert "flamenco_shaman/wheels/blender_asset_tracer-2.2.1-py3-none-any.whl" in names


def test_zip_carries_the_protocol_rules_the_engine_shares_with_the_manager(bat_wheels, tmp_path):
    names = zipfile.ZipFile(tool.build(tmp_path, bat_wheels)).namelist()
    assert "flamenco_shaman/protocol.py" in names
    assert not any(name.startswith("manager_plugin") for name in names)


def test_package_without_its_protocol_module_fails_the_build(bat_wheels, tmp_path, package_copy):
    (package_copy / "protocol.py").unlink()
    with pytest.raises(tool.BuildError, match="does not import"):
        tool.build(tmp_path / "out", bat_wheels, package_copy)
