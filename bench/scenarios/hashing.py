"""Cold hashing of a mixed-size project by the engine's hasher vs one core of hashlib."""

from __future__ import annotations

import hashlib
import time

from .. import targets
from ..baselines import settle, sha256_files
from ..context import Context
from ..datagen import sizes_up_to, tree_paths, write_tree
from ..report import Row
from ..scale import KiB, MiB, human_bytes
from ..trials import Samples, spread_note

TITLE = "cold hashing, mixed-size project"


def run(ctx: Context) -> list[Row]:
    root = ctx.workdir("hash")
    try:
        sizes = sizes_up_to(ctx.scale.hash_bytes, 4 * KiB, ctx.scale.hash_max_file)
        rel = tree_paths(len(sizes), prefix="project", per_dir=100, ext=".bin")
        write_tree(root, rel, sizes)
        files = [root / p for p in rel]

        ours, base = Samples(), Samples()
        for _ in range(ctx.scale.trials):  # alternating, so both see the same machine
            seconds, total = sha256_files(files)
            base.add(seconds)
            settle()
            start = time.perf_counter()
            result = targets.hash_files(files)
            ours.add(time.perf_counter() - start)
        _check(files, sizes, result)

        base_tp, ours_tp = total / base.best / MiB, total / ours.best / MiB
        target = 0.8 * ctx.cores
        ratio = ours_tp / base_tp
        return [
            Row(
                key="hash",
                scenario=f"{TITLE} ({human_bytes(total)}, {len(files)} files)",
                figure=f"{ours_tp:.0f} MiB/s",
                baseline=f"{base_tp:.0f} MiB/s (1-thread hashlib)",
                ratio=ratio,
                ratio_label="x",
                target=f">= {target:.1f}x (0.8 x {ctx.cores} cores)",
                passed=ratio >= target,
                notes=[
                    "files in page cache (written just before), no hash cache; "
                    f"best of {len(ours.values)} each, alternating",
                    spread_note(ours, base),
                    f"throughput: ours {ours.rate_text(total / MiB, 'MiB/s')}; baseline "
                    f"{base.rate_text(total / MiB, 'MiB/s')}",
                ],
                data={
                    "bytes": total,
                    "files": len(files),
                    "ours_s": ours.best,
                    "base_s": base.best,
                    "ours_trials_s": ours.values,
                    "base_trials_s": base.values,
                },
            )
        ]
    finally:
        ctx.cleanup(root)


def _check(files: list, sizes: list[int], result: list[tuple[str, int]]) -> None:
    """The hasher must be right, not just fast: spot-check against hashlib."""
    if len(result) != len(files):
        raise AssertionError(f"hasher returned {len(result)} results for {len(files)} files")
    for i in sorted({0, len(files) // 2, len(files) - 1}):
        with open(files[i], "rb") as f:
            want = hashlib.file_digest(f, "sha256").hexdigest()
        if tuple(result[i]) != (want, sizes[i]):
            raise AssertionError(f"hasher gave {result[i]} for {files[i]}, want {want}")
