"""The persistent checksum cache: keyed by path, size and mtime; survives concurrent saves."""

import json
import os
import time

import pytest
from flamenco_shaman.engine import cache as cache_mod
from flamenco_shaman.engine.cache import ChecksumCache, default_cache_dir
from flamenco_shaman.engine.errors import SubmitError
from flamenco_shaman.engine.hashing import identify

SHA = "a" * 64


@pytest.fixture
def cache_file(tmp_path):
    return tmp_path / "cache" / "checksums.json"


@pytest.fixture
def asset(tmp_path):
    path = tmp_path / "texture.png"
    path.write_bytes(b"pixels" * 1000)
    return path


def test_cache_dir_can_be_overridden_by_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FLAMENCO_SHAMAN_CACHE_DIR", str(tmp_path / "here"))
    assert default_cache_dir() == tmp_path / "here"


def test_cache_dir_defaults_to_the_user_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("FLAMENCO_SHAMAN_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "flamenco-shaman"


def test_unchanged_file_is_a_cache_hit_after_saving(cache_file, asset):
    cache = ChecksumCache(cache_file)
    first = identify(asset, cache)
    assert not first.from_cache
    cache.save()
    ChecksumCache(cache_file).save()  # nothing new; must not lose the earlier entry
    fresh = ChecksumCache(cache_file)
    second = identify(asset, fresh)
    assert second.from_cache and second.sha == first.sha
    assert fresh.hits == 1


def _hash_and_save(path, cache_file):
    cache = ChecksumCache(cache_file)
    ident = identify(path, cache)
    cache.save()
    return ident


def test_touched_file_is_a_cache_miss(cache_file, asset):
    _hash_and_save(asset, cache_file)
    st = asset.stat()
    os.utime(asset, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert not identify(asset, ChecksumCache(cache_file)).from_cache


def test_file_with_new_size_is_a_cache_miss(cache_file, asset):
    before = _hash_and_save(asset, cache_file)
    st = asset.stat()
    asset.write_bytes(b"more pixels" * 1000)
    os.utime(asset, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime, other size
    after = identify(asset, ChecksumCache(cache_file))
    assert not after.from_cache and after.sha != before.sha


@pytest.mark.parametrize(
    "content", [b"{not json", b"\x00\xff garbage", b'{"version": 1, "entries": [1, 2]}', b"[]"]
)
def test_corrupt_cache_file_is_ignored_and_replaced(cache_file, asset, content):
    cache_file.parent.mkdir(parents=True)
    cache_file.write_bytes(content)
    cache = ChecksumCache(cache_file)
    assert not identify(asset, cache).from_cache
    cache.save()
    assert identify(asset, ChecksumCache(cache_file)).from_cache


def test_malformed_entries_are_dropped(cache_file, asset):
    cache_file.parent.mkdir(parents=True)
    entries = {str(asset): ["size", 1, "sha", 0], "/x": [1, 2, SHA, time.time()]}
    cache_file.write_text(json.dumps({"version": 1, "entries": entries}))
    cache = ChecksumCache(cache_file)
    assert cache.lookup("/x", 1, 2) == SHA
    assert cache.lookup(str(asset), 1, 1) is None


def test_concurrent_saves_keep_each_others_entries(cache_file):
    one, two = ChecksumCache(cache_file), ChecksumCache(cache_file)
    one.store("/project/a.png", 1, 10, "1" * 64)
    two.store("/project/b.png", 2, 20, "2" * 64)
    one.save()
    two.save()
    merged = ChecksumCache(cache_file)
    assert merged.lookup("/project/a.png", 1, 10) == "1" * 64
    assert merged.lookup("/project/b.png", 2, 20) == "2" * 64


def test_entries_unused_for_60_days_are_pruned(cache_file, monkeypatch):
    cache = ChecksumCache(cache_file)
    cache.store("/old.png", 1, 1, SHA)
    cache.store("/new.png", 1, 1, SHA)
    cache._entries["/old.png"][3] = time.time() - 61 * 24 * 3600
    cache.save()
    fresh = ChecksumCache(cache_file)
    assert fresh.lookup("/old.png", 1, 1) is None
    assert fresh.lookup("/new.png", 1, 1) == SHA


def test_using_an_entry_keeps_it_from_being_pruned(cache_file):
    cache = ChecksumCache(cache_file)
    cache.store("/used.png", 1, 1, SHA)
    cache._entries["/used.png"][3] = time.time() - 59 * 24 * 3600
    cache.save()
    user = ChecksumCache(cache_file)
    assert user.lookup("/used.png", 1, 1) == SHA
    user.save()
    assert ChecksumCache(cache_file)._entries["/used.png"][3] > time.time() - 60


def test_saving_leaves_only_the_cache_file(cache_file):
    cache = ChecksumCache(cache_file)
    cache.store("/a", 1, 1, SHA)
    cache.save()
    names = {p.name for p in cache_file.parent.iterdir()}
    assert names <= {"checksums.json", "checksums.json.lock"}


def test_unwritable_cache_dir_does_not_fail(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cache = ChecksumCache(blocker / "checksums.json")
    cache.store("/a", 1, 1, SHA)
    cache.save()  # logs a warning, raises nothing


def test_cache_format_version_mismatch_starts_empty(cache_file):
    cache_file.parent.mkdir(parents=True)
    entries = {"/x": [1, 2, SHA, time.time()]}
    cache_file.write_text(json.dumps({"version": 999, "entries": entries}))
    assert ChecksumCache(cache_file).lookup("/x", 1, 2) is None
    assert cache_mod.FORMAT_VERSION == 1


def test_hits_on_recently_used_entries_do_not_rewrite_the_file(cache_file):
    cache = ChecksumCache(cache_file)
    cache.store("/used.png", 1, 1, SHA)
    cache.save()
    before = cache_file.stat().st_mtime_ns
    os.utime(cache_file, ns=(before - 10**9, before - 10**9))
    user = ChecksumCache(cache_file)
    assert user.lookup("/used.png", 1, 1) == SHA
    user.save()
    assert cache_file.stat().st_mtime_ns == before - 10**9


# ---- one file per project


def test_each_project_root_has_its_own_file(tmp_path):
    cache_dir = tmp_path / "cache"
    one = cache_mod.project_cache_path(tmp_path / "one", cache_dir)
    assert one == cache_mod.project_cache_path(tmp_path / "x" / ".." / "one", cache_dir)
    assert one != cache_mod.project_cache_path(tmp_path / "two", cache_dir)
    assert one.parent == cache_dir / "checksums"


def test_a_project_loads_only_its_own_entries(tmp_path, asset):
    cache_dir = tmp_path / "cache"
    mine = ChecksumCache.for_project(tmp_path / "mine", cache_dir)
    identify(asset, mine)
    mine.save()
    other = ChecksumCache.for_project(tmp_path / "other", cache_dir)
    other.store("/elsewhere/a.png", 1, 2, SHA)
    other.save()
    assert list(ChecksumCache.for_project(tmp_path / "mine", cache_dir)._entries) == [str(asset)]
    assert identify(asset, ChecksumCache.for_project(tmp_path / "mine", cache_dir)).from_cache
    assert not identify(asset, ChecksumCache.for_project(tmp_path / "other", cache_dir)).from_cache


def test_the_one_file_of_earlier_versions_is_removed(tmp_path):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    (cache_dir / "checksums.json").write_text('{"version": 1, "entries": {}}')
    ChecksumCache.for_project(tmp_path / "project", cache_dir)
    assert not (cache_dir / "checksums.json").exists()


def test_files_of_projects_not_submitted_for_max_age_are_removed(tmp_path):
    cache_dir = tmp_path / "cache"
    stale = ChecksumCache.for_project(tmp_path / "old", cache_dir)
    stale.store("/old/a.png", 1, 2, SHA)
    stale.save()
    recent = ChecksumCache.for_project(tmp_path / "recent", cache_dir)
    recent.store("/recent/a.png", 1, 2, SHA)
    recent.save()
    old = time.time() - cache_mod.MAX_AGE_SECONDS - 3600
    os.utime(stale.path, (old, old))
    in_flight = stale.path.parent / ".checksums-in-flight.tmp"  # another save's temp
    in_flight.write_text("{}")
    os.utime(in_flight, (old, old))

    now = ChecksumCache.for_project(tmp_path / "now", cache_dir)
    now.store("/now/a.png", 1, 2, SHA)
    now.save()
    assert not stale.path.exists()
    assert not stale.path.with_name(stale.path.name + ".lock").exists()
    assert recent.path.exists() and now.path.exists() and in_flight.exists()


def test_a_submission_keeps_its_checksums_in_its_projects_file(tmp_path, monkeypatch):
    from flamenco_shaman.engine import submission as submission_mod

    monkeypatch.setenv("FLAMENCO_SHAMAN_CACHE_DIR", str(tmp_path / "cache"))
    made: list[ChecksumCache] = []
    real = ChecksumCache.for_project

    def recording(project_root, directory=None):  # type: ignore[no-untyped-def]
        cache = real(project_root, directory)
        made.append(cache)
        return cache

    monkeypatch.setattr(submission_mod.ChecksumCache, "for_project", recording)

    def unreachable(self):  # type: ignore[no-untyped-def]
        raise SubmitError("stop here")

    monkeypatch.setattr(submission_mod.ManagerClient, "version", unreachable)
    project = tmp_path / "project"
    project.mkdir()
    blend = project / "scene.blend"
    blend.write_bytes(b"not a blend")
    opts = submission_mod.SubmitOptions(blendfile=blend, manager_url="http://127.0.0.1:9/")
    with pytest.raises(SubmitError, match="stop here"):  # the cache was chosen before
        submission_mod.Submission(opts).run()
    assert [c.path for c in made] == [cache_mod.project_cache_path(project)]
