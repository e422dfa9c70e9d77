"""Checkouts on the core: relative links, all-or-nothing, nothing outside jobs/."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from checkout_helpers import put

from manager_plugin.checkout import CheckoutBuilder
from manager_plugin.errors import InvalidPath, MissingFiles, NoFreeCheckoutDir, StorageFull
from manager_plugin.locking import StorageLock
from manager_plugin.models import FileSpec
from manager_plugin.store import FileStore

pytestmark = pytest.mark.usefixtures("checkout_modes")


def builder(store: FileStore, **kwargs: bool) -> CheckoutBuilder:
    return CheckoutBuilder(
        store, store.storage_root / "jobs", StorageLock(store.root / ".lock"), **kwargs
    )


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


def test_links_are_relative_and_resolve_to_the_blobs(store):
    files = [put(store, b"blend", "scene.blend"), put(store, b"tex", "a/b/c/tex.png")]
    used = builder(store).create("proj/job", files)
    root = store.storage_root / "jobs" / used
    assert os.readlink(root / "scene.blend") == (
        f"../../../file-store/stored/{files[0].sha[:2]}/{files[0].sha[2:]}/5.blob"
    )
    assert (root / "a/b/c/tex.png").read_bytes() == b"tex"


def test_relative_links_survive_moving_the_whole_storage(store, tmp_path):
    files = [put(store, b"blend", "deep/er/scene.blend")]
    builder(store).create("proj/job", files)
    moved = tmp_path / "mounted-elsewhere"
    store.storage_root.rename(moved)
    assert (moved / "jobs/proj/job/deep/er/scene.blend").read_bytes() == b"blend"


def test_absolute_links_when_configured(store):
    files = [put(store, b"blend", "scene.blend")]
    builder(store, absolute_symlinks=True).create("job", files)
    target = os.readlink(store.storage_root / "jobs/job/scene.blend")
    assert target == str(store.blob_path(files[0].sha, 5))


def test_checkout_touches_each_blob(store):
    spec = put(store, b"blend", "scene.blend")
    blob = store.blob_path(spec.sha, spec.size)
    os.utime(blob, (1000, 1000))
    builder(store).create("job", [spec])
    assert blob.stat().st_mtime > 1000


def test_existing_path_gets_suffix(store):
    spec = put(store, b"x", "x")
    b = builder(store)
    assert b.create("job", [spec]) == "job"
    second = b.create("job", [spec])
    assert second.startswith("job-") and len(second) == 8


def test_existing_empty_directory_is_not_replaced(store):
    (store.storage_root / "jobs/job").mkdir(parents=True)
    spec = put(store, b"x", "x")
    assert builder(store).create("job", [spec]) != "job"
    assert list((store.storage_root / "jobs/job").iterdir()) == []


def test_missing_blob_creates_nothing_and_names_the_file(store):
    present = put(store, b"here", "here.txt")
    absent = FileSpec("f" * 64, 3, "sub/missing.txt")
    with pytest.raises(MissingFiles, match="sub/missing.txt") as info:
        builder(store).create("proj/deep/job", [present, absent])
    assert [spec.path for spec in info.value.files] == ["sub/missing.txt"]
    assert tree(store.storage_root / "jobs") == set()


def test_file_that_is_also_a_directory_is_rejected(store):
    files = [put(store, b"a", "a"), put(store, b"b", "a/b")]
    with pytest.raises(InvalidPath, match="both a file and a directory"):
        builder(store).create("job", files)
    assert tree(store.storage_root / "jobs") == set()


def test_parent_that_is_a_file_is_rejected(store):
    jobs = store.storage_root / "jobs"
    jobs.mkdir()
    (jobs / "proj").write_text("not a dir")
    with pytest.raises(InvalidPath, match="not a directory"):
        builder(store).create("proj/job", [put(store, b"x", "x")])


def test_symlinked_parent_is_rejected_even_when_it_points_inside_jobs(store):
    jobs = store.storage_root / "jobs"
    (jobs / "real").mkdir(parents=True)
    (jobs / "alias").symlink_to(jobs / "real")
    with pytest.raises(InvalidPath, match="symlink"):
        builder(store).create("alias/job", [put(store, b"x", "x")])
    assert tree(jobs / "real") == set()


def test_failure_midway_removes_the_tree_and_created_parents(store, monkeypatch):
    files = [put(store, str(i).encode(), f"d{i}/f") for i in range(20)]
    real_symlink = os.symlink
    calls = 0

    def failing_symlink(src: str, dst: str) -> None:
        nonlocal calls
        calls += 1
        if calls == 10:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_symlink(src, dst)

    monkeypatch.setattr(os, "symlink", failing_symlink)
    with pytest.raises(StorageFull):
        builder(store).create("new/parents/job", files)
    assert tree(store.storage_root / "jobs") == set()


def test_parents_that_existed_before_are_kept_on_failure(store):
    (store.storage_root / "jobs/proj").mkdir(parents=True)
    with pytest.raises(MissingFiles):
        builder(store).create("proj/sub/job", [FileSpec("a" * 64, 1, "x")])
    assert tree(store.storage_root / "jobs") == {"proj"}


def test_all_ten_suffixes_taken_is_no_free_dir(store, monkeypatch):
    import manager_plugin.checkout as checkout_module

    spec = put(store, b"x", "x")
    b = builder(store)
    b.create("job", [spec])
    monkeypatch.setattr(checkout_module.secrets, "choice", lambda _alphabet: "q")
    b.create("job", [spec])
    with pytest.raises(NoFreeCheckoutDir):
        b.create("job", [spec])
    assert sorted(tree(store.storage_root / "jobs")) == ["job", "job-qqqq", "job-qqqq/x", "job/x"]


def test_empty_checkout_makes_an_empty_directory(store):
    assert builder(store).create("empty", []) == "empty"
    assert (store.storage_root / "jobs/empty").is_dir()


def test_unicode_and_spaces_in_paths(store):
    spec = put(store, b"v", "ránið/lélegt vélmenni.blend")
    used = builder(store).create("with spaces in it/ránið", [spec])
    assert (store.storage_root / "jobs" / used / "ránið/lélegt vélmenni.blend").read_bytes() == b"v"


@pytest.mark.parametrize(
    ("checkout_path", "file_path"),
    [(".shaman-tmp-abc", "x"), ("proj/.shaman-tmp-1-job", "x"), ("job", "d/.shaman-tmp-x/f")],
)
def test_names_reserved_for_checkout_temp_dirs_are_refused(store, checkout_path, file_path):
    # GC removes directories with this prefix, so a checkout must never contain one.
    with pytest.raises(InvalidPath, match="reserved"):
        builder(store).create(checkout_path, [put(store, b"x", file_path)])
    assert tree(store.storage_root / "jobs") == set()
