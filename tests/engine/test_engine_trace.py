"""Tracing with BAT: which files go into the checkout, under which paths."""

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from flamenco_shaman.bat_import import import_bat
from flamenco_shaman.engine import bat_packer
from flamenco_shaman.engine.errors import SubmitCancelled, SubmitError
from flamenco_shaman.engine.trace import Tracer


@pytest.fixture(autouse=True, params=[True, False], ids=["short polls", "BAT's polls"])
def short_polls(request, monkeypatch) -> bool:
    """Every trace test runs with our shorter transfer polls and with BAT's own."""
    monkeypatch.setattr(bat_packer, "SHORT_POLLS", request.param)
    return request.param


def test_short_polls_switch_chooses_whose_queue_loop_runs(short_polls, tmp_path):
    bat = import_bat()
    packer = bat_packer.packer_class(bat)
    fake_packer = SimpleNamespace(_on_file=print, _rewrite_in=str(tmp_path))
    transferer = packer._create_file_transferer(fake_packer)
    bats_own = bat.pack.transfer.FileTransferer
    assert isinstance(transferer, bats_own)
    assert (type(transferer).iter_queue is bats_own.iter_queue) is not short_polls
    assert (type(transferer).join is bats_own.join) is not short_polls


@pytest.fixture(scope="module")
def blends(tmp_path_factory, blendfiles):
    """A private copy of the shared blend files (BAT opens them read-write)."""
    target = tmp_path_factory.mktemp("blends") / "blendfiles"
    shutil.copytree(blendfiles, target, symlinks=True)
    return target


def trace(blend, project=None, **kwargs):
    files = []
    with Tracer(blend, project or blend.parent, **kwargs) as tracer:
        tracer.run(files.append)
        sources = {f.pack_path: f.source for f in files}
        temporary = {f.pack_path for f in files if f.temporary}
        contents = {p: s.read_bytes() for p, s in sources.items() if p in temporary}
    return tracer, sources, temporary, contents


def test_blend_without_dependencies_is_alone_in_the_pack(blends):
    tracer, sources, _, _ = trace(blends / "basic_file.blend")
    assert sources == {"basic_file.blend": blends / "basic_file.blend"}
    assert tracer.blend_pack_path == "basic_file.blend"
    assert tracer.missing_files == []


def test_linked_library_is_traced(blends):
    _, sources, temporary, _ = trace(blends / "linked_cube.blend")
    assert sources == {
        "linked_cube.blend": blends / "linked_cube.blend",
        "basic_file.blend": blends / "basic_file.blend",
    }
    assert not temporary


def test_missing_library_is_reported_not_fatal(blends):
    tracer, sources, _, _ = trace(blends / "doubly_linked.blend")
    assert set(sources) == {"doubly_linked.blend", "linked_cube.blend", "basic_file.blend"}
    assert [Path(p).name for p in tracer.missing_files] == ["material_textures.blend"]


def test_image_sequence_frames_are_all_traced(blends):
    tracer, sources, _, _ = trace(blends / "image_sequencer.blend")
    frames = {p for p in sources if p.startswith("imgseq/")}
    assert frames == {f"imgseq/{n:06d}.png" for n in range(210, 215)}
    assert any("video-tiny.mkv" in p for p in tracer.missing_files)


def test_udim_tiles_are_all_traced(blends):
    _, sources, _, _ = trace(blends / "udim" / "v01_UDIM_BAT_debugging.blend")
    tiles = {p for p in sources if "cube_UDIM.color" in p}
    assert tiles == {f"cube_UDIM.color.{t}.png" for t in (1001, 1002, 1003)}


def test_blend_in_subdir_keeps_its_place_below_the_project_root(blends):
    tracer, sources, temporary, _ = trace(blends / "subdir" / "doubly_linked_up.blend", blends)
    assert tracer.blend_pack_path == "subdir/doubly_linked_up.blend"
    assert set(sources) == {
        "subdir/doubly_linked_up.blend",
        "linked_cube.blend",
        "basic_file.blend",
    }
    assert not temporary


def test_files_outside_the_project_go_to_outside_project_and_blends_are_rewritten(blends):
    tracer, sources, temporary, contents = trace(blends / "subdir" / "doubly_linked_up.blend")
    outside = sorted(p for p in sources if p.startswith("_outside_project/"))
    assert [Path(p).name for p in outside] == ["basic_file.blend", "linked_cube.blend"]
    assert "doubly_linked_up.blend" in temporary
    original = (blends / "subdir" / "doubly_linked_up.blend").read_bytes()
    assert contents["doubly_linked_up.blend"] != original
    assert b"_outside_project" in contents["doubly_linked_up.blend"]


def test_rewritten_blends_are_removed_on_close(blends):
    files = []
    with Tracer(blends / "subdir" / "doubly_linked_up.blend", blends / "subdir") as tracer:
        tracer.run(files.append)
        temp = [f.source for f in files if f.temporary]
        assert temp and all(p.exists() for p in temp)
    assert not any(p.exists() for p in temp)
    assert not temp[0].parent.exists()


def test_exclude_globs_leave_files_out(blends):
    _, sources, _, _ = trace(blends / "image_sequencer.blend", exclude=["*.png"])
    assert set(sources) == {"image_sequencer.blend"}


def test_non_blend_file_is_a_clear_error(tmp_path):
    bogus = tmp_path / "notes.blend"
    bogus.write_text("this is not a blend file\n" * 10)
    with pytest.raises(SubmitError, match="notes.blend"):
        trace(bogus)


def test_truncated_blend_file_is_a_clear_error(blends, tmp_path):
    cut = tmp_path / "cut.blend"
    cut.write_bytes((blends / "linked_cube.blend").read_bytes()[:3000])
    with pytest.raises(SubmitError, match="cut.blend"):
        trace(cut)


def test_missing_blend_file_is_a_clear_error(tmp_path):
    with pytest.raises(SubmitError, match="not found"):
        trace(tmp_path / "nope.blend")


def test_blend_outside_the_project_root_is_a_clear_error(blends, tmp_path):
    with pytest.raises(SubmitError, match="not inside the project"):
        trace(blends / "basic_file.blend", tmp_path)


def test_cancelled_trace_raises_cancelled(blends):
    import threading

    cancel = threading.Event()
    cancel.set()
    with pytest.raises(SubmitCancelled):
        trace(blends / "linked_cube.blend", cancel=cancel)


def test_pack_blend_name_renames_the_blend_in_its_own_folder(blends):
    tracer, sources, _, _ = trace(
        blends / "subdir" / "doubly_linked_up.blend", blends, pack_blend_name="shot.blend"
    )
    assert tracer.blend_pack_path == "subdir/shot.blend"
    assert sources["subdir/shot.blend"] == blends / "subdir" / "doubly_linked_up.blend"
    assert "subdir/doubly_linked_up.blend" not in sources


@pytest.mark.parametrize("name", ["", "a/b.blend", "a\\b.blend", ".."])
def test_pack_blend_name_must_be_a_plain_file_name(blends, name):
    with pytest.raises(SubmitError, match="invalid name"):
        trace(blends / "basic_file.blend", pack_blend_name=name)
