"""`ShamanService`: the core's one front door, as Go's `shaman.Server` is.

It owns one storage's file store, checkout builder, lock and collector and offers
every operation a protocol needs: requirements, file status, receive (one file or a
batch), create checkout, checkout when uploaded, erase checkout and collect garbage.
The HTTP layer (and anyone embedding Shaman in another manager) uses only this; it
never reaches into the parts. Everything here is blocking filesystem work except the
`async` methods; async callers run the rest in threads.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .bodypace import BodyPace
from .checkout import CheckoutBuilder
from .config import Config
from .errors import InvalidPath, MissingFiles
from .fstree import remove_tree
from .gc import GarbageCollector, SweepStats
from .locking import StorageLock
from .models import FileSpec, FileStatus
from .paths import validate_checkout_path
from .portable import portability_problems, summary
from .protocol import JOBS_ROOT
from .store import FileStore, IncomingSmall, Reader, Received
from .store.batch_receive import BatchReceiver

if TYPE_CHECKING:
    from .store import SocketSource

log = logging.getLogger(__name__)


# Checking again for files other clients are still uploading, this often.
UPLOADS_POLL_SECONDS = 0.2


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

    def file_status(self, sha: str, size: int) -> FileStatus:
        """Whether one file is stored, being uploaded or unknown (a question: no touch)."""
        return self.store.status(sha, size)

    def is_uploading(self, sha: str, size: int) -> bool:
        return self.store.is_uploading(sha, size)

    async def receive(
        self,
        sha: str,
        size: int,
        read: Reader,
        *,
        can_defer: bool = False,
        source: SocketSource | None = None,
    ) -> Received:
        """Stream one file's body into the store (see `FileStore.receive`): stored by this
        call, or already stored (maybe by a concurrent upload that finished first)."""
        return await self.store.receive(sha, size, read, can_defer=can_defer, source=source)

    def expect_small(self, sha: str, size: int) -> IncomingSmall | None:
        """A small upload whose body is in hand or on its way, registered as in flight
        (see `FileStore.expect_small`); None, with nothing done, when it must go through
        `receive`."""
        return self.store.expect_small(sha, size)

    def batch_receiver(self, read: Reader, pace: BodyPace | None) -> BatchReceiver:
        """A reader of one batch-upload body that stores its records as they complete."""
        return BatchReceiver(self.store, read, self.config.body_read_timeout, pace)

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
        # JOBS_ROOT becomes ".-xxxx" (a portable name): only the files' names are checked.
        checkout_path = "" if checkout_path == JOBS_ROOT else validate_checkout_path(checkout_path)
        problems = portability_problems(
            checkout_path, [spec.path for spec in files if isinstance(spec.path, str)]
        )
        if not problems:
            return []
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        if mode == "refuse":
            raise InvalidPath(
                "files",
                f"not portable to Windows/macOS workers (shaman.portableNames is "
                f"refuse): {problems[0]}{more}",
            )
        log.warning(
            "checkout %s: %d names are not portable to Windows/macOS workers: %s%s",
            checkout_path,
            len(problems),
            problems[0],
            more,
        )
        return summary(problems)

    async def checkout_when_uploaded(
        self, checkout_path: str, files: Sequence[FileSpec], wait_seconds: float
    ) -> CheckoutResult:
        """Create the checkout, first waiting up to `wait_seconds` while files it lacks
        are still being uploaded by other clients; MissingFiles when they don't arrive.

        For clients that never retry a file they were told to defer (BAT, Flamenco's
        v1 add-on): they ask for the checkout right after their own uploads.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        while True:
            try:
                return await asyncio.to_thread(self.create_checkout, checkout_path, files)
            except MissingFiles as exc:
                missing = {(spec.sha, spec.size) for spec in exc.files}
                waited = False
                while loop.time() < deadline:
                    busy = [key for key in missing if self.store.is_uploading(*key)]
                    if not busy:
                        break
                    if not waited:
                        log.info(
                            "checkout %r waits for %d files still being uploaded",
                            checkout_path,
                            len(busy),
                        )
                        waited = True
                    await asyncio.sleep(UPLOADS_POLL_SECONDS)
                if not waited:
                    raise

    def erase_checkout(self, checkout_path: str) -> bool:
        """Remove a checkout directory, True when it is gone (blobs stay: GC sees to them).

        A checkout path whose parent resolves outside jobs/ (a symlink) is an InvalidPath;
        the checkout itself, if a symlink, is unlinked, never followed.
        """
        checkout_path = validate_checkout_path(checkout_path)
        jobs = os.path.realpath(self.config.jobs_path)
        target = os.path.join(jobs, checkout_path)
        parent = os.path.realpath(os.path.dirname(target))
        if os.path.commonpath([jobs, parent]) != jobs:
            raise InvalidPath("checkoutPath", f"{checkout_path!r} resolves outside jobs/")
        with self.lock.shared():
            return remove_tree(target)

    def collect_garbage(self, dry_run: bool = False) -> SweepStats:
        """One sweep: remove blobs older than the max age that no checkout links to."""
        return self.gc.sweep(dry_run=dry_run)
