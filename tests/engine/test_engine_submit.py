"""Submissions against the real manager on loopback: real BAT, real blend files (shared
ones and projects generated with Blender), real HTTP, real checkouts."""

import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from bpy_scripts import PROJECT_BASE
from flamenco_shaman.engine import (
    Submission,
    SubmitCancelled,
    SubmitError,
    SubmitOptions,
    negotiator,
    pipeline,
)
from flamenco_shaman.engine.trace import Tracer

# Run with Blender's Python (bpy) in a subprocess: writes <root>/project/... and
# <root>/outside/logo.png. scene.blend links libs/props.blend (whose material uses
# textures/metal.png), uses textures/wood.png, the sequence seq/frame_000[1-4].png and
# logo.png by absolute path, outside the project.
GENERATE_PROJECT = PROJECT_BASE + r"""

# The scene: links the prop, uses a texture, an image sequence and a file outside.
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
logo = bpy.data.images.load(os.path.join(root, "outside", "logo.png"))
logo.use_fake_user = True
bpy.ops.wm.save_as_mainfile(filepath=scene_path, relative_remap=False)
for backup in (scene_path + "1", os.path.join(proj, "libs", "props.blend1")):
    if os.path.exists(backup):
        os.remove(backup)
"""

PROJECT_FILES = {
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
        [sys.executable, "-c", GENERATE_PROJECT, str(root)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return root


@pytest.fixture
def world(generated, tmp_path):
    """A private copy of the generated project; logo.png stays where scene.blend points."""
    root = tmp_path / "world"
    shutil.copytree(generated / "project", root / "project")
    return root


@pytest.fixture
def logo(generated):
    """The file outside the project, referenced by absolute path (never modified)."""
    return generated / "outside" / "logo.png"


@pytest.fixture
def blends(tmp_path, blendfiles):
    target = tmp_path / "blendfiles"
    shutil.copytree(blendfiles, target)
    return target


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("FLAMENCO_SHAMAN_CACHE_DIR", str(tmp_path / "cache"))


def submit(manager, blend, progress=None, **kwargs):
    opts = SubmitOptions(blendfile=blend, manager_url=manager.url, **kwargs)
    return Submission(opts, progress=progress).run()


def checkout_dir(manager, result):
    return manager.jobs / result.checkout_path


def files_in(directory):
    """Relative posix paths of every file (or symlink to one) below directory."""
    return {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}


def outside_path(logo):
    return "_outside_project/" + logo.as_posix().lstrip("/")


def assert_identical(checkout, sources):
    for pack_path, source in sources.items():
        assert (checkout / pack_path).read_bytes() == source.read_bytes(), pack_path


# --- the shared blend files -------------------------------------------------------


def test_linked_cube_checkout_holds_both_blends_byte_identical(manager, blends):
    result = submit(manager, blends / "linked_cube.blend")
    checkout = checkout_dir(manager, result)
    assert files_in(checkout) == {"linked_cube.blend", "basic_file.blend"}
    assert_identical(
        checkout,
        {n: blends / n for n in ("linked_cube.blend", "basic_file.blend")},
    )
    assert result.farm_blend_path == f"{{jobs}}/{result.checkout_path}/linked_cube.blend"
    assert result.missing_files == []
    assert (result.files_uploaded, result.files_total) == (2, 2)
    assert (
        result.bytes_uploaded
        == result.bytes_total
        == sum((blends / n).stat().st_size for n in ("linked_cube.blend", "basic_file.blend"))
    )


def test_missing_library_is_reported_and_the_rest_checked_out(manager, blends):
    result = submit(manager, blends / "doubly_linked.blend")
    assert [Path(p).name for p in result.missing_files] == ["material_textures.blend"]
    checkout = checkout_dir(manager, result)
    assert files_in(checkout) == {"doubly_linked.blend", "linked_cube.blend", "basic_file.blend"}
    assert_identical(checkout, {n: blends / n for n in files_in(checkout)})


def test_blend_in_subdir_with_project_root_above_it(manager, blends):
    result = submit(manager, blends / "subdir" / "doubly_linked_up.blend", project_root=blends)
    assert result.farm_blend_path.endswith("/subdir/doubly_linked_up.blend")
    checkout = checkout_dir(manager, result)
    expected = {"subdir/doubly_linked_up.blend", "linked_cube.blend", "basic_file.blend"}
    assert files_in(checkout) == expected
    assert_identical(checkout, {p: blends / p for p in expected})


def test_image_sequence_frames_are_all_checked_out(manager, blends):
    result = submit(manager, blends / "image_sequencer.blend")
    checkout = checkout_dir(manager, result)
    frames = {f"imgseq/{n:06d}.png" for n in range(210, 215)}
    assert files_in(checkout) == {"image_sequencer.blend", *frames}
    assert_identical(checkout, {p: blends / p for p in files_in(checkout)})


def test_udim_tiles_are_all_checked_out(manager, blends):
    result = submit(manager, blends / "udim" / "v01_UDIM_BAT_debugging.blend")
    checkout = checkout_dir(manager, result)
    tiles = {f"cube_UDIM.color.{t}.png" for t in (1001, 1002, 1003)}
    assert files_in(checkout) == {"v01_UDIM_BAT_debugging.blend", *tiles}
    assert_identical(checkout, {p: blends / "udim" / p for p in files_in(checkout)})


def test_non_ascii_blend_name_is_checked_out(manager, blends):
    result = submit(manager, blends / "basic_file_ñønæščii.blend")
    assert files_in(checkout_dir(manager, result)) == {"basic_file_ñønæščii.blend"}


# --- generated projects ---------------------------------------------------------------


def test_every_traced_file_is_in_the_checkout_byte_identical(manager, world, logo):
    project = world / "project"
    result = submit(manager, project / "scene.blend")
    checkout = checkout_dir(manager, result)
    assert files_in(checkout) == PROJECT_FILES | {outside_path(logo)}
    assert_identical(checkout, {p: project / p for p in PROJECT_FILES - {"scene.blend"}})
    assert_identical(checkout, {outside_path(logo): logo})
    assert result.missing_files == []


def test_blend_pointing_outside_the_project_is_rewritten_to_its_packed_copy(manager, world):
    result = submit(manager, world / "project" / "scene.blend")
    checkout = checkout_dir(manager, result)
    # Tracing the checked-out scene finds every file inside the checkout, none missing.
    found = []
    with Tracer(checkout / "scene.blend", checkout) as tracer:
        tracer.run(found.append)
    assert tracer.missing_files == []
    assert {f.pack_path for f in found} == files_in(checkout)
    assert not any(f.temporary for f in found if f.pack_path != "scene.blend")


def test_relative_only_leaves_out_absolute_references(manager, world):
    result = submit(manager, world / "project" / "scene.blend", relative_only=True)
    checkout = checkout_dir(manager, result)
    assert files_in(checkout) == PROJECT_FILES
    assert_identical(checkout, {"scene.blend": world / "project" / "scene.blend"})


def test_excluded_files_stay_behind(manager, world):
    result = submit(manager, world / "project" / "scene.blend", exclude=["*/seq/*"])
    assert not any(p.startswith("seq/") for p in files_in(checkout_dir(manager, result)))


def test_resubmitting_uploads_nothing(manager, world):
    blend = world / "project" / "scene.blend"
    first = submit(manager, blend)
    second = submit(manager, blend)
    assert first.files_uploaded == first.files_total == len(PROJECT_FILES) + 1
    assert (second.files_uploaded, second.bytes_uploaded) == (0, 0)
    assert second.checkout_path != first.checkout_path
    assert files_in(checkout_dir(manager, second)) == files_in(checkout_dir(manager, first))


def test_changing_one_texture_uploads_exactly_that_file(manager, world):
    blend = world / "project" / "scene.blend"
    submit(manager, blend)
    wood = world / "project" / "textures" / "wood.png"
    wood.write_bytes(wood.read_bytes() + b"retouched")
    result = submit(manager, blend)
    assert (result.files_uploaded, result.bytes_uploaded) == (1, wood.stat().st_size)
    assert (checkout_dir(manager, result) / "textures/wood.png").read_bytes() == wood.read_bytes()


def test_second_submit_takes_checksums_from_the_cache(manager, world):
    blend = world / "project" / "scene.blend"
    first = submit(manager, blend)
    second = submit(manager, blend)
    assert first.files_hashed == len(PROJECT_FILES) + 1
    assert second.files_hashed == 1  # only the rewritten scene.blend, a new temp file


def test_touched_file_is_hashed_again(manager, world):
    blend = world / "project" / "scene.blend"
    submit(manager, blend)
    (world / "project" / "textures" / "wood.png").touch()
    assert submit(manager, blend).files_hashed == 2


def test_two_overlapping_submissions_at_once_store_each_blob_once(manager, world, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(world, other)
    (other / "project" / "textures" / "wood.png").write_bytes(b"a different wood")
    results, errors = [], []

    def run(blend):
        try:
            results.append(submit(manager, blend, uploads=2))
        except Exception as ex:
            errors.append(ex)

    threads = [
        threading.Thread(target=run, args=(root / "project" / "scene.blend",))
        for root in (world, other)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert len(results) == 2
    for result in results:
        assert len(files_in(checkout_dir(manager, result))) == len(PROJECT_FILES) + 1
    blobs = list((manager.store / "stored").rglob("*.blob"))
    identities = set()
    for result in results:
        for path in files_in(checkout_dir(manager, result)):
            identities.add((checkout_dir(manager, result) / path).resolve())
    assert len(blobs) == len(identities)
    assert sum(r.files_uploaded for r in results) == len(blobs)


def test_file_changed_after_hashing_is_sent_with_its_new_content(manager, world, monkeypatch):
    wood = world / "project" / "textures" / "wood.png"
    original = negotiator.Negotiator._negotiate_streaming
    edited = []

    def edit_then_negotiate(self, blobs):
        if not edited:  # hashed already, not uploaded yet
            edited.append(True)
            wood.write_bytes(wood.read_bytes() + b"late edit")
        return original(self, blobs)

    monkeypatch.setattr(negotiator.Negotiator, "_negotiate_streaming", edit_then_negotiate)
    result = submit(manager, world / "project" / "scene.blend")
    checked_out = (checkout_dir(manager, result) / "textures/wood.png").read_bytes()
    assert checked_out.endswith(b"late edit")
    assert checked_out == wood.read_bytes()


def test_progress_goes_through_the_phases_in_order(manager, world):
    seen = []
    result = submit(manager, world / "project" / "scene.blend", progress=seen.append)
    phases = [p.phase for p in seen]
    order = ["tracing", "hashing", "uploading", "checkout", "done"]
    assert [p for p in order if p in phases] == order
    assert phases == sorted(phases, key=order.index)
    last = seen[-1]
    assert last.phase == "done"
    assert (last.files_done, last.files_total) == (result.files_total, result.files_total)
    assert last.bytes_done == last.bytes_total == result.bytes_total
    assert all(p.bytes_done <= p.bytes_total for p in seen)


def test_taken_checkout_path_gets_a_suffix(manager, blends):
    first = submit(manager, blends / "basic_file.blend", checkout_path="shots/010")
    second = submit(manager, blends / "basic_file.blend", checkout_path="shots/010")
    assert first.checkout_path == "shots/010"
    assert second.checkout_path.startswith("shots/010-")
    assert second.farm_blend_path == f"{{jobs}}/{second.checkout_path}/basic_file.blend"


def test_invalid_checkout_path_is_refused_before_any_work(manager, blends):
    with pytest.raises(SubmitError, match="invalid checkout path"):
        submit(manager, blends / "basic_file.blend", checkout_path="../escape")
    assert not manager.jobs.exists() or not any(manager.jobs.iterdir())


def test_rewritten_blends_leave_no_temp_files(manager, world, tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    submit(manager, world / "project" / "scene.blend")
    assert list(scratch.iterdir()) == []


def test_cancel_before_run_creates_no_checkout(manager, blends):
    opts = SubmitOptions(blendfile=blends / "linked_cube.blend", manager_url=manager.url)
    sub = Submission(opts)
    sub.cancel()
    with pytest.raises(SubmitCancelled):
        sub.run()
    assert not manager.jobs.exists() or not any(manager.jobs.iterdir())


# --- manager settings ---------------------------------------------------------------


def test_token_protected_manager_accepts_the_right_token(manager_factory, blends):
    manager = manager_factory(token="s3cret")
    result = submit(manager, blends / "linked_cube.blend", token="s3cret")
    assert files_in(checkout_dir(manager, result)) == {"linked_cube.blend", "basic_file.blend"}


def test_token_protected_manager_refuses_a_missing_token(manager_factory, blends):
    manager = manager_factory(token="s3cret")
    with pytest.raises(SubmitError, match="token"):
        submit(manager, blends / "linked_cube.blend")


def test_manager_with_shaman_disabled_is_a_clear_error(manager_factory, blends):
    manager = manager_factory(shaman_enabled=False)
    with pytest.raises(SubmitError, match="Shaman is disabled"):
        submit(manager, blends / "linked_cube.blend")


def test_pack_blend_name_names_the_blend_on_the_farm(manager, blends):
    result = submit(manager, blends / "linked_cube.blend", pack_blend_name="shot_010.blend")
    assert result.farm_blend_path.endswith("/shot_010.blend")
    checkout = checkout_dir(manager, result)
    assert files_in(checkout) == {"shot_010.blend", "basic_file.blend"}
    assert (checkout / "shot_010.blend").read_bytes() == (blends / "linked_cube.blend").read_bytes()


def test_empty_file_is_checked_out(manager, world):
    frame = world / "project" / "seq" / "frame_0004.png"
    frame.write_bytes(b"")
    result = submit(manager, world / "project" / "scene.blend")
    assert (checkout_dir(manager, result) / "seq/frame_0004.png").read_bytes() == b""


def test_identical_files_are_uploaded_once(manager, world):
    textures = world / "project" / "textures"
    (textures / "metal.png").write_bytes((textures / "wood.png").read_bytes())
    result = submit(manager, world / "project" / "scene.blend")
    assert result.files_uploaded == result.files_total - 1
    checkout = checkout_dir(manager, result)
    assert (checkout / "textures/metal.png").read_bytes() == (textures / "wood.png").read_bytes()


def test_file_vanished_before_hashing_is_a_clear_error(manager, world, monkeypatch):
    original = pipeline.Pipeline.add

    def delete_then_add(self, traced):
        if traced.pack_path == "textures/wood.png":
            traced.source.unlink()
        original(self, traced)

    monkeypatch.setattr(pipeline.Pipeline, "add", delete_then_add)
    with pytest.raises(SubmitError, match=r"vanished.*wood\.png"):
        submit(manager, world / "project" / "scene.blend")
    assert not manager.jobs.exists() or not any(manager.jobs.iterdir())
