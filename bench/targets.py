"""The only place that knows our implementation's APIs: engine, file store, checkout, GC.

Scenarios call these thin wrappers, so an API change touches one file. A part that has not
landed yet raises NotAvailable, which the run reports as an error row, never a silent pass.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any


class NotAvailable(RuntimeError):
    """Our implementation of this part cannot be imported (yet)."""


def _engine() -> Any:
    try:
        from flamenco_shaman import engine
    except ImportError as exc:  # pragma: no cover - depends on what has landed
        raise NotAvailable(f"submission engine: {exc}") from exc
    if not hasattr(engine, "Submission"):
        raise NotAvailable("submission engine: flamenco_shaman.engine.Submission missing")
    return engine


class PhaseClock:
    """Progress callback that notes when each phase was first reported (phases overlap)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.first_seen: dict[str, float] = {}

    def __call__(self, progress: Any) -> None:
        self.first_seen.setdefault(progress.phase, time.perf_counter() - self.start)

    def summary(self, total: float) -> str:
        """E.g. "tracing 1.20 s, hashing 0.30 s, checkout 0.50 s" from phase start to start."""
        marks = sorted(self.first_seen.items(), key=lambda kv: kv[1])
        parts = []
        for (name, at), nxt in zip(marks, [*marks[1:], ("end", total)], strict=True):
            if name != "done":
                parts.append(f"{name} {nxt[1] - at:.2f} s")
        return ", ".join(parts)


def submit(
    blend: Path,
    manager_url: str,
    checkout_path: str,
    *,
    project_root: Path | None = None,
    uploads: int | None = None,
    batch_uploads: bool | None = None,
    clock: PhaseClock | None = None,
) -> Any:
    """Run one Submission to the end; its SubmitResult. `clock` records phase times."""
    engine = _engine()
    kwargs: dict[str, Any] = {
        "blendfile": blend,
        "manager_url": manager_url,
        "project_root": project_root,
        "checkout_path": checkout_path,
    }
    if uploads is not None:
        kwargs["uploads"] = uploads
    if batch_uploads is not None:
        kwargs["batch_uploads"] = batch_uploads
    opts = engine.SubmitOptions(**kwargs)
    return engine.Submission(opts, progress=clock).run()


def hash_files(paths: Sequence[Path], workers: int | None = None) -> list[tuple[str, int]]:
    """The engine's hasher over these files, cold: (sha256 hex, size) per file, in order.

    The same work the submission pipeline does: `hashing.identify` (stat, stream in 1 MiB
    blocks, re-stat) on a thread pool of one worker per core, without the checksum cache.
    """
    _engine()
    from flamenco_shaman.engine.hashing import identify

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return [(i.sha, i.size) for i in pool.map(lambda p: identify(p, None), paths)]


def open_core(storage: Path, max_age_seconds: float | None = None) -> Any:
    """The manager's core for one storage (a ShamanService), wired as the server wires it.

    Made outside the timed region: setting it up is not part of a checkout or a sweep.
    """
    try:
        from manager_plugin.config import Config
        from manager_plugin.service import ShamanService
    except ImportError as exc:  # pragma: no cover - depends on what has landed
        raise NotAvailable(f"manager core: {exc}") from exc
    config = Config(storage_path=storage)
    if max_age_seconds is not None:
        config.gc_max_age = timedelta(seconds=max_age_seconds)
    service = ShamanService(config)
    service.prepare_storage()
    return service


def file_specs(files: Sequence[tuple[str, int, str]]) -> list[Any]:
    """(sha, size, path) tuples as the core's FileSpec values (what the HTTP layer passes)."""
    from manager_plugin.models import FileSpec

    return [FileSpec(*f) for f in files]


def checkout(core: Any, checkout_path: str, specs: Sequence[Any]) -> str:
    """CheckoutBuilder.create over FileSpecs (see file_specs); the checkout path used."""
    return core.checkouts.create(checkout_path, specs)


def gc_sweep(core: Any, dry_run: bool = False) -> str:
    """One garbage collection sweep (GarbageCollector.sweep); its summary."""
    return core.collect_garbage(dry_run=dry_run).summary()
