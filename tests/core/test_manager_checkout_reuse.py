"""Link reuse: a checkout next to an earlier one hard-links that one's symlink inodes.

The result must be indistinguishable from fresh symlinks (same target strings, same
resolution), whatever state the earlier checkout is in.
"""

from __future__ import annotations

import os
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from checkout_helpers import put

from manager_plugin.checkout import CheckoutBuilder
from manager_plugin.gc import GarbageCollector
from manager_plugin.locking import StorageLock
from manager_plugin.models import FileSpec
from manager_plugin.store import FileStore

pytestmark = pytest.mark.usefixtures("checkout_modes")


def project(store: FileStore, tag: bytes = b"") -> list[FileSpec]:
    files = [put(store, b"blend" + tag, "scene.blend")]
    files += [put(store, b"tex %d" % i, f"textures/t{i}.png") for i in range(20)]
    files += [put(store, b"deep", "a/b/c/deep.exr")]
    return files


def links(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): os.readlink(p) for p in sorted(root.rglob("*")) if p.is_symlink()
    }


def fresh_links(tmp_path: Path, store: FileStore, files: list[FileSpec], where: str) -> dict:
    """What a builder without reuse makes for the same request at the same depth."""
    plain = CheckoutBuilder(store, store.storage_root / "jobs", StorageLock(store.root / ".lock"))
    plain.reuse_links = False
    used = plain.create(where, files)
    root = store.storage_root / "jobs" / used
    made = links(root)
    shutil.rmtree(root)
    return made


@pytest.mark.parametrize("absolute", [False, True])
def test_resubmission_reuses_every_link_and_matches_fresh_symlinks(store, tmp_path, absolute):
    files = project(store)
    builder = CheckoutBuilder(
        store,
        store.storage_root / "jobs",
        StorageLock(store.root / ".lock"),
        absolute_symlinks=absolute,
    )
    builder.create("proj/job-1", files)
    assert builder.links_reused == 0
    builder.create("proj/job-2", files)
    assert builder.links_reused == len(files)
    jobs = store.storage_root / "jobs"
    first, second = jobs / "proj/job-1", jobs / "proj/job-2"
    for spec in files:
        a, b = first / spec.path, second / spec.path
        assert b.is_symlink() and os.lstat(a).st_ino == os.lstat(b).st_ino
        assert os.lstat(b).st_nlink == 2
        assert b.read_bytes() == store.blob_path(spec.sha, spec.size).read_bytes()
    reference = CheckoutBuilder(
        store, jobs, StorageLock(store.root / ".lock"), absolute_symlinks=absolute
    )
    reference.reuse_links = False
    reference.create("proj/job-3", files)
    assert links(second) == links(jobs / "proj/job-3")
    # Deleting the earlier job's checkout (as Flamenco does with a job) leaves this one whole.
    shutil.rmtree(first)
    assert all((second / s.path).read_bytes() for s in files)
    assert os.lstat(second / "scene.blend").st_nlink == 1


def test_changed_and_new_files_get_their_own_links(store, tmp_path):
    builder = CheckoutBuilder(store, store.storage_root / "jobs", StorageLock(store.root / ".lock"))
    builder.create("proj/job-1", project(store))
    changed = project(store, tag=b" v2")  # scene.blend has new content
    changed.append(put(store, b"new", "textures/new.png"))
    used = builder.create("proj/job-2", changed)
    assert builder.links_reused == len(changed) - 2
    root = store.storage_root / "jobs" / used
    assert (root / "scene.blend").read_bytes() == b"blend v2"
    assert (root / "textures/new.png").read_bytes() == b"new"
    assert os.lstat(root / "scene.blend").st_nlink == 1
    assert (store.storage_root / "jobs/proj/job-1/scene.blend").read_bytes() == b"blend"


def test_a_tampered_donor_never_leaks_into_the_new_checkout(store, tmp_path):
    files = project(store)
    builder = CheckoutBuilder(store, store.storage_root / "jobs", StorageLock(store.root / ".lock"))
    builder.create("proj/job-1", files)
    donor = store.storage_root / "jobs/proj/job-1"
    (donor / "scene.blend").unlink()
    (donor / "scene.blend").write_bytes(b"not a link")  # a regular file in its place
    os.chmod(donor / "textures", 0o755)
    (donor / "textures/t0.png").unlink()
    (donor / "textures/t0.png").symlink_to("/etc/passwd")  # a link elsewhere
    shutil.rmtree(donor / "a")
    (donor / "a").symlink_to(tmp_path)  # a directory swapped for a symlink
    used = builder.create("proj/job-2", files)
    root = store.storage_root / "jobs" / used
    assert links(root) == fresh_links(tmp_path, store, files, "proj/job-x")
    assert builder.links_reused == len(files) - 3
    for spec in files:
        assert (root / spec.path).read_bytes() == store.blob_path(spec.sha, spec.size).read_bytes()


def test_donor_is_found_again_after_a_restart_and_only_at_the_same_depth(store, tmp_path):
    files = project(store)
    jobs = store.storage_root / "jobs"
    CheckoutBuilder(store, jobs, StorageLock(store.root / ".lock")).create("proj/job-1", files)
    restarted = CheckoutBuilder(store, jobs, StorageLock(store.root / ".lock"))
    restarted.create("proj/job-2", files)
    assert restarted.links_reused == len(files)
    elsewhere = CheckoutBuilder(store, jobs, StorageLock(store.root / ".lock"))
    used = elsewhere.create("other/deeper/job", files)  # no sibling checkout there
    assert elsewhere.links_reused == 0
    assert links(jobs / used) == fresh_links(tmp_path, store, files, "other/deeper/job-x")


def test_gc_keeps_blobs_that_only_a_reused_link_still_points_at(store, tmp_path):
    files = project(store)
    jobs = store.storage_root / "jobs"
    builder = CheckoutBuilder(store, jobs, StorageLock(store.root / ".lock"))
    builder.create("proj/job-1", files)
    builder.create("proj/job-2", files)
    shutil.rmtree(jobs / "proj/job-1")
    for spec in files:
        os.utime(store.blob_path(spec.sha, spec.size), (1, 1))  # long unused
    GarbageCollector(store, jobs, StorageLock(store.root / ".lock"), max_age=timedelta(0)).sweep()
    for spec in files:
        assert store.blob_path(spec.sha, spec.size).is_file()
    shutil.rmtree(jobs / "proj/job-2")
    GarbageCollector(store, jobs, StorageLock(store.root / ".lock"), max_age=timedelta(0)).sweep()
    assert not any(store.blob_path(s.sha, s.size).exists() for s in files)
