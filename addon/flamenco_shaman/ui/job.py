"""The one submission the add-on runs at a time: a worker thread over the engine.

No bpy in here: the worker thread must never touch Blender data, and keeping this
module bpy-free makes that impossible by construction. The operator hands in plain
values, the worker publishes progress into this object, and Blender's main thread
reads it from a timer and from the panel's draw().
"""

from __future__ import annotations

import logging
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

from ..engine import Progress, Submission, SubmitCancelled, SubmitError, SubmitOptions, SubmitResult
from ..engine.checkout_path import default_checkout_path, sanitize_checkout_path
from ..engine.flamenco.job import JobSpec

log = logging.getLogger(__name__)

TEMP_PREFIX = ".flamenco_shaman-"


def checkout_path_for(name: str, original_blend: Path) -> str:
    """The checkout path: the artist's name for it (made valid), else blend name + time."""
    name = name.strip()
    return sanitize_checkout_path(name) if name else default_checkout_path(original_blend)


def checkout_placeholder(original_blend: Path) -> str:
    """What the empty checkout-name field stands for, shown greyed out in the panel."""
    return f"{sanitize_checkout_path(original_blend.stem)}-<date>-<time>"


def temp_copy_path(original: Path) -> Path:
    """Where to save the temporary copy: next to the original, so `//` paths still resolve.

    Hidden and randomised, so it never collides with the artist's files or another Blender.
    """
    return original.with_name(f"{TEMP_PREFIX}{original.stem}-{secrets.token_hex(4)}.blend")


@dataclass(frozen=True)
class JobRequest:
    """Everything a submission needs, gathered on Blender's main thread."""

    original_blend: Path
    temp_blend: Path | None  # None: send the original as it is on disk (nothing unsaved)
    manager_url: str
    checkout_path: str
    project_root: Path | None = None
    relative_only: bool = False
    uploads: int = 4
    token: str | None = None
    job: JobSpec | None = None  # the render job to create once the files are on the farm


class SubmitJob:
    """One run of the engine on a temporary copy; removes that copy whatever happens.

    Never deletes the original: only `request.temp_blend` is ever removed.
    """

    def __init__(self, request: JobRequest) -> None:
        self.request = request
        self.progress: Progress | None = None
        self.result: SubmitResult | None = None
        self.error: str | None = None
        self.cancelled = False
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._submission = Submission(self._options(), progress=self._on_progress)

    def _options(self) -> SubmitOptions:
        req = self.request
        return SubmitOptions(
            blendfile=req.temp_blend or req.original_blend,
            manager_url=req.manager_url,
            project_root=req.project_root,
            checkout_path=req.checkout_path,
            relative_only=req.relative_only,
            uploads=req.uploads,
            token=req.token or None,
            # The copy has a hidden random name; the farm should see the artist's file name.
            pack_blend_name=req.original_blend.name if req.temp_blend else None,
            job=req.job,
        )

    def _on_progress(self, progress: Progress) -> None:
        # Called from engine worker threads; a reference assignment is atomic.
        self.progress = progress

    @property
    def running(self) -> bool:
        return not self._done.is_set()

    def start(self) -> None:
        """Run in a daemon thread, so quitting Blender never waits for an upload."""
        self._thread = threading.Thread(target=self.run, name="flamenco-shaman-submit", daemon=True)
        self._thread.start()

    def run(self) -> None:
        """Run to completion in the calling thread; outcome lands in result/error/cancelled."""
        temp = self.request.temp_blend
        try:
            self.result = self._submission.run()
        except SubmitCancelled:
            self.cancelled = True
        except SubmitError as ex:
            self.error = str(ex)
        except Exception as ex:  # an engine bug must still end the job and free the UI
            log.exception("Submission failed unexpectedly")
            self.error = f"Unexpected error: {ex}"
        finally:
            if temp is not None:
                temp.unlink(missing_ok=True)
            _publish(self)
            self._done.set()

    def cancel(self, wait: float = 0.0) -> None:
        """Ask the engine to stop; optionally wait (bounded) for the worker to wind down."""
        self._submission.cancel()
        if wait:
            self._done.wait(wait)


current: SubmitJob | None = None
last_result: SubmitResult | None = None
last_error: str | None = None


def _publish(job: SubmitJob) -> None:
    """Keep the outcome where the panel and scripts find it, even if no operator is watching."""
    global last_result, last_error
    last_result = job.result
    last_error = job.error or ("Submission cancelled" if job.cancelled else None)


def cancel_current(wait: float = 2.0) -> None:
    """Stop the running submission, if any (add-on disabled, another file loaded)."""
    job = current
    if job is not None and job.running:
        job.cancel(wait=wait)


def shutdown() -> None:
    """Blender is quitting: cancel briefly, never wait long, leave no temporary copy behind."""
    job = current
    if job is not None and job.running:
        job.cancel(wait=2.0)
        # Still stuck (e.g. in a network call)? The daemon thread dies with the process;
        # remove the copy ourselves.
        if job.request.temp_blend is not None:
            job.request.temp_blend.unlink(missing_ok=True)


PHASE_LABELS = {
    "tracing": "Finding assets",
    "hashing": "Checksumming",
    "uploading": "Uploading",
    "checkout": "Creating checkout",
    "job": "Creating the render job",
    "done": "Done",
}


def format_bytes(count: int) -> str:
    """Human-readable size with one decimal, binary units (what file managers show)."""
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def progress_factor(progress: Progress | None) -> float:
    """0..1 for a progress bar: by bytes when known, else by files."""
    if progress is None:
        return 0.0
    if progress.bytes_total:
        return min(1.0, progress.bytes_done / progress.bytes_total)
    if progress.files_total:
        return min(1.0, progress.files_done / progress.files_total)
    return 0.0


def progress_text(progress: Progress | None) -> str:
    """One line: phase, files and bytes, e.g. "Uploading: 3/10 files, 1.0/4.0 MiB"."""
    if progress is None:
        return "Starting"
    phase = PHASE_LABELS.get(progress.phase, progress.phase.capitalize())
    if not progress.files_total:
        return phase
    text = f"{phase}: {progress.files_done}/{progress.files_total} files"
    if progress.bytes_total:
        text += f", {format_bytes(progress.bytes_done)} / {format_bytes(progress.bytes_total)}"
    return text
