"""A garbage-collection sweep vs a bare os.scandir walk of the same two trees."""

from __future__ import annotations

import time

from .. import targets
from ..baselines import scandir_walk, settle
from ..context import Context
from ..datagen import tree_paths
from ..report import Row
from ..store import age_blobs, blob_path, stored_dir, write_blobs
from ..trials import Samples, spread_note

TITLE = "GC sweep"
MAX_AGE = 3600.0
CHECKOUTS = 10


def run(ctx: Context) -> list[Row]:
    root = ctx.workdir("gc")
    try:
        n_blobs, n_links = ctx.scale.gc_blobs, ctx.scale.gc_links
        storage = root / "storage"
        blobs = write_blobs(storage, n_blobs)
        # 1% of the blobs are garbage: old and linked from nowhere. The rest are linked from
        # CHECKOUTS checkouts made by our own builder, so the links look like real ones.
        orphans = max(1, n_blobs // 100)
        live = blobs[orphans:]
        per = -(-n_links // CHECKOUTS)
        core = targets.open_core(storage, MAX_AGE)
        for c in range(CHECKOUTS):
            chunk = range(c * per, min(n_links, (c + 1) * per))
            paths = tree_paths(len(chunk), prefix=f"shot{c:02d}", per_dir=1000, ext=".exr")
            files = [(*live[i % len(live)], p) for i, p in zip(chunk, paths, strict=True)]
            targets.checkout(core, f"bench/gc-{c:02d}", targets.file_specs(files))
        # Everything older than maxAge, so each blob's fate rests on the link check.
        age_blobs(storage, blobs, time.time() - 2 * MAX_AGE)

        roots = [stored_dir(storage), storage / "jobs"]
        settle()
        start = time.perf_counter()
        targets.gc_sweep(core, dry_run=True)
        dry_s = time.perf_counter() - start

        ours, base, floor = Samples(), Samples(), Samples()
        garbage = blobs[:orphans]
        for t in range(ctx.scale.trials):
            if t:  # the last sweep deleted the garbage: make as much again, as old
                garbage = write_blobs(storage, orphans, time.time() - 2 * MAX_AGE)
            seconds, seen = scandir_walk(roots)
            base.add(seconds)
            floor.add(scandir_walk(roots, readlinks=True)[0])
            settle()
            start = time.perf_counter()
            stats = targets.gc_sweep(core)
            ours.add(time.perf_counter() - start)
            gone = [b for b in garbage if not blob_path(storage, *b).exists()]
            sample = live[:: max(1, len(live) // 1000)]
            kept = sum(blob_path(storage, *b).exists() for b in sample)
            if len(gone) != orphans or kept != len(sample):
                raise AssertionError(f"GC deleted {len(gone)}/{orphans} orphans or a live blob")
        ours_s, base_s = ours.best, base.best

        ratio = ours_s / base_s
        return [
            Row(
                key="gc",
                scenario=f"{TITLE}, {n_blobs:,} blobs and {n_links:,} links",
                figure=f"{ours_s:.2f} s",
                baseline=f"{base_s:.2f} s (bare os.scandir walk, {seen:,} entries)",
                ratio=ratio,
                ratio_label="x time",
                target="<= 2x",
                passed=ratio <= 2,
                notes=[
                    f"all blobs older than maxAge, {orphans:,} unlinked ones deleted: {stats}; "
                    f"best of {len(ours.values)} sweeps, each after a walk and with "
                    f"{orphans:,} fresh old orphans",
                    spread_note(ours, base),
                    f"floor: the same walk plus os.readlink of every link (the inode reads any "
                    f"collector needs) {floor.spread_text()}; sweep / that floor at best "
                    f"{ours.best / floor.best:.2f}x, at median {ours.median / floor.median:.2f}x",
                    f"a dry run of the sweep (no deleting), before the trials, took {dry_s:.2f} s "
                    f"= {dry_s / base_s:.2f}x the best walk",
                ],
                data={
                    "blobs": n_blobs,
                    "links": n_links,
                    "ours_s": ours_s,
                    "dry_run_s": dry_s,
                    "base_s": base_s,
                    "ours_trials_s": ours.values,
                    "base_trials_s": base.values,
                    "readlink_floor_trials_s": floor.values,
                },
            )
        ]
    finally:
        ctx.cleanup(root, many_files=True)
