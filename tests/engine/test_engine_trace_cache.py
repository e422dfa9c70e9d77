"""The trace cache: resubmitting an unchanged project skips BAT, and anything that could
change the trace (a blend, a library, a new frame, a missing file appearing, other
options) makes the engine trace again. Real manager, real BAT, blends made with bpy."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest
from bpy_scripts import PROJECT_BASE
from flamenco_shaman.engine import Submission, SubmitOptions, trace
from flamenco_shaman.engine.trace_cache import DIRNAME, FORMAT_VERSION

# Run with Blender's Python (bpy): writes <root>/project/... and <root>/outside/logo.png.
# scene.blend links libs/props.blend (whose material uses textures/metal.png), uses
# textures/wood.png, the sequence seq/frame_000[1-4].png and textures/later.png, which
# doesn't exist yet. outside.blend uses wood.png and logo.png by absolute path, outside
# the project, so BAT rewrites it.
GENERATE = PROJECT_BASE + r"""

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
later = bpy.data.images.new("later", 8, 8)
later.source = "FILE"
later.filepath = "//textures/later.png"
later.use_fake_user = True
bpy.ops.wm.save_as_mainfile(filepath=scene_path, relative_remap=False)

bpy.ops.wm.read_factory_settings(use_empty=True)
outside_path = os.path.join(proj, "outside.blend")
bpy.ops.wm.save_as_mainfile(filepath=outside_path)
wood = bpy.data.images.load("//textures/wood.png")
wood.use_fake_user = True
logo = bpy.data.images.load(os.path.join(root, "outside", "logo.png"))
logo.use_fake_user = True
bpy.ops.wm.save_as_mainfile(filepath=outside_path, relative_remap=False)
for name in os.listdir(proj) + [os.path.join("libs", n) for n in os.listdir(proj + "/libs")]:
    if name.endswith(".blend1"):
        os.remove(os.path.join(proj, name))
"""

SCENE_FILES = {
    "scene.blend",
    "libs/props.blend",
    "textures/wood.png",
    "textures/metal.png",
    "seq/frame_0001.png",
    "seq/frame_0002.png",
    "seq/frame_0003.png",
    "seq/frame_0004.png",
}


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("generated")
    subprocess.run(
        [sys.executable, "-c", GENERATE, str(root)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return root


@pytest.fixture
def project(generated, tmp_path):
    """A private copy of the generated project, saved a minute ago (as projects are)."""
    proj = tmp_path / "world" / "project"
    shutil.copytree(generated / "project", proj)
    past = time.time() - 60
    for path in [proj, *proj.rglob("*")]:
        os.utime(path, (past, past))
    return proj


@pytest.fixture
def cache_dir(monkeypatch, tmp_path):
    path = tmp_path / "cache"
    monkeypatch.setenv("FLAMENCO_SHAMAN_CACHE_DIR", str(path))
    return path


@pytest.fixture
def bat_runs(monkeypatch):
    """Counts the traces BAT really ran (each builds one Packer)."""
    runs = []
    real = trace.packer_class

    def counting(bat):
        runs.append(1)
        return real(bat)

    monkeypatch.setattr(trace, "packer_class", counting)
    return runs


def submit(manager, blend, **kwargs):
    opts = SubmitOptions(blendfile=blend, manager_url=manager.url, **kwargs)
    return Submission(opts).run()


def checkout_of(manager, result):
    """{path in checkout: bytes} of every file in the result's checkout."""
    root = manager.jobs / result.checkout_path
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def later_frame(project, frame):
    src = project / "seq" / "frame_0004.png"
    shutil.copyfile(src, project / "seq" / f"frame_{frame:04d}.png")


# --- what is reused ------------------------------------------------------------------


def test_unchanged_project_is_not_traced_again_and_checks_out_identically(
    manager, project, cache_dir, bat_runs
):
    first = submit(manager, project / "scene.blend")
    second = submit(manager, project / "scene.blend")
    assert len(bat_runs) == 1
    assert set(checkout_of(manager, first)) == SCENE_FILES
    assert checkout_of(manager, second) == checkout_of(manager, first)
    for pack_path, data in checkout_of(manager, second).items():
        assert data == (project / pack_path).read_bytes(), pack_path
    assert second.missing_files == first.missing_files == [str(project / "textures/later.png")]
    assert second.farm_blend_path == f"{{jobs}}/{second.checkout_path}/scene.blend"
    assert (second.files_total, second.bytes_total) == (first.files_total, first.bytes_total)
    assert second.bytes_uploaded == 0


def test_changed_texture_is_uploaded_while_the_trace_is_reused(
    manager, project, cache_dir, bat_runs
):
    submit(manager, project / "scene.blend")
    wood = project / "textures" / "wood.png"
    wood.write_bytes(wood.read_bytes() + b"changed")  # in place: its folder doesn't change
    result = submit(manager, project / "scene.blend")
    assert len(bat_runs) == 1
    assert (result.files_uploaded, result.bytes_uploaded) == (1, wood.stat().st_size)
    assert checkout_of(manager, result)["textures/wood.png"] == wood.read_bytes()


def test_tracing_phase_is_still_reported_for_a_cached_trace(manager, project, cache_dir, bat_runs):
    submit(manager, project / "scene.blend")
    phases = []
    opts = SubmitOptions(blendfile=project / "scene.blend", manager_url=manager.url)
    Submission(opts, progress=lambda p: phases.append(p.phase)).run()
    assert len(bat_runs) == 1
    assert phases[0] == "tracing" and phases[-1] == "done"


def test_same_options_again_reuse_their_own_entry(manager, project, cache_dir, bat_runs):
    plain = submit(manager, project / "scene.blend")
    excluded = submit(manager, project / "scene.blend", exclude=["*/seq/*"])
    assert len(bat_runs) == 2
    assert not any(p.startswith("seq/") for p in checkout_of(manager, excluded))
    again = submit(manager, project / "scene.blend")
    renamed = submit(manager, project / "scene.blend", pack_blend_name="job.blend")
    assert len(bat_runs) == 3
    assert checkout_of(manager, again) == checkout_of(manager, plain)
    assert "job.blend" in checkout_of(manager, renamed)
    submit(manager, project / "scene.blend", pack_blend_name="job.blend")
    assert len(bat_runs) == 3


def test_trace_cache_off_always_runs_bat(manager, project, cache_dir, bat_runs):
    submit(manager, project / "scene.blend", trace_cache=False)
    submit(manager, project / "scene.blend", trace_cache=False)
    assert len(bat_runs) == 2
    assert not (cache_dir / DIRNAME).exists()


# --- what makes it trace again ----------------------------------------------------------


def test_touched_main_blend_is_traced_again(manager, project, cache_dir, bat_runs):
    submit(manager, project / "scene.blend")
    os.utime(project / "scene.blend")
    result = submit(manager, project / "scene.blend")
    assert len(bat_runs) == 2
    assert set(checkout_of(manager, result)) == SCENE_FILES


def test_changed_linked_library_is_traced_again(manager, project, cache_dir, bat_runs):
    submit(manager, project / "scene.blend")
    props = project / "libs" / "props.blend"
    with open(props, "ab") as f:  # a trailing byte: BAT reads up to the ENDB block
        f.write(b"\0")
    result = submit(manager, project / "scene.blend")
    assert len(bat_runs) == 2
    assert checkout_of(manager, result)["libs/props.blend"] == props.read_bytes()


def test_new_frame_in_a_sequence_folder_is_traced_and_checked_out(
    manager, project, cache_dir, bat_runs
):
    submit(manager, project / "scene.blend")
    later_frame(project, 5)
    result = submit(manager, project / "scene.blend")
    assert len(bat_runs) == 2
    assert set(checkout_of(manager, result)) == SCENE_FILES | {"seq/frame_0005.png"}


def test_deleted_frame_is_traced_again_and_left_out(manager, project, cache_dir, bat_runs):
    submit(manager, project / "scene.blend")
    (project / "seq" / "frame_0004.png").unlink()
    result = submit(manager, project / "scene.blend")
    assert len(bat_runs) == 2
    assert set(checkout_of(manager, result)) == SCENE_FILES - {"seq/frame_0004.png"}


def test_missing_file_that_appears_is_traced_and_checked_out(manager, project, cache_dir, bat_runs):
    first = submit(manager, project / "scene.blend")
    assert first.missing_files == [str(project / "textures" / "later.png")]
    shutil.copyfile(project / "textures" / "wood.png", project / "textures" / "later.png")
    result = submit(manager, project / "scene.blend")
    assert len(bat_runs) == 2
    assert result.missing_files == []
    assert set(checkout_of(manager, result)) == SCENE_FILES | {"textures/later.png"}


def test_trace_with_a_rewritten_blend_is_never_cached(manager, project, cache_dir, bat_runs):
    blend = project / "outside.blend"
    first = submit(manager, blend)
    second = submit(manager, blend)
    assert len(bat_runs) == 2
    assert not list((cache_dir / DIRNAME).glob("*.json"))
    assert checkout_of(manager, second) == checkout_of(manager, first)
    assert any(p.startswith("_outside_project/") for p in checkout_of(manager, second))


def test_blend_saved_just_before_the_trace_is_not_cached(manager, project, cache_dir, bat_runs):
    os.utime(project / "scene.blend")  # its mtime can't tell a change a moment later apart
    submit(manager, project / "scene.blend")
    submit(manager, project / "scene.blend")
    assert len(bat_runs) == 2


# --- the cache file ----------------------------------------------------------------------


def test_corrupt_cache_file_is_ignored_and_rewritten(manager, project, cache_dir, bat_runs):
    submit(manager, project / "scene.blend")
    (entry,) = (cache_dir / DIRNAME).glob("*.json")
    entry.write_text('{"version": 1, "key": ')
    result = submit(manager, project / "scene.blend")
    assert len(bat_runs) == 2
    assert set(checkout_of(manager, result)) == SCENE_FILES
    assert json.loads(entry.read_text())["version"] == FORMAT_VERSION
    submit(manager, project / "scene.blend")
    assert len(bat_runs) == 2


def test_malformed_cache_entry_is_ignored(manager, project, cache_dir, bat_runs):
    submit(manager, project / "scene.blend")
    (entry,) = (cache_dir / DIRNAME).glob("*.json")
    data = json.loads(entry.read_text())
    data["dirs"] = ["not", "a", "dict"]
    entry.write_text(json.dumps(data))
    result = submit(manager, project / "scene.blend")
    assert len(bat_runs) == 2
    assert set(checkout_of(manager, result)) == SCENE_FILES


def test_concurrent_submits_leave_one_valid_entry(manager, project, cache_dir, bat_runs):
    results, errors = [], []

    def one(i):
        try:
            results.append(submit(manager, project / "scene.blend", checkout_path=f"c/{i}"))
        except Exception as ex:  # reported below
            errors.append(ex)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert [set(checkout_of(manager, r)) for r in results] == [SCENE_FILES] * 4
    assert len(list((cache_dir / DIRNAME).glob("*.json"))) == 1
    assert not list((cache_dir / DIRNAME).glob(".*"))  # no temp files left
    runs = len(bat_runs)
    submit(manager, project / "scene.blend")
    assert len(bat_runs) == runs
