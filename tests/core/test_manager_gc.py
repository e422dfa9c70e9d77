"""Garbage collection, on the core and through `shaman-manager gc`."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from helpers import put_blob

from manager_plugin.checkout import CheckoutBuilder
from manager_plugin.gc import GarbageCollector
from manager_plugin.locking import StorageLock
from manager_plugin.models import FileSpec
from manager_plugin.store import FileStore

OLD = time.time() - 40 * 24 * 3600  # older than Flamenco's default maxAge of 31 days


def collector(storage: Path, **kwargs: object) -> tuple[FileStore, GarbageCollector]:
    store = FileStore(storage)
    store.ensure_dirs()
    (storage / "jobs").mkdir(exist_ok=True)
    kwargs.setdefault("max_age", timedelta(hours=744))
    gc = GarbageCollector(store, storage / "jobs", StorageLock(store.root / ".lock"), **kwargs)
    return store, gc


def test_unlinked_old_blob_is_deleted_and_linked_one_kept(tmp_path):
    store, gc = collector(tmp_path)
    kept = put_blob(store, b"linked", mtime=OLD)
    gone = put_blob(store, b"unlinked", mtime=OLD)
    link = tmp_path / "jobs/job/scene.blend"
    link.parent.mkdir(parents=True)
    link.symlink_to(store.blob_path(kept.sha, kept.size))

    stats = gc.sweep()

    assert stats.files_deleted == 1
    assert stats.bytes_deleted == len(b"unlinked")
    assert stats.deleted == [str(store.blob_path(gone.sha, gone.size))]
    assert store.blob_path(kept.sha, kept.size).exists()
    assert not store.blob_path(gone.sha, gone.size).exists()
    assert stats.blobs_checked == 2 and stats.links_seen == 1


def test_young_unlinked_blob_is_kept(tmp_path):
    store, gc = collector(tmp_path)
    young = put_blob(store, b"young", mtime=time.time() - 3600)
    assert gc.sweep().files_deleted == 0
    assert store.blob_path(young.sha, young.size).exists()


def test_dry_run_reports_but_deletes_nothing(tmp_path):
    store, gc = collector(tmp_path)
    gone = put_blob(store, b"unlinked", mtime=OLD)
    stats = gc.sweep(dry_run=True)
    assert stats.deleted == [str(store.blob_path(gone.sha, gone.size))]
    assert store.blob_path(gone.sha, gone.size).exists()


def test_relative_absolute_and_extra_path_links_all_count(tmp_path):
    extra = tmp_path / "elsewhere"
    extra.mkdir()
    store, gc = collector(tmp_path / "storage", extra_checkout_paths=[extra])
    rel, absolute, in_extra = (put_blob(store, d, mtime=OLD) for d in (b"rel", b"abs", b"extra"))
    jobs = tmp_path / "storage/jobs/job"
    jobs.mkdir(parents=True)
    rel_target = os.path.relpath(store.blob_path(rel.sha, rel.size), jobs)
    (jobs / "rel").symlink_to(rel_target)
    (jobs / "abs").symlink_to(store.blob_path(absolute.sha, absolute.size))
    (extra / "x").symlink_to(store.blob_path(in_extra.sha, in_extra.size))
    assert gc.sweep().files_deleted == 0


def test_links_through_another_mount_path_count_by_inode(tmp_path):
    store, gc = collector(tmp_path / "storage")
    blob = put_blob(store, b"mounted elsewhere", mtime=OLD)
    alias = tmp_path / "alias-of-storage"
    alias.symlink_to(tmp_path / "storage")  # like a worker mounting the storage elsewhere
    job = tmp_path / "storage/jobs/job"
    job.mkdir(parents=True)
    (job / "f").symlink_to(alias / "file-store/stored" / blob.sha[:2] / blob.sha[2:] / "17.blob")
    assert gc.sweep().files_deleted == 0


def test_dangling_links_are_skipped(tmp_path):
    store, gc = collector(tmp_path)
    (tmp_path / "jobs/job").mkdir(parents=True)
    (tmp_path / "jobs/job/dangling").symlink_to(tmp_path / "nowhere")
    put_blob(store, b"x", mtime=OLD)
    stats = gc.sweep()
    assert stats.links_seen == 1 and stats.files_deleted == 1


def test_blob_touched_after_the_sweep_started_survives(tmp_path, monkeypatch):
    store, gc = collector(tmp_path, max_age=timedelta(0))
    blob = put_blob(store, b"touched late", mtime=OLD)
    original = gc._find_candidates

    def touch_after_walk(*args: object):
        result = original(*args)
        store.touch(blob.sha, blob.size)  # a requirements request or checkout arrives now
        return result

    monkeypatch.setattr(gc, "_find_candidates", touch_after_walk)
    assert gc.sweep().files_deleted == 0
    assert store.blob_path(blob.sha, blob.size).exists()


def test_checkout_during_a_sweep_never_gets_a_dangling_link(tmp_path, monkeypatch):
    store, gc = collector(tmp_path, max_age=timedelta(0))
    blob = put_blob(store, b"wanted by a new checkout", mtime=OLD)
    builder = CheckoutBuilder(store, tmp_path / "jobs", gc.lock)
    original = gc._find_candidates

    def checkout_after_walk(*args: object):
        result = original(*args)
        builder.create("job", [FileSpec(blob.sha, blob.size, "f.blend")])
        return result

    monkeypatch.setattr(gc, "_find_candidates", checkout_after_walk)
    gc.sweep()
    assert (tmp_path / "jobs/job/f.blend").read_bytes() == b"wanted by a new checkout"


def test_stale_temps_and_empty_dirs_are_removed(tmp_path):
    store, gc = collector(tmp_path)
    put_blob(store, b"old and unlinked", mtime=OLD)
    stale_dir = store.uploading_dir / "ab" / ("c" * 62)
    stale_dir.mkdir(parents=True)
    stale = stale_dir / "5-dead.tmp"
    stale.write_bytes(b"12345")
    os.utime(stale, (OLD, OLD))
    live = stale_dir / "5-live.tmp"
    live.write_bytes(b"12")
    os.utime(live, (OLD, OLD))
    with open(live, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # an upload in progress holds its temp's lock
        stats = gc.sweep()
    assert not stale.exists()
    assert live.exists()
    assert stats.temps_removed == 1
    assert list(store.stored_dir.iterdir()) == []  # blob dir and its parent are gone
    assert stats.dirs_removed >= 2


def test_young_temp_without_lock_is_kept(tmp_path):
    store, gc = collector(tmp_path)
    young = store.uploading_dir / "ab" / ("c" * 62) / "5-new.tmp"
    young.parent.mkdir(parents=True)
    young.write_bytes(b"1")
    gc.sweep()
    assert young.exists()


def test_checkout_temp_dirs_left_by_a_crash_are_removed(tmp_path):
    store, gc = collector(tmp_path)
    stale = tmp_path / "jobs/proj/.shaman-tmp-abc-job"
    (stale / "sub").mkdir(parents=True)
    os.utime(stale, (OLD, OLD))
    gc.sweep()
    assert not stale.exists()
    assert (tmp_path / "jobs/proj").is_dir()


def test_sweep_logs_one_line_of_stats(tmp_path, caplog):
    _store, gc = collector(tmp_path)
    with caplog.at_level("INFO", logger="manager_plugin.gc"):
        gc.sweep()
    lines = [r.getMessage() for r in caplog.records if r.name == "manager_plugin.gc"]
    assert len(lines) == 1
    assert "blobs checked=0" in lines[0] and "links seen=0" in lines[0]


def test_server_runs_gc_periodically(manager_factory):
    manager = manager_factory(gc_period=0.2, gc_max_age=0)
    store = manager.service.store
    blob = put_blob(store, b"collect me", mtime=OLD)
    deadline = time.monotonic() + 10
    while store.blob_path(blob.sha, blob.size).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not store.blob_path(blob.sha, blob.size).exists()


def run_gc(storage: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "manager_plugin", "gc", "--storage", str(storage), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_gc_command_dry_run_names_only_the_unlinked_old_blob_then_deletes_it(tmp_path):
    store, _gc = collector(tmp_path)
    linked = put_blob(store, b"linked and old", mtime=OLD)
    unlinked = put_blob(store, b"unlinked and old", mtime=OLD)
    (tmp_path / "jobs/job").mkdir(parents=True)
    (tmp_path / "jobs/job/f").symlink_to(store.blob_path(linked.sha, linked.size))
    unlinked_path = str(store.blob_path(unlinked.sha, unlinked.size))

    dry = run_gc(tmp_path, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert unlinked_path in dry.stdout
    assert linked.sha[2:] not in dry.stdout
    assert "would delete 1 blobs" in dry.stdout
    assert Path(unlinked_path).exists()

    real = run_gc(tmp_path)
    assert real.returncode == 0, real.stderr
    assert f"deleted {unlinked_path}" in real.stdout
    assert not Path(unlinked_path).exists()
    assert store.blob_path(linked.sha, linked.size).exists()


def test_temp_named_dirs_in_extra_checkout_paths_are_not_ours_to_remove(tmp_path):
    extra = tmp_path / "elsewhere"
    foreign = extra / ".shaman-tmp-someone-elses"
    foreign.mkdir(parents=True)
    os.utime(foreign, (OLD, OLD))
    _store, gc = collector(tmp_path / "storage", extra_checkout_paths=[extra])
    gc.sweep()
    assert foreign.is_dir()


def _blob_dir_rel(blob: FileSpec) -> str:
    return f"{blob.sha[:2]}/{blob.sha[2:]}"


def test_links_resolved_in_text_still_reach_blobs_behind_symlinked_store_dirs(tmp_path):
    """Most links are resolved without following them; where text and kernel could
    disagree (a symlinked dir or a symlink named like a blob inside stored/, or `..`
    after a name), the link is followed, and the blob it really reaches is kept."""
    store, gc = collector(tmp_path / "storage")
    behind_dir, behind_name, plain = (
        put_blob(store, d, mtime=OLD) for d in (b"dir", b"name", b"dots")
    )
    stored = store.stored_dir
    # stored/zz is a symlink to the real two-letter dir of `behind_dir`.
    alias_top = stored / "zz"
    alias_top.symlink_to(stored / behind_dir.sha[:2])
    # A symlink named like a blob, pointing at the real blob `behind_name`.
    fake = stored / "yy" / ("0" * 62)
    fake.mkdir(parents=True)
    (fake / "4.blob").symlink_to(store.blob_path(behind_name.sha, behind_name.size))
    job = tmp_path / "storage/jobs/job/deeper"
    job.mkdir(parents=True)
    up = "../../../file-store/stored"
    (job / "a").symlink_to(f"{up}/zz/{behind_dir.sha[2:]}/{behind_dir.size}.blob")
    (job / "b").symlink_to(f"{up}/yy/{'0' * 62}/4.blob")
    (job / "c").symlink_to(f"{up}/{plain.sha[:2]}/../{_blob_dir_rel(plain)}/{plain.size}.blob")
    for name in "abc":
        assert (job / name).exists()

    stats = gc.sweep()

    assert stats.links_seen == 3
    for blob in (behind_dir, behind_name, plain):
        assert store.blob_path(blob.sha, blob.size).exists()


def test_relative_links_count_when_the_storage_path_goes_through_a_symlink(tmp_path):
    real = tmp_path / "real-storage"
    real.mkdir()
    (tmp_path / "storage").symlink_to(real)
    store, gc = collector(tmp_path / "storage")
    kept, gone = put_blob(store, b"kept", mtime=OLD), put_blob(store, b"gone", mtime=OLD)
    job = tmp_path / "storage/jobs/job"
    job.mkdir(parents=True)
    (job / "f").symlink_to(f"../../file-store/stored/{_blob_dir_rel(kept)}/{kept.size}.blob")

    stats = gc.sweep()

    # Paths are reported as configured, not as the physical path.
    assert stats.deleted == [str(store.blob_path(gone.sha, gone.size))]
    assert store.blob_path(kept.sha, kept.size).exists()


def test_a_link_climbing_above_the_filesystem_root_is_followed(tmp_path):
    store, gc = collector(tmp_path)
    blob = put_blob(store, b"far up", mtime=OLD)
    job = tmp_path / "jobs/job"
    job.mkdir(parents=True)
    ups = "../" * (len(job.parts) + 3)  # more than the depth: the kernel stops at /
    (job / "f").symlink_to(f"{ups}{str(store.blob_path(blob.sha, blob.size)).lstrip('/')}")
    assert (job / "f").exists()
    assert gc.sweep().files_deleted == 0
