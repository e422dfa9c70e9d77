"""Guarantee 2, crash safety: `kill -9` the manager while 50 clients upload and check out,
restart it on the same storage, and find nothing corrupt, nothing partial, nothing lost.

The kill moment is drawn from a seeded random generator as "after the N-th HTTP answer plus
a few milliseconds", so every run kills at comparable points of the work (mid-upload,
mid-checkout) without depending on how fast the machine is.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest
from reliability_helpers import (
    KillSwitch,
    ManagerProcess,
    SourceFile,
    hidden_job_entries,
    make_project,
    problems_after_crash,
    resubmit_interrupted,
    shared_files,
    submit_all,
    sweep_once,
    verify_store,
)

SEED = 20261121
ROUNDS = 4
SUBMISSIONS = 50

pytestmark = pytest.mark.slow


def _round_projects(tmp: Path, rnd: int, rng: random.Random) -> list[list[SourceFile]]:
    # Fresh shared bytes each round, so clients race for the same blobs every round.
    shared = shared_files(rng, count=6, max_size=48 * 1024)
    projects = []
    for i in range(SUBMISSIONS):
        projects.append(
            make_project(
                tmp / f"src-r{rnd}",
                f"p{i:02d}",
                rng,
                shared=shared,
                unique_files=3,
                max_size=32 * 1024,
                # Every fifth project carries a larger file, so kills land mid-stream too.
                large_files=1 if i % 5 == 0 else 0,
                large_size=512 * 1024,
                alias_paths=150,
            )
        )
    return projects


def _requested(rnd: int) -> Callable[[int], str]:
    return lambda i: f"crash/r{rnd}/job-{i:02d}"


def test_kill_9_during_uploads_and_checkouts_loses_and_corrupts_nothing(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    storage = tmp_path / "storage"
    mgr = ManagerProcess(storage).start()
    kills_mid_work = 0
    try:
        for rnd in range(ROUNDS):
            projects = _round_projects(tmp_path, rnd, rng)
            # Alternate the work the kill interrupts: uploads streaming, checkouts building.
            if rnd % 2 == 0:
                switch = KillSwitch(mgr, "files", rng.randint(1, 60), rng.uniform(0.0, 0.05))
            else:
                switch = KillSwitch(
                    mgr, "checkout/create", rng.randint(1, 25), rng.uniform(0.0, 0.02)
                )
            results = submit_all([mgr.url], projects, _requested(rnd), switch.on_response)
            switch.finish()
            kills_mid_work += switch.killed_mid_work
            assert not mgr.running

            mgr.start()  # on the same storage

            assert problems_after_crash(storage, projects, results, _requested(rnd)) == []
            # Checkouts cut short are hidden; the collector's next sweep removes them.
            leftovers = hidden_job_entries(mgr.jobs)
            assert all(p.name.startswith(".shaman-tmp-") for p in leftovers), leftovers
            sweep_once(storage)
            assert hidden_job_entries(mgr.jobs) == []

            # The restarted server finishes every interrupted submission.
            def retry_path(i: int, rnd: int = rnd) -> str:
                return f"crash/r{rnd}/retry-{i:02d}"

            assert resubmit_interrupted(mgr.url, storage, projects, results, retry_path) == []
            assert verify_store(mgr.store) == []
    finally:
        mgr.stop()
    # The seeded kill points must really have hit a busy server, or this proved nothing.
    assert kills_mid_work == ROUNDS
