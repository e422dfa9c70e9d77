"""Guarantee 5, GC under fire: garbage collection with maxAge 0 runs again and again while
clients submit, and no checkout the server answered 200 for ever contains a dangling link.

maxAge 0 makes every blob not linked from `jobs/` garbage the moment a sweep starts, so the
only thing protecting a checkout being built is the storage lock and the touch-before-link
rule. Finished checkouts are mostly deleted again, so the collector keeps finding garbage.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from reliability_helpers import (
    GcLoop,
    ManagerProcess,
    SourceFile,
    dangling_links,
    make_project,
    shared_files,
    submit_while_collecting,
    verify_store,
    wide_project,
)

SEED = 555

pytestmark = pytest.mark.slow


def _projects(tmp: Path, rng: random.Random) -> list[list[SourceFile]]:
    shared = shared_files(rng, count=6, max_size=32 * 1024)
    projects = [
        make_project(tmp / "src", f"p{i}", rng, shared=shared, unique_files=4, max_size=16 * 1024)
        for i in range(4)
    ]
    # Two projects with 800 links each over a few blobs: long checkout builds.
    projects += [wide_project(tmp / "src", f"wide{i}", rng, blobs=12, paths=800) for i in range(2)]
    return projects


def test_sweeps_from_another_process_never_leave_a_completed_checkout_dangling(
    tmp_path: Path,
) -> None:
    rng = random.Random(SEED)
    projects = _projects(tmp_path, rng)
    mgr = ManagerProcess(tmp_path / "storage").start()
    try:
        with GcLoop(mgr.storage, seed=SEED) as gc:
            result = submit_while_collecting(
                [mgr.url], mgr.jobs, mgr.store, projects, workers=5, submissions=6, seed=SEED
            )
        assert result.problems == []
        assert dangling_links(mgr.jobs) == []
        assert verify_store(mgr.store) == []
    finally:
        mgr.stop()
    # The collector really raced the clients: it deleted blobs and checkouts still completed.
    assert gc.deleted > 0
    assert result.completed > 0


def test_the_servers_own_periodic_gc_never_leaves_a_completed_checkout_dangling(
    tmp_path: Path,
) -> None:
    rng = random.Random(SEED + 1)
    projects = _projects(tmp_path, rng)
    mgr = ManagerProcess(tmp_path / "storage", gc_period="50ms", gc_max_age="0s").start()
    try:
        result = submit_while_collecting(
            [mgr.url], mgr.jobs, mgr.store, projects, workers=5, submissions=6, seed=SEED
        )
        assert result.problems == []
        assert dangling_links(mgr.jobs) == []
        assert verify_store(mgr.store) == []
    finally:
        mgr.stop()
    assert result.completed > 0
    # Its sweeps deleted blobs while the clients were busy (the collector logs each sweep).
    assert any(re.search(r"deleted files=[1-9]", line) for line in mgr.lines), mgr.log_text()
