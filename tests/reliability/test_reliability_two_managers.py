"""Guarantee 8, two managers on one storage: two server processes share a storage directory
(as two managers on one NFS/CephFS share would), clients spread over both. Load and crash
safety still hold, and a GC in one never deletes what the other is checking out.

The processes share nothing but the filesystem: exactly-once blob writes rest on `os.link`
refusing to replace a blob, and GC/checkout exclusion on the `flock` of `file-store/.lock`.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from reliability_helpers import (
    KillSwitch,
    ManagerProcess,
    SourceFile,
    dangling_links,
    hidden_job_entries,
    make_project,
    problems_after_crash,
    resubmit_interrupted,
    shared_files,
    submit_all,
    submit_while_collecting,
    sweep_once,
    verify_checkout,
    verify_store,
)
from test_reliability_gc_under_fire import _projects as gc_projects

SEED = 8080
CLIENTS = 12

pytestmark = pytest.mark.slow


def _projects(tmp: Path, rng: random.Random, tag: str, alias_paths: int = 0) -> list:
    shared = shared_files(rng, count=8, max_size=64 * 1024)
    return [
        make_project(
            tmp / f"src-{tag}",
            f"p{i:02d}",
            rng,
            shared=shared,
            unique_files=4,
            max_size=32 * 1024,
            large_files=1 if i % 4 == 0 else 0,
            large_size=512 * 1024,
            alias_paths=alias_paths,
        )
        for i in range(CLIENTS)
    ]


def _requested(tag: str) -> Callable[[int], str]:
    return lambda i: f"two/{tag}/job-{i:02d}"


def test_clients_on_two_managers_all_succeed_and_each_blob_is_written_once(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    storage = tmp_path / "storage"
    a = ManagerProcess(storage).start()
    b = ManagerProcess(storage).start()
    try:
        runs: list[tuple[list[list[SourceFile]], dict[int, str | BaseException]]] = []
        for run in ("first", "second"):
            projects = _projects(tmp_path, rng, run) if not runs else runs[0][0]
            results = submit_all([a.url, b.url], projects, _requested(run))
            runs.append((projects, results))
        for projects, results in runs:
            for i, used in results.items():
                assert isinstance(used, str), f"{used!r}\n{a.log_text()}\n{b.log_text()}"
                assert verify_checkout(a.jobs, a.store, used, projects[i]) == []
        assert verify_store(a.store) == []
    finally:
        a.stop()
        b.stop()
    distinct = {(f.sha, f.size) for files in runs[0][0] for f in files}
    written = Counter(
        (sha, size) for m in (a, b) for sha, size, st in m.upload_statuses() if st == 204
    )
    assert set(written) == distinct
    assert max(written.values()) == 1, "a blob was written by both managers"
    # Both managers really took part.
    assert a.upload_statuses() and b.upload_statuses()


def test_kill_9_of_one_manager_leaves_a_sound_storage_for_both(tmp_path: Path) -> None:
    rng = random.Random(SEED + 1)
    storage = tmp_path / "storage"
    a = ManagerProcess(storage).start()
    b = ManagerProcess(storage).start()
    try:
        for rnd, kind in enumerate(("files", "checkout/create")):
            projects = _projects(tmp_path, rng, f"crash{rnd}", alias_paths=200)
            victim = (a, b)[rnd % 2]
            switch = KillSwitch(victim, kind, rng.randint(1, 10), rng.uniform(0.0, 0.02))
            # The switch counts answers of both managers: the kill lands amid shared work.
            requested = _requested(f"crash{rnd}")
            results = submit_all([a.url, b.url], projects, requested, switch.on_response)
            switch.finish()
            assert not victim.running
            survivor = b if victim is a else a
            assert survivor.running
            victim.start()

            assert problems_after_crash(storage, projects, results, requested) == []
            sweep_once(storage)
            assert hidden_job_entries(a.jobs) == []

            # Whatever the killed manager left unfinished, the other one finishes.
            def retry_path(i: int, rnd: int = rnd) -> str:
                return f"two/crash{rnd}/retry-{i:02d}"

            assert resubmit_interrupted(survivor.url, storage, projects, results, retry_path) == []
    finally:
        a.stop()
        b.stop()


def test_gc_in_one_manager_never_deletes_what_the_other_checks_out(tmp_path: Path) -> None:
    rng = random.Random(SEED + 2)
    storage = tmp_path / "storage"
    collector = ManagerProcess(storage, gc_period="50ms", gc_max_age="0s").start()
    server = ManagerProcess(storage).start()
    try:
        result = submit_while_collecting(
            [server.url],
            server.jobs,
            server.store,
            gc_projects(tmp_path, rng),
            workers=4,
            submissions=5,
            seed=SEED,
        )
        assert result.problems == []
        assert dangling_links(server.jobs) == []
        assert verify_store(server.store) == []
    finally:
        collector.stop()
        server.stop()
    assert result.completed > 0
    # The collecting manager deleted blobs while the other one served the clients.
    assert any("deleted files=" in ln and "deleted files=0" not in ln for ln in collector.lines)
