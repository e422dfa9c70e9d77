"""`heap.cyclic_collector_paused`: CPython's cyclic collector is off while a GC sweep runs,
and back as it was after, however pauses overlap."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest

from manager_plugin.gc import GarbageCollector
from manager_plugin.heap import cyclic_collector_paused
from manager_plugin.locking import StorageLock


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


def test_a_pause_switches_the_collector_off_and_back_on():
    with cyclic_collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_pause_ended_by_an_exception_switches_it_back_on():
    with pytest.raises(RuntimeError), cyclic_collector_paused():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off():
    gc.disable()
    with cyclic_collector_paused():
        pass
    assert not gc.isenabled()


def test_overlapping_pauses_in_two_threads_end_with_the_last():
    first_in, second_done = threading.Event(), threading.Event()
    seen: list[bool] = []

    def first() -> None:
        with cyclic_collector_paused():
            first_in.set()
            second_done.wait(5)
            seen.append(gc.isenabled())  # the other pause ended: still off here

    thread = threading.Thread(target=first)
    thread.start()
    first_in.wait(5)
    with cyclic_collector_paused():
        pass
    second_done.set()
    thread.join(5)
    assert seen == [False]
    assert gc.isenabled()


def test_a_sweep_runs_with_the_collector_paused(store, tmp_path, monkeypatch):
    seen: list[bool] = []
    collector = GarbageCollector(
        store, tmp_path / "jobs", StorageLock(tmp_path / "lock"), max_age=timedelta(hours=1)
    )
    real = collector._sweep

    def watching(dry_run: bool):  # type: ignore[no-untyped-def]
        seen.append(gc.isenabled())
        return real(dry_run)

    monkeypatch.setattr(collector, "_sweep", watching)
    collector.sweep()
    assert seen == [False]
    assert gc.isenabled()
