"""Flamenco's own protocol, one request per file, vs a bare loop storing the same files.

Most studios point Flamenco's official add-on at the manager, and it uploads one file per
request, one at a time. Three rows: that client on 1 and on 4 connections, each against a
bare write-fsync-rename loop over the same files, and the manager's CPU per upload.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import psutil

from ..baselines import settle, store_blobs
from ..context import Context
from ..datagen import tree_paths, write_tree
from ..manager import ManagerProcess
from ..perfile_client import LocalFile, send
from ..report import Row
from ..scale import human_bytes
from ..store import count_links
from ..trials import Samples, spread_note

TITLE = "per-file protocol (Flamenco add-on's way)"
CPU_TITLE = "manager CPU per 1,000 per-file uploads"
# The manager's CPU seconds (user+sys) per 1,000 uploads of 4 KiB on one connection, as
# measured before the per-file path was optimised (issue 17's "today"); the target is at
# most half of it. Best of 3 of this row at full scale, 2026-11-29 22:05 UTC, 1-min load
# average 2.4-3.4 on 2 cores (median 1.48 s, range 1.44-2.15 s; the bare loop's own CPU
# swung 0.20-0.64 s per 1,000 in the same run: file creation is kernel CPU that grows
# with recently deleted inodes, see bench/README.md). A second run at 22:20 UTC gave
# 1.72 s (1.72-1.81), of which 1.03 s sys and 0.69 s user: the lower, stricter figure
# is kept.
TODAY_CPU_PER_1000 = 1.44
TODAY_CPU_DATE = "2026-11-29"


def _server_cpu(proc: psutil.Process) -> tuple[float, float]:
    t = proc.cpu_times()
    return t.user, t.system


def _ours(
    ctx: Context, files: list[LocalFile], tag: str, connections: int
) -> tuple[float, float, float, float]:
    """One timed run on a fresh manager and storage: (seconds, manager user and sys CPU
    seconds, the client's CPU seconds)."""
    root = ctx.tmp / "perfile"
    storage = root / f"storage-{tag}"
    with ManagerProcess(storage, root / f"{tag}.log") as manager:
        proc = psutil.Process(manager.pid)
        settle()
        user, system = _server_cpu(proc)
        client_cpu = time.process_time()
        start = time.perf_counter()
        uploaded = send(manager.url, files, f"bench/{tag}", connections)
        seconds = time.perf_counter() - start
        client_cpu = time.process_time() - client_cpu
        user_after, system_after = _server_cpu(proc)
    if uploaded != len(files):
        raise AssertionError(f"{tag}: {uploaded} of {len(files)} files uploaded")
    made = count_links(storage / "jobs" / "bench")
    if made != len(files):
        raise AssertionError(f"{tag}: checkout has {made} links, want {len(files)}")
    return seconds, user_after - user, system_after - system, client_cpu


def run(ctx: Context) -> list[Row]:
    root = ctx.workdir("perfile")
    try:
        n, size = ctx.scale.perfile_files, ctx.scale.perfile_file_size
        rels = tree_paths(n, prefix="textures/props")
        project = root / "project"
        write_tree(project, rels, [size] * n)
        files = [_local(project, rel) for rel in rels]
        pairs = [(f.sha, f.size, f.local) for f in files]

        one, four, base, base_nosync = Samples(), Samples(), Samples(), Samples()
        base_grouped = Samples()  # no fsync per file, one filesystem sync at the end
        cpu_one, cpu_four, cpu_base = Samples(), Samples(), Samples()
        sys_one = Samples()  # the kernel's share of cpu_one, trial by trial
        client_one, client_four = Samples(), Samples()  # the client's own CPU
        # Alternating ours and the baseline, each trial on fresh storage: every run is a
        # true first upload. Trees stay until the run ends (ext4 inode reuse, see context).
        for i in range(ctx.scale.heavy_trials):
            seconds, cpu = store_blobs(root / f"bare-sync-{i}", pairs, sync=True)
            base.add(seconds)
            cpu_base.add(cpu)
            seconds, user, system, client = _ours(ctx, files, f"one-{i}", 1)
            client_one.add(client)
            one.add(seconds)
            cpu_one.add(user + system)
            sys_one.add(system)
            base_nosync.add(store_blobs(root / f"bare-nosync-{i}", pairs, sync=False)[0])
            grouped = store_blobs(root / f"bare-grouped-{i}", pairs, sync=False, grouped=True)
            base_grouped.add(grouped[0])
            seconds, user, system, client = _ours(ctx, files, f"four-{i}", 4)
            client_four.add(client)
            four.add(seconds)
            cpu_four.add(user + system)

        what = f"{n:,} x {human_bytes(size)}"
        base_text = (
            f"{base.best:.2f} s (bare write+fsync+rename loop, {n / base.best:,.0f} files/s)"
        )
        method = (
            "client = stdlib http.client, keep-alive: requirements for all files, then per "
            "file a status GET and a POST (X-Shaman-Original-Filename RFC 2047, "
            "X-Shaman-Can-Defer-Upload: True), then checkout/create; timed from requirements "
            "to the checkout's 200, each trial a fresh manager and storage; "
            f"best of {len(one.values)}, alternating with the baseline (order per trial: "
            "bare fsync loop, 1 connection, bare loop without fsync, the same with one "
            "grouped sync, 4 connections); the manager answers each small upload once it "
            "is verified and written (.pending) and syncs them all at checkout/create"
        )
        baseline_note = (
            "baseline: a loop reading each file, writing it to a temp name, fsyncing it, "
            "renaming it into stored/{sha[:2]}/{sha[2:]}/{size}.blob and fsyncing that dir: "
            "the guarantee (a file answered 'stored' survives a crash) needs the syncs; "
            f"without them the same loop takes {base_nosync.spread_text()} "
            f"({n / base_nosync.best:,.0f} files/s at best); with one filesystem sync after "
            f"the loop instead (the manager's durability point: the checkout) "
            f"{base_grouped.spread_text()}, against which ours is "
            f"{one.best / base_grouped.best:.1f}x (1 connection) and "
            f"{four.best / base_grouped.best:.1f}x (4)"
        )
        rate1, rate4 = n / one.best, n / four.best
        ratio1, ratio4 = one.best / base.best, four.best / base.best
        per_k = 1000 / n
        today = TODAY_CPU_PER_1000
        return [
            Row(
                key="perfile_1",
                scenario=f"{TITLE}, 1 connection ({what})",
                figure=f"{one.best:.2f} s ({rate1:,.0f} files/s)",
                baseline=base_text,
                ratio=ratio1,
                ratio_label="x time",
                target=">= 2,000 files/s and <= 1.5x time",
                passed=rate1 >= 2000 and ratio1 <= 1.5,
                notes=[
                    method,
                    baseline_note,
                    spread_note(one, base),
                    f"the client's own CPU (it shares the {ctx.cores} cores): "
                    f"{client_one.spread_text()}",
                ],
                data=_data(n, one, base, base_nosync),
            ),
            Row(
                key="perfile_4",
                scenario=f"{TITLE}, 4 connections ({what})",
                figure=f"{four.best:.2f} s ({rate4:,.0f} files/s)",
                baseline=base_text,
                ratio=ratio4,
                ratio_label="x time",
                target=">= 3,000 files/s",
                passed=rate4 >= 3000,
                notes=[
                    "4 threads, each its own keep-alive connection over a quarter of the "
                    "unknown files; one requirements and one checkout request",
                    spread_note(four, base),
                    f"the client's own CPU (it shares the {ctx.cores} cores): "
                    f"{client_four.spread_text()}",
                ],
                data=_data(n, four, base, base_nosync),
            ),
            Row(
                key="perfile_cpu",
                scenario=f"{CPU_TITLE} ({human_bytes(size)}, 1 connection)",
                figure=f"{cpu_one.best * per_k:.2f} s CPU",
                baseline=f"{cpu_base.best * per_k:.2f} s CPU (the bare loop, same files)",
                ratio=cpu_one.best / cpu_base.best,
                ratio_label="x CPU",
                target=f"<= {today / 2:.2f} s (half of {today:.2f} s, {TODAY_CPU_DATE})",
                passed=cpu_one.best * per_k <= today / 2,
                notes=[
                    "user+sys CPU of the manager process (psutil cpu_times, all threads) across "
                    "the whole 1-connection run (requirements, status GETs, POSTs, checkout), "
                    "per 1,000 files; baseline = this process's CPU (time.process_time) across "
                    "the bare fsync loop",
                    f"manager CPU per 1,000: 1 connection {cpu_one.spread_text(scale=per_k)}; "
                    f"4 connections {cpu_four.spread_text(scale=per_k)}; bare loop "
                    f"{cpu_base.spread_text(scale=per_k)}",
                    f"of the manager's 1-connection CPU, the kernel's (sys) per 1,000: "
                    f"{sys_one.spread_text(scale=per_k)}: filesystem work (inode allocation, "
                    "fsync, dirs) and thread hand-offs, as opposed to Python",
                    f"today's figure (before optimising, {TODAY_CPU_DATE}, full scale, best of "
                    f"3, measured under load 2.4-3.4; 1.72 s in a second run): {today:.2f} s "
                    "CPU per 1,000 uploads; the target is half of it",
                ],
                data={
                    "files": n,
                    "cpu_per_1000": cpu_one.best * per_k,
                    "cpu_per_1000_median": cpu_one.median * per_k,
                    "cpu_per_1000_4conn": cpu_four.best * per_k,
                    "base_cpu_per_1000": cpu_base.best * per_k,
                    "cpu_s": cpu_one.values,
                    "sys_cpu_s": sys_one.values,
                    "base_cpu_s": cpu_base.values,
                },
            ),
        ]
    finally:
        ctx.cleanup(root, many_files=True)


def _local(project: Path, rel: str) -> LocalFile:
    path = project / rel
    with open(path, "rb") as f:
        data = f.read()
    return LocalFile(hashlib.sha256(data).hexdigest(), len(data), rel, path)


def _data(n: int, ours: Samples, base: Samples, nosync: Samples) -> dict[str, object]:
    return {
        "files": n,
        "ours_s": ours.best,
        "ours_median_s": ours.median,
        "ours_trials_s": ours.values,
        "base_s": base.best,
        "base_median_s": base.median,
        "base_trials_s": base.values,
        "base_nosync_trials_s": nosync.values,
    }
