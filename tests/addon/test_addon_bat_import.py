"""bat_import: BAT from the wheels inside the zip, chosen for the running Python, never leaked."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest
from flamenco_shaman import bat_import

REPO = Path(__file__).resolve().parents[2]
PYTHON_313 = Path.home() / ".pyenv/versions/3.13.0/bin/python3.13"


@pytest.fixture(scope="session")
def extracted_addon(tmp_path_factory) -> Path:
    """The built zip, unpacked: the directory that holds `flamenco_shaman/`."""
    spec = importlib.util.spec_from_file_location(
        "build_addon_zip", REPO / "tools/build_addon_zip.py"
    )
    tool = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = tool
    spec.loader.exec_module(tool)
    wheel_dir = tmp_path_factory.getbasetemp() / "bat-wheels"
    if not wheel_dir.exists():
        partial = tmp_path_factory.mktemp("bat-wheels-download")
        tool.fetch_wheels(partial)
        partial.rename(wheel_dir)
    built = tool.build(tmp_path_factory.mktemp("addon-dist"), wheel_dir)
    root = tmp_path_factory.mktemp("addon-unpacked")
    zipfile.ZipFile(built).extractall(root)
    return root


# Runs in a fresh interpreter with the unpacked add-on first on sys.path. A module already
# registered as blender_asset_tracer stands for another add-on's BAT.
IMPORT_BAT = """
import json, logging, sys, types
sys.path.insert(0, sys.argv[1])
others = types.ModuleType("blender_asset_tracer")
sys.modules["blender_asset_tracer"] = others
path_before = list(sys.path)
from flamenco_shaman import bat_import
bat = bat_import.import_bat()
print(json.dumps({
    "version": bat.__version__,
    "file": bat.__file__,
    "packer": hasattr(bat.pack, "Packer"),
    "others_kept": sys.modules["blender_asset_tracer"] is others,
    "no_submodules_left": not [n for n in sys.modules if n.startswith("blender_asset_tracer.")],
    "path_restored": sys.path == path_before,
}))
"""


def import_bat_with(python: Path | str, root: Path) -> dict:
    done = subprocess.run(
        [str(python), "-c", IMPORT_BAT, str(root)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def fake_wheels(directory: Path, *versions: str) -> None:
    for version in versions:
        (directory / f"blender_asset_tracer-{version}-py3-none-any.whl").touch()


def test_python_311_prefers_bat_1_newest_first(tmp_path):
    fake_wheels(tmp_path, "1.22", "1.23", "2.2.1")
    names = [w.name.split("-")[1] for w in bat_import.bundled_wheels(tmp_path, (3, 11))]
    assert names == ["1.23", "1.22", "2.2.1"]


def test_python_313_prefers_bat_2(tmp_path):
    fake_wheels(tmp_path, "1.23", "2.2.1")
    names = [w.name.split("-")[1] for w in bat_import.bundled_wheels(tmp_path, (3, 13))]
    assert names == ["2.2.1", "1.23"]


def test_installed_bat_1_offers_the_api_the_engine_uses():
    import blender_asset_tracer
    import blender_asset_tracer.pack.transfer
    import blender_asset_tracer.trace

    assert bat_import.has_required_api(blender_asset_tracer)
    assert not bat_import.has_required_api(types.ModuleType("blender_asset_tracer"))


def test_bundled_bat_is_loaded_from_the_zips_own_wheel(extracted_addon):
    loaded = import_bat_with(sys.executable, extracted_addon)
    wheel = extracted_addon / "flamenco_shaman/wheels/blender_asset_tracer-1.23-py3-none-any.whl"
    assert loaded["file"].startswith(str(wheel))
    assert loaded["version"] == "1.23"


def test_bundled_bat_does_not_replace_another_add_ons_bat(extracted_addon):
    loaded = import_bat_with(sys.executable, extracted_addon)
    assert loaded["others_kept"]
    assert loaded["no_submodules_left"]
    assert loaded["path_restored"]


def test_python_313_without_a_usable_bat_2_falls_back_to_bat_1(extracted_addon):
    # BAT 2.x needs bpy and cattrs and has another API; BAT 1.x runs on Python 3.13.
    loaded = import_bat_with(PYTHON_313, extracted_addon)
    assert loaded["version"] == "1.23"
    assert loaded["packer"]
    assert loaded["others_kept"] and loaded["no_submodules_left"]
