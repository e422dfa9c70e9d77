"""The manager receiving one big upload over loopback vs shutil.copyfile of the same file."""

from __future__ import annotations

import hashlib
import time

from ..baselines import copy_file, settle
from ..context import Context
from ..datagen import write_file
from ..manager import ManagerProcess, upload_file
from ..report import Row
from ..scale import MiB, human_bytes
from ..store import blob_path

TITLE = "manager ingest of one upload over loopback"


def run(ctx: Context) -> list[Row]:
    root = ctx.workdir("ingest")
    try:
        size = ctx.scale.ingest_bytes
        big = root / "upload.bin"
        write_file(big, size)
        with open(big, "rb") as f:
            sha = hashlib.file_digest(f, "sha256").hexdigest()

        copy = root / "copy.bin"
        base_s = copy_file(big, copy)
        copy.unlink()

        storage = root / "storage"
        with ManagerProcess(storage, root / "manager.log") as manager:
            settle()
            start = time.perf_counter()
            status = upload_file(manager.url, big, sha, size)
            ours_s = time.perf_counter() - start
        if status != 204:
            raise AssertionError(f"upload answered {status}, want 204")
        stored = blob_path(storage, sha, size)
        if not stored.is_file() or stored.stat().st_size != size:
            raise AssertionError(f"no verified blob at {stored}")

        base_tp, ours_tp = size / base_s / MiB, size / ours_s / MiB
        ratio = ours_tp / base_tp
        return [
            Row(
                key="ingest",
                scenario=f"{TITLE} ({human_bytes(size)})",
                figure=f"{ours_tp:.0f} MiB/s",
                baseline=f"{base_tp:.0f} MiB/s (shutil.copyfile)",
                ratio=ratio,
                ratio_label="x",
                target=">= 0.7x",
                passed=ratio >= 0.7,
                notes=[
                    "client streams with sendfile; time = request start to 204 (stored+verified)"
                ],
                data={"bytes": size, "ours_s": ours_s, "base_s": base_s},
            )
        ]
    finally:
        ctx.cleanup(root)
