"""Submission: one blend file onto the farm. Checks the manager, traces, runs the
hash/upload pipeline, creates the checkout; reports progress and can be cancelled."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from .cache import ChecksumCache
from .checkout_path import checkout_path_problem, default_checkout_path
from .client import CheckoutIncomplete, ManagerClient
from .errors import SubmitCancelled, SubmitError
from .options import SubmitOptions, SubmitResult
from .pipeline import Pipeline
from .progress import ProgressCallback, ProgressTracker
from .trace import Tracer
from .trace_cache import TraceCache

log = logging.getLogger(__name__)


class Submission:
    """Run once with run() (blocking); cancel() from any thread."""

    def __init__(
        self,
        options: SubmitOptions,
        progress: ProgressCallback | None = None,
        cache: ChecksumCache | None = None,
    ) -> None:
        self.options = options
        self._tracker = ProgressTracker(progress)
        self._cache = cache
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._tracer: Tracer | None = None
        self._started = False

    def cancel(self) -> None:
        """Thread-safe; run() raises SubmitCancelled within about a second."""
        self._cancel.set()
        with self._lock:
            tracer = self._tracer
        if tracer is not None:
            tracer.abort()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def run(self) -> SubmitResult:
        with self._lock:
            if self._started:
                raise RuntimeError("a Submission runs only once")
            self._started = True
        opts = self.options
        blendfile = Path(opts.blendfile)
        project = Path(opts.project_root) if opts.project_root else blendfile.parent
        checkout_path = opts.checkout_path or default_checkout_path(blendfile)
        problem = checkout_path_problem(checkout_path)
        if problem:
            raise SubmitError(f"invalid checkout path {checkout_path!r}: {problem}")
        if blendfile.is_dir():
            raise SubmitError(f"{blendfile} is a directory; give the path of a .blend file")
        if not blendfile.is_file():
            raise SubmitError(f"blend file not found: {blendfile}")
        if not project.is_dir():
            raise SubmitError(f"project directory not found: {project}")

        self._tracker.set_phase("tracing")
        client = ManagerClient(opts.manager_url, opts.token)
        cache = self._cache if self._cache is not None else ChecksumCache()
        try:
            client.version()
            client.configuration()
            self._check_cancel()
            tracer = Tracer(
                blendfile,
                project,
                relative_only=opts.relative_only,
                exclude=opts.exclude,
                cancel=self._cancel,
                pack_blend_name=opts.pack_blend_name,
                cache=TraceCache() if opts.trace_cache else None,
            )
            with self._lock:
                self._tracer = tracer
            pipeline = Pipeline(
                client,
                cache=cache,
                tracker=self._tracker,
                cancel=self._cancel,
                hash_workers=opts.hash_workers,
                uploads=opts.uploads,
                batch_max_file_size=opts.batch_max_file_size if opts.batch_uploads else -1,
            )
            # Close order matters: the pipeline stops reading files before BAT deletes
            # its rewritten copies.
            with tracer, pipeline:
                try:
                    tracer.run(pipeline.add, pipeline.add_many)
                except SubmitError:
                    pipeline.check()  # a pipeline failure is the real reason BAT stopped
                    raise
                self._tracker.set_phase("hashing")
                pipeline.finish()
                self._check_cancel()
                self._tracker.set_phase("checkout")
                used = self._checkout(client, pipeline, checkout_path)
                files_hashed = pipeline.files_hashed
        finally:
            client.close()
            cache.save()
            with self._lock:
                self._tracer = None

        tracker = self._tracker
        result = SubmitResult(
            checkout_path=used,
            farm_blend_path=f"{{jobs}}/{used}/{tracer.blend_pack_path}",
            missing_files=list(tracer.missing_files),
            excluded_files=list(tracer.excluded_files),
            files_total=tracker.files_total,
            bytes_total=tracker.bytes_total,
            files_uploaded=tracker.files_uploaded,
            bytes_uploaded=tracker.bytes_uploaded,
            files_hashed=files_hashed,
        )
        tracker.set_phase("done")
        return result

    def _checkout(self, client: ManagerClient, pipeline: Pipeline, checkout_path: str) -> str:
        optimistic = not pipeline.negotiated
        try:
            used = client.create_checkout(pipeline.checkout_files(), checkout_path)
            pipeline.settle_held()
            return used
        except CheckoutIncomplete:
            if optimistic:
                log.info("the manager lacks files known from an earlier submission; sending them")
            else:
                log.info("checkout refused with 424; sending the missing files once more")
        self._tracker.set_phase("uploading")
        pipeline.resend_all()
        self._check_cancel()
        self._tracker.set_phase("checkout")
        try:
            return client.create_checkout(pipeline.checkout_files(), checkout_path)
        except CheckoutIncomplete as ex:
            raise SubmitError(f"{ex} (even after sending them again)") from None

    def _check_cancel(self) -> None:
        if self._cancel.is_set():
            raise SubmitCancelled()
