"""The scenarios, in run order: each generates its data, measures, and cleans up."""

from __future__ import annotations

from ..context import Scenario
from . import checkout, gc, hashing, ingest, memory, perfile, submission

SCENARIOS: tuple[Scenario, ...] = (
    Scenario("hash", (("hash", hashing.TITLE),), hashing.run),
    Scenario("ingest", (("ingest", ingest.TITLE),), ingest.run),
    Scenario("first", (("first_submit", submission.FIRST_TITLE),), submission.run_first),
    Scenario(
        "resubmit",
        (
            ("resubmit", submission.RESUB_TITLE),
            ("changed_texture", submission.CHANGED_TITLE),
        ),
        submission.run_resubmit,
    ),
    Scenario(
        "perfile",
        (
            ("perfile_1", perfile.TITLE + ", 1 connection"),
            ("perfile_4", perfile.TITLE + ", 4 connections"),
            ("perfile_cpu", perfile.CPU_TITLE),
        ),
        perfile.run,
    ),
    Scenario("checkout", (("checkout", checkout.TITLE),), checkout.run),
    Scenario("gc", (("gc", gc.TITLE),), gc.run),
    Scenario(
        "rss",
        (
            ("rss_server", "peak RSS of the manager moving one big file"),
            ("rss_client", "peak RSS of the submitting client moving one big file"),
        ),
        memory.run,
    ),
)

ROW_KEYS = tuple(key for s in SCENARIOS for key, _ in s.rows)
