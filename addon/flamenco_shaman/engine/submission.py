"""Submission: one blend file onto the farm. Checks the manager, traces, runs the
hash/upload pipeline, creates the checkout and then, when asked, the render job (as
Flamenco's Submit does); reports progress and can be cancelled.

With a job, the order is Flamenco's: version and shared storage (Shaman must be on),
the job type, its required settings and `jobs/check` come before anything is uploaded,
so a job the Manager would refuse costs no upload; the job is created only after the
checkout holds every file, so no job ever points at files that are not there.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cache import ChecksumCache
from .checkout_path import checkout_path_problem, default_checkout_path
from .client import Checkout, CheckoutIncomplete, ManagerClient
from .errors import SubmitCancelled, SubmitError
from .flamenco.api import FlamencoAPI, JobTypeChanged
from .flamenco.evaluate import fill_settings
from .flamenco.job import CHECK_BLENDFILE, JobSpec, submitted_job
from .flamenco.jobtypes import JobType
from .options import SubmitOptions, SubmitResult
from .pipeline import Pipeline
from .progress import ProgressCallback, ProgressTracker
from .trace import Tracer
from .trace_cache import TraceCache

log = logging.getLogger(__name__)


@dataclass
class PreparedJob:
    """A job the Manager accepted in jobs/check: its type as checked and its settings."""

    spec: JobSpec
    job_type: JobType
    name: str
    settings: dict[str, Any]

    def body(self, blendfile: str, checkout_id: str | None = None) -> dict[str, Any]:
        return submitted_job(
            self.spec,
            self.job_type,
            name=self.name,
            settings=self.settings,
            blendfile=blendfile,
            checkout_id=checkout_id,
        )


def check_local_inputs(opts: SubmitOptions) -> tuple[Path, Path, str]:
    """The blend file, project root and checkout path, or a one-line SubmitError for a
    mistake that needs no Manager to see (checked before anything is asked or sent)."""
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
    return blendfile, project, checkout_path


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
        blendfile, project, checkout_path = check_local_inputs(opts)

        self._tracker.set_phase("tracing")
        client = ManagerClient(opts.manager_url, opts.token)
        jobs_api = FlamencoAPI(opts.manager_url, opts.token) if opts.job is not None else None
        cache = self._cache if self._cache is not None else ChecksumCache.for_project(project)
        prepared: PreparedJob | None = None
        created: dict[str, Any] | None = None
        try:
            client.version()
            if jobs_api is not None and opts.job is not None:
                blend_name = opts.pack_blend_name or blendfile.name
                prepared = self._prepare_job(jobs_api, opts.job, Path(blend_name).stem)
            else:
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
                made = self._checkout(client, pipeline, checkout_path)
                used = made.path
                files_hashed = pipeline.files_hashed
            farm_blend_path = f"{{jobs}}/{used}/{tracer.blend_pack_path}"
            if jobs_api is not None and prepared is not None:
                self._tracker.set_phase("job")
                self._check_cancel()
                created = self._create_job(jobs_api, prepared, used, farm_blend_path)
        finally:
            client.close()
            if jobs_api is not None:
                jobs_api.close()
            cache.save()
            with self._lock:
                self._tracer = None

        tracker = self._tracker
        result = SubmitResult(
            checkout_path=used,
            farm_blend_path=farm_blend_path,
            missing_files=list(tracer.missing_files),
            excluded_files=list(tracer.excluded_files),
            files_total=tracker.files_total,
            bytes_total=tracker.bytes_total,
            files_uploaded=tracker.files_uploaded,
            bytes_uploaded=tracker.bytes_uploaded,
            files_hashed=files_hashed,
            warnings=list(made.warnings),
        )
        if created is not None and jobs_api is not None:
            result.job_id = str(created["id"])
            result.job_name = str(created.get("name") or (prepared.name if prepared else ""))
            result.job_url = jobs_api.job_url(result.job_id)
        tracker.set_phase("done")
        return result

    def _prepare_job(self, api: FlamencoAPI, spec: JobSpec, blend_stem: str) -> PreparedJob:
        """Shaman on, the job type known, its settings complete, the job acceptable to the
        Manager: all before any upload. A 412 (type changed) refetches it and checks again."""
        storage = api.shared_storage()
        if not storage.get("shamanEnabled"):
            raise SubmitError(
                f"Shaman is disabled on the Manager at {api.url}; enable it in its "
                "configuration (shaman.enabled) to submit from here"
            )
        self._check_cancel()
        name = spec.name.strip() or blend_stem
        prepared = self._prepared(api, spec, name)
        self._check_cancel()
        try:
            api.check_job(prepared.body(CHECK_BLENDFILE))
        except JobTypeChanged:
            log.info("job type %r changed on the Manager; fetching it again", spec.type)
            prepared = self._prepared(api, spec, name)
            self._check_cancel()
            api.check_job(prepared.body(CHECK_BLENDFILE))  # a second 412 is an error
        return prepared

    @staticmethod
    def _prepared(api: FlamencoAPI, spec: JobSpec, name: str) -> PreparedJob:
        """The type as the Manager has it now, and the spec's settings completed for it."""
        job_type = api.job_type(spec.type)
        settings = fill_settings(job_type, spec.settings, evaluate=False).require_complete()
        return PreparedJob(spec, job_type, name, settings)

    def _create_job(
        self, api: FlamencoAPI, prepared: PreparedJob, checkout_id: str, farm_blend_path: str
    ) -> dict[str, Any]:
        """POST the job for the checkout; a clear message and no job when that fails."""
        try:
            try:
                return api.submit_job(prepared.body(farm_blend_path, checkout_id))
            except JobTypeChanged:
                # Changed between check and now: same settings, the type's current etag.
                again = self._prepared(api, prepared.spec, prepared.name)
                return api.submit_job(again.body(farm_blend_path, checkout_id))
        except SubmitError as ex:
            raise SubmitError(
                f"no job was created: {ex} (the files are on the farm at {farm_blend_path})"
            ) from None

    def _checkout(self, client: ManagerClient, pipeline: Pipeline, checkout_path: str) -> Checkout:
        optimistic = pipeline.optimistic
        try:
            made = client.create_checkout(pipeline.checkout_files(), checkout_path)
            pipeline.checkout_accepted()
            return made
        except CheckoutIncomplete:
            if optimistic:
                log.info("the manager lacks files known from an earlier submission; sending them")
            else:
                log.info("checkout refused with 424; sending the missing files once more")
        self._tracker.set_phase("uploading")
        pipeline.renegotiate_all()
        self._check_cancel()
        self._tracker.set_phase("checkout")
        try:
            return client.create_checkout(pipeline.checkout_files(), checkout_path)
        except CheckoutIncomplete as ex:
            raise SubmitError(f"{ex} (even after sending them again)") from None

    def _check_cancel(self) -> None:
        if self._cancel.is_set():
            raise SubmitCancelled()
