"""`python -m bench [--quick] [--out DIR] [--only NAME ...]`: run, print, save the table."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from . import diskstate
from .context import Context, Scenario
from .report import Row, machine, render_text, write_results
from .scale import FULL, QUICK
from .scenarios import SCENARIOS

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    names = [s.key for s in SCENARIOS]
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Time every hot path next to its baseline, on the same data, in one run.",
    )
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke-test scale")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"results directory ({DEFAULT_OUT})"
    )
    parser.add_argument(
        "--only", nargs="+", choices=names, metavar="NAME", help=f"run only: {', '.join(names)}"
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=None,
        metavar="F",
        help="reduced run: every count and total of the full scale times F (e.g. 0.2)",
    )
    parser.add_argument("--tmp", type=Path, default=None, help="where to generate data")
    parser.add_argument("--keep", action="store_true", help="keep the generated data")
    return parser.parse_args(argv)


# 1-min load average at or above this: other processes took a core or more of ours.
BUSY_LOAD = 1.0
# How long a scenario waits at most for file creation to be calm (see `diskstate`);
# --quick runs (the test suite's) do not wait.
CALM_WAIT = 180.0


def run_scenario(scenario: Scenario, ctx: Context) -> list[Row]:
    """Run one scenario; a failure becomes error rows, so the table always has every row."""
    disk_us, waited = diskstate.wait_until_calm(
        ctx.workdir("probe"), 0.0 if ctx.scale.name == QUICK.name else CALM_WAIT
    )
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    try:
        rows = scenario.run(ctx)
    except Exception as exc:  # reported in the table; the run goes on
        traceback.print_exc(file=sys.stderr)
        message = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        rows = [Row(key=key, scenario=title, error=message) for key, title in scenario.rows]
    seconds = time.perf_counter() - start
    load = os.getloadavg()[0]
    # The load average counts our own work too, so it is read before the scenario starts
    # (the machine as we found it) and when it ends (us plus whatever else ran).
    busy = max(load, load_before) >= BUSY_LOAD
    for row in rows:
        row.seconds = seconds
        row.data["loadavg_1m"] = round(load, 2)
        row.data["loadavg_1m_before"] = round(load_before, 2)
        row.data["disk_probe_us"] = round(disk_us, 1)
        if row.error is None:
            row.notes.append(diskstate.note(disk_us, waited))
            # Other processes competed for the CPU: ratios that need every core suffer most.
            row.notes.append(
                f"{'MEASURED UNDER LOAD, absolute figures unreliable: ' if busy else ''}"
                f"1-min load average {load_before:.2f} before, {load:.2f} after the scenario "
                f"({ctx.cores} cores)"
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scale = QUICK if args.quick else FULL
    if args.scale is not None:
        if args.quick or not 0 < args.scale <= 1:
            raise SystemExit(
                "--scale takes a fraction in (0, 1] of the full scale, not with --quick"
            )
        scale = FULL.scaled(args.scale)
    chosen = [s for s in SCENARIOS if not args.only or s.key in args.only]
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows: list[Row] = []
    tmp = Path(tempfile.mkdtemp(prefix="shaman-bench-", dir=args.tmp))
    ctx = Context(scale=scale, tmp=tmp, keep=args.keep)
    # The engine's checksum cache goes into the scratch dir: runs start cold, and the
    # user's own cache never fills up with benchmark files.
    os.environ["FLAMENCO_SHAMAN_CACHE_DIR"] = str(ctx.workdir("checksum-cache"))
    started = time.perf_counter()
    try:
        for scenario in chosen:
            print(f"[bench] {scenario.key} ({scale.name}) ...", file=sys.stderr, flush=True)
            done = run_scenario(scenario, ctx)
            rows.extend(done)
            for row in done:
                print(
                    f"[bench]   {row.key}: {row.figure} vs {row.baseline} = {row.ratio_text}"
                    f" | {row.result}",
                    file=sys.stderr,
                )
                for note in row.notes:
                    print(f"[bench]     {note}", file=sys.stderr)
    finally:
        ctx.cleanup(tmp)
    meta = {
        "date": date,
        "scale": scale.name,
        "machine": machine(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(render_text(rows))
    json_path, md_path = write_results(rows, args.out, meta)
    print(f"\nwritten: {json_path} and {md_path.name} ({meta['seconds']} s)")
    return 1 if any(r.error is not None for r in rows) else 0
