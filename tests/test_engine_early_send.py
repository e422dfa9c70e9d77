"""Plain assets are sent while BAT still traces; the checkout must still be exactly BAT's
pack: same files at the same paths with the same bytes, also when a later reference
moves an early-sent file to `_outside_project` (it is retracted). Real BAT, real
manager, blends saved by bpy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from bpy_scripts import PROJECT_BASE
from flamenco_shaman.bat_import import import_bat
from flamenco_shaman.engine import Submission, SubmitOptions
from flamenco_shaman.engine.pipeline import Pipeline

# scene.blend: wood.png and the sequence by relative paths, and the library props.blend
# (material with //../textures/metal.png). mixed.blend: wood.png relative, and links
# absolute.blend, whose image points at the very same wood.png by its absolute path,
# so BAT moves wood.png to _outside_project and rewrites both blends.
GENERATE = (
    PROJECT_BASE
    + r"""

bpy.ops.wm.read_factory_settings(use_empty=True)
scene_path = os.path.join(proj, "scene.blend")
bpy.ops.wm.save_as_mainfile(filepath=scene_path)
with bpy.data.libraries.load("//libs/props.blend", link=True, relative=True) as (src, dst):
    dst.objects = ["Prop"]
for obj in dst.objects:
    bpy.context.scene.collection.objects.link(obj)
wood = bpy.data.images.load("//textures/wood.png")
wood.use_fake_user = True
seq = bpy.data.images.load("//seq/frame_0001.png")
seq.source = "SEQUENCE"
seq.use_fake_user = True
bpy.ops.wm.save_as_mainfile(filepath=scene_path, relative_remap=False)

bpy.ops.wm.read_factory_settings(use_empty=True)
absolute_path = os.path.join(proj, "libs", "absolute.blend")
bpy.ops.wm.save_as_mainfile(filepath=absolute_path)
img = bpy.data.images.load(os.path.join(proj, "textures", "wood.png"))
mesh = bpy.data.meshes.new("AbsMesh")
absobj = bpy.data.objects.new("Abs", mesh)
mat = bpy.data.materials.new("AbsMat")
mat.use_nodes = True
node = mat.node_tree.nodes.new("ShaderNodeTexImage")
node.image = img
mesh.materials.append(mat)
bpy.context.scene.collection.objects.link(absobj)
bpy.ops.wm.save_as_mainfile(filepath=absolute_path, relative_remap=False)

bpy.ops.wm.read_factory_settings(use_empty=True)
mixed_path = os.path.join(proj, "mixed.blend")
bpy.ops.wm.save_as_mainfile(filepath=mixed_path)
wood = bpy.data.images.load("//textures/wood.png")
wood.use_fake_user = True
with bpy.data.libraries.load("//libs/absolute.blend", link=True, relative=True) as (src, dst):
    dst.objects = ["Abs"]
for obj in dst.objects:
    bpy.context.scene.collection.objects.link(obj)
bpy.ops.wm.save_as_mainfile(filepath=mixed_path, relative_remap=False)
for directory, _dirs, names in os.walk(proj):
    for name in names:
        if name.endswith(".blend1"):
            os.remove(os.path.join(directory, name))
"""
)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("early")
    subprocess.run(
        [sys.executable, "-c", GENERATE, str(root)], check=True, capture_output=True, timeout=120
    )
    return root


@pytest.fixture
def project(generated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The generated project itself (a copy would break absolute.blend's absolute path);
    the tests only read it. Each test gets its own checksum and trace caches."""
    monkeypatch.setenv("FLAMENCO_SHAMAN_CACHE_DIR", str(tmp_path / "cache"))
    return generated / "project"


@pytest.fixture
def retracted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    taken_back: list[str] = []
    real = Pipeline.retract

    def spy(self: Pipeline, pack_path: str) -> None:
        taken_back.append(pack_path)
        real(self, pack_path)

    monkeypatch.setattr(Pipeline, "retract", spy)
    return taken_back


def bat_pack(blend: Path, project: Path, target: Path) -> dict[str, bytes]:
    """BAT's own Packer copying to a directory: the reference layout."""
    bat = import_bat()
    with bat.pack.Packer(blend, project, target) as packer:
        packer.strategise()
        packer.execute()
    return {
        p.relative_to(target).as_posix(): p.read_bytes()
        for p in target.rglob("*")
        if p.is_file() and p.name != "pack-info.txt"
    }


def checkout(manager, result) -> dict[str, bytes]:
    root = manager.jobs / result.checkout_path
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("blend_name", ["scene.blend", "mixed.blend"])
def test_checkout_is_exactly_bats_pack(manager, project, tmp_path, blend_name, retracted):
    blend = project / blend_name
    result = Submission(SubmitOptions(blendfile=blend, manager_url=manager.url)).run()
    ours = checkout(manager, result)
    reference = bat_pack(blend, project, tmp_path / "bat-pack")
    assert sorted(ours) == sorted(reference)
    for path, data in reference.items():
        if path.endswith(".blend"):
            assert len(ours[path]) == len(data), path  # rewritten in a temp dir: same size
        else:
            assert ours[path] == data, path
    assert result.files_total == len(reference)
    if blend_name == "mixed.blend":
        outside = [p for p in ours if p.startswith("_outside_project/")]
        assert any(p.endswith("textures/wood.png") for p in outside), ours.keys()
        assert "textures/wood.png" not in ours


def test_the_early_sent_file_moved_later_is_retracted(manager, project, retracted):
    blend = project / "mixed.blend"
    Submission(SubmitOptions(blendfile=blend, manager_url=manager.url)).run()
    assert retracted == ["textures/wood.png"]


def test_scene_assets_go_out_before_bat_finishes_tracing(manager, project, monkeypatch):
    """The plain assets reach the pipeline from the tracing thread, before BAT's copy step."""
    seen: list[tuple[str, bool]] = []
    bat = import_bat()
    real_add = Pipeline.add
    copying = {"now": False}
    real_copy = bat.pack.Packer._copy_files_to_target

    def copy_step(self) -> None:
        copying["now"] = True
        real_copy(self)

    def add(self: Pipeline, traced) -> None:
        seen.append((traced.pack_path, copying["now"]))
        real_add(self, traced)

    monkeypatch.setattr(bat.pack.Packer, "_copy_files_to_target", copy_step)
    monkeypatch.setattr(Pipeline, "add", add)
    Submission(SubmitOptions(blendfile=project / "scene.blend", manager_url=manager.url)).run()
    early = {path for path, during_copy in seen if not during_copy}
    assert early == {"textures/wood.png", "textures/metal.png"}
    late = {path for path, during_copy in seen if during_copy}
    assert {"scene.blend", "libs/props.blend", "seq/frame_0001.png"} <= late
