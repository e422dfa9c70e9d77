"""Peak RSS of the manager and of the submitting client while one huge file moves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ..context import Context
from ..manager import ManagerProcess
from ..project import make_project
from ..report import Row
from ..rss import PeakRSS
from ..scale import human_bytes

LIMIT = 150_000_000  # the issue says 150 MB
REPO = Path(__file__).resolve().parents[2]


def run(ctx: Context) -> list[Row]:
    root = ctx.workdir("rss")
    try:
        size = ctx.scale.rss_bytes
        project = make_project(root / "project", ["renders/huge_plate.exr"], [size])
        with ManagerProcess(root / "storage", root / "manager.log") as manager:
            server = PeakRSS(manager.pid).start()
            client = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.submit_client",
                    str(project.blend),
                    manager.url,
                    "bench/rss",
                ],
                cwd=REPO,
                # A fresh checksum cache: the row is about moving one file, not about the
                # size of a cache the earlier scenarios filled.
                env={**os.environ, "FLAMENCO_SHAMAN_CACHE_DIR": str(root / "cache")},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            client_rss = PeakRSS(client.pid).start()
            out, err = client.communicate(timeout=3600)
            client_peak = client_rss.stop()
            server_peak = server.stop()
        if client.returncode != 0:
            raise RuntimeError(f"submission failed: {err[-2000:]}")
        report = json.loads(out.strip().splitlines()[-1])
        sampled, client_peak = client_peak, max(client_peak, report["peak_rss"])
        if report["bytes_uploaded"] < size:
            raise AssertionError(f"only {report['bytes_uploaded']} bytes uploaded of {size}")

        what = f"while moving one {human_bytes(size)} file"
        note = "psutil sampling every 20 ms plus the kernel's high-water mark (VmHWM)"
        rows = [
            _row("rss_server", f"peak RSS of the manager {what}", server_peak, note),
            _row("rss_client", f"peak RSS of the submitting client {what}", client_peak, note),
        ]
        rows[1].notes.append(
            f"client: sampled {sampled / 1e6:.0f} MB, its own VmHWM "
            f"{report['peak_rss'] / 1e6:.0f} MB, reached while {report.get('peak_phase') or '?'}"
        )
        return rows
    finally:
        ctx.cleanup(root)


def _row(key: str, title: str, peak: int, note: str) -> Row:
    return Row(
        key=key,
        scenario=title,
        figure=f"{peak / 1e6:.0f} MB",
        baseline="-",
        target=f"< {LIMIT / 1e6:.0f} MB",
        passed=peak < LIMIT,
        notes=[note] if key == "rss_server" else [],
        data={"peak_rss": peak},
    )
