"""The benchmark's filesystem probe: it measures, cleans up and never waits unasked."""

from __future__ import annotations

from bench import diskstate


def test_the_probe_measures_and_leaves_nothing_behind(tmp_path):
    us = diskstate.probe(tmp_path, count=20)
    assert us > 0
    assert list(tmp_path.iterdir()) == []


def test_without_time_to_wait_it_probes_once(tmp_path, monkeypatch):
    monkeypatch.setattr(diskstate, "CALM_US", 0.0)  # never calm

    def no_sleep(seconds: float) -> None:
        raise AssertionError(f"slept {seconds} s")

    monkeypatch.setattr(diskstate.time, "sleep", no_sleep)
    us, waited = diskstate.wait_until_calm(tmp_path, max_wait=0.0)
    assert us > 0
    assert "NOT CALM" in diskstate.note(us, waited)


def test_it_retries_until_calm(tmp_path, monkeypatch):
    figures = iter([900.0, 800.0, 40.0])
    monkeypatch.setattr(diskstate, "probe", lambda directory: next(figures))
    monkeypatch.setattr(diskstate.time, "sleep", lambda seconds: None)
    us, _waited = diskstate.wait_until_calm(tmp_path, max_wait=60.0)
    assert us == 40.0
    assert "calm" in diskstate.note(us, 0.0) and "NOT" not in diskstate.note(us, 0.0)
