"""`ShamanService`: one storage's file store, checkout builder, lock and collector.

This is the core's front door for the HTTP layer (and for anyone embedding
Shaman in another manager). Everything here is blocking filesystem work except
`FileStore.receive`; async callers run the rest in threads.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .checkout import CheckoutBuilder
from .config import Config
from .errors import InvalidPath
from .store import FileStore
from .gc import GarbageCollector, SweepStats
from .locking import StorageLock
from .models import FileSpec, FileStatus
from .paths import validate_checkout_path
from .portable import portability_problems, summary

log = logging.getLogger(__name__)


@dataclass
class CheckoutResult:
    """A checkout made: its path relative to jobs/, and what the artist should know."""

    path: str
    warnings: list[str] = field(default_factory=list)


class ShamanService:
    """The Shaman parts of a manager, wired to one `Config`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.lock = StorageLock(config.file_store_path / ".lock")
        self.store = FileStore(
            config.storage_path, body_read_timeout=config.body_read_timeout, tuning=config.tuning
        )
        self.checkouts = CheckoutBuilder(
            self.store,
            config.jobs_path,
            self.lock,
            absolute_symlinks=config.absolute_symlinks,
            reuse_links=config.tuning.reuse_links,
        )
        self.gc = GarbageCollector(
            self.store,
            config.jobs_path,
            self.lock,
            max_age=config.gc_max_age,
            extra_checkout_paths=config.gc_extra_checkout_paths,
        )

    def close(self) -> None:
        """Stop the worker threads of the store and the checkout builder."""
        self.store.close()
        self.checkouts.close()

    def prepare_storage(self) -> None:
        """Create the storage layout and remove temp files left by dead uploads."""
        self.store.ensure_dirs()
        self.config.jobs_path.mkdir(parents=True, exist_ok=True)
        # At startup no age margin is needed beyond the flock test: any upload of
        # this process is gone, and live uploads of other processes hold their lock.
        removed = self.store.remove_stale_temps(min_age=0)
        if removed:
            log.info("removed %d stale upload temp files", len(removed))

    def requirements(self, files: Iterable[FileSpec]) -> list[tuple[FileSpec, FileStatus]]:
        """Files the client must act on, each (sha, size) once; stored ones get touched."""
        first: dict[tuple[str, int], FileSpec] = {}
        for spec in files:
            first.setdefault((spec.sha, spec.size), spec)
        statuses = self.store.touch_statuses(first)
        return [
            (spec, status)
            for spec, status in zip(first.values(), statuses, strict=True)
            if status != "stored"
        ]

    def create_checkout(self, checkout_path: str, files: Sequence[FileSpec]) -> CheckoutResult:
        """Build a checkout under the `portableNames` policy (see `_portable_names`)."""
        warnings = self._portable_names(checkout_path, files)
        return CheckoutResult(self.checkouts.create(checkout_path, files), warnings)

    def _portable_names(self, checkout_path: str, files: Sequence[FileSpec]) -> list[str]:
        """Names Windows/macOS workers cannot hold: with `refuse` an InvalidPath (400)
        naming the first, with `warn` the list (for the answer, and logged), else []."""
        mode = self.config.portable_names
        if mode == "off":
            return []
        checkout_path = validate_checkout_path(checkout_path)
        problems = portability_problems(
            checkout_path, [spec.path for spec in files if isinstance(spec.path, str)]
        )
        if not problems:
            return []
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        if mode == "refuse":
            raise InvalidPath(
                f"files: not portable to Windows/macOS workers (shaman.portableNames is "
                f"refuse): {problems[0]}{more}"
            )
        log.warning(
            "checkout %s: %d names are not portable to Windows/macOS workers: %s%s",
            checkout_path,
            len(problems),
            problems[0],
            more,
        )
        return summary(problems)

    def collect_garbage(self, dry_run: bool = False) -> SweepStats:
        return self.gc.sweep(dry_run=dry_run)
