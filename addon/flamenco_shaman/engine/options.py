"""What a submission is asked to do (SubmitOptions) and what it reports back (SubmitResult)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .flamenco.job import JobSpec


@dataclass
class SubmitOptions:
    """Everything one submission needs; only blendfile and manager_url are required."""

    blendfile: Path
    manager_url: str
    project_root: Path | None = None  # default: the blend file's directory
    checkout_path: str | None = None  # default: blend name + timestamp
    relative_only: bool = False
    exclude: Sequence[str] = ()  # glob patterns, matched by BAT against absolute paths
    hash_workers: int | None = None  # default: os.cpu_count()
    uploads: int = 4  # parallel upload connections
    # Small files go many to a request when the manager has our batch extension
    # (falls back to one request per file otherwise); False = Flamenco's way only.
    batch_uploads: bool = True
    batch_max_file_size: int = 1 << 20  # bytes; bigger files always get their own request
    token: str | None = None  # sent as "Authorization: Bearer <token>"
    pack_blend_name: str | None = None  # file name of the blend in the checkout (same folder)
    trace_cache: bool = True  # reuse the last trace while no blend or asset folder changed
    # The render job to create after the checkout (Flamenco's Submit); None: upload and
    # check out only.
    job: JobSpec | None = None


@dataclass
class SubmitResult:
    """Where the job's copy of the blend lives, what it took to get it there, and the
    render job created for it (None when SubmitOptions.job was None)."""

    checkout_path: str  # as used by the manager, relative to its jobs directory
    farm_blend_path: str  # "{jobs}/<checkout_path>/<blend path in pack>"
    missing_files: list[str] = field(default_factory=list)
    excluded_files: list[str] = field(default_factory=list)  # matched an `exclude` pattern
    files_total: int = 0
    bytes_total: int = 0
    files_uploaded: int = 0
    bytes_uploaded: int = 0
    files_hashed: int = 0  # read from disk; the rest came from the checksum cache
    job_id: str | None = None
    job_name: str | None = None
    job_url: str | None = None  # the job in the Manager's web UI: <manager>/app/jobs/<id>
    # The manager's word on the checkout, one line each: names Windows/macOS workers
    # cannot hold (shaman.portableNames: warn). Empty from Flamenco's own Manager.
    warnings: list[str] = field(default_factory=list)
