"""What the Manager offers for jobs: its job types and worker tags, fetched off Blender's
main thread and kept for the session. No bpy.

The panel draws from `current`; a Refresh (or the first Submit) replaces it. Fetching is
explicit rather than on every draw: draw() must stay free of side effects, and an artist
working offline should not have Blender contact a Manager they did not ask for.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ..engine import SubmitError
from ..engine.flamenco.api import FlamencoAPI
from ..engine.flamenco.jobtypes import JobType

DEFAULT_JOB_TYPE = "simple-blender-render"


@dataclass(frozen=True)
class WorkerTag:
    id: str
    name: str
    description: str = ""


@dataclass(frozen=True)
class Catalog:
    """One Manager's job types and worker tags, as fetched."""

    manager_url: str
    job_types: tuple[JobType, ...]
    worker_tags: tuple[WorkerTag, ...] = ()

    def job_type(self, name: str) -> JobType | None:
        return next((t for t in self.job_types if t.name == name), None)

    def unknown_type_message(self, name: str) -> str:
        offered = ", ".join(t.name for t in self.job_types) or "none"
        return f"The Manager has no job type '{name}' (it offers: {offered})"


def _worker_tag(raw: dict) -> WorkerTag:
    return WorkerTag(
        str(raw.get("id", "")), str(raw.get("name", "")), str(raw.get("description", ""))
    )


def fetch(url: str, token: str | None = None) -> Catalog:
    """Ask the Manager at `url`; raises SubmitError with a one-line reason."""
    api = FlamencoAPI(url, token=token or None)
    try:
        job_types = tuple(api.job_types())
        tags = tuple(_worker_tag(tag) for tag in api.worker_tags())
    finally:
        api.close()
    return Catalog(url, job_types, tags)


class CatalogFetch:
    """fetch() in a daemon thread; the main thread polls `done` and reads the outcome."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url
        self.catalog: Catalog | None = None
        self.error: str | None = None
        self.cancelled = False  # the artist gave up waiting; whoever started it stops
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(token,), name="flamenco-shaman-job-types", daemon=True
        )

    def start(self) -> CatalogFetch:
        self._thread.start()
        return self

    def _run(self, token: str | None) -> None:
        try:
            self.catalog = fetch(self.url, token)
        except SubmitError as ex:
            self.error = str(ex)
        except Exception as ex:  # a bug must still end the fetch and free the panel
            self.error = f"Unexpected error fetching job types: {ex}"
        finally:
            self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def waiting(self) -> bool:
        """Still running and still wanted."""
        return not self.done and not self.cancelled

    def cancel(self) -> None:
        # The HTTP call can't be interrupted; it is bounded by the client's timeouts and
        # its answer is ignored.
        self.cancelled = True


current: Catalog | None = None
last_error: str | None = None
pending: CatalogFetch | None = None  # the fetch the panel shows as under way


def start_fetch(url: str, token: str | None = None) -> CatalogFetch:
    """A fetch in its thread, shown by the panel (with Cancel) until it ends."""
    global pending
    pending = CatalogFetch(url, token).start()
    return pending


def for_url(url: str) -> Catalog | None:
    """The catalog if it came from this Manager; another Manager's types don't apply."""
    return current if current is not None and current.manager_url == url else None


def publish(done: CatalogFetch) -> Catalog | None:
    """Keep a finished fetch's outcome for the panel; the catalog, or None on failure."""
    global current, last_error
    if done.catalog is not None:
        current, last_error = done.catalog, None
    else:
        last_error = done.error
    return done.catalog
