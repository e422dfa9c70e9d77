"""Flamenco 3's jobs API around Shaman: version, shared storage, job types, worker tags,
job check, job submission and deletion. Every failure is a SubmitError whose str() is one
line naming the Manager and the reason.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import requests

from ..client import ManagerClient, response_message
from ..errors import SubmitError
from .job import submitter_platform
from .jobtypes import JobType, parse_job_types


class JobRefused(SubmitError):
    """jobs/check or jobs answered 400: the Manager's job compiler refused the job."""

    def __init__(self, reason: str, manager_url: str = "") -> None:
        self.reason = reason
        where = f" at {manager_url}" if manager_url else ""
        super().__init__(f"the Manager{where} refused the job: {reason}")


class JobTypeChanged(SubmitError):
    """412: the job type changed on the Manager since it was fetched (stale type_etag)."""


class JobTypeUnknown(SubmitError):
    """The Manager has no job type of that name."""


class FlamencoAPI:
    """One Manager's jobs API; not shared between threads (one requests.Session)."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        self._client = ManagerClient(base_url, token)
        self.url = self._client.url  # with a trailing slash

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> FlamencoAPI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def job_url(self, job_id: str) -> str:
        """Where the Manager's web UI shows the job."""
        return f"{self.url}app/jobs/{urllib.parse.quote(job_id)}"

    # --- information -------------------------------------------------------

    def version(self) -> dict[str, Any]:
        return self._client.version()

    def shared_storage(self, platform: str | None = None) -> dict[str, Any]:
        """The shared storage as the artists' platform sees it; {location, shamanEnabled, ...}."""
        plat = urllib.parse.quote(platform or submitter_platform(), safe="")
        body = self._get(f"configuration/shared-storage/users/{plat}", "asking its shared storage")
        if not isinstance(body, dict) or "shamanEnabled" not in body:
            raise SubmitError(f"the Manager at {self.url} sent an unreadable shared-storage answer")
        return body

    def job_types(self) -> list[JobType]:
        return parse_job_types(self._get("jobs/types", "asking its job types"))

    def job_type(self, name: str) -> JobType:
        """The named type from the Manager's current list; JobTypeUnknown when it has none."""
        types = self.job_types()
        for job_type in types:
            if job_type.name == name:
                return job_type
        known = ", ".join(t.name for t in types) or "none"
        raise JobTypeUnknown(
            f"the Manager at {self.url} has no job type {name!r} (it has: {known})"
        )

    def worker_tags(self) -> list[dict[str, Any]]:
        body = self._get("worker-mgt/tags", "asking its worker tags")
        tags = body.get("tags") if isinstance(body, dict) else None
        return [t for t in tags or [] if isinstance(t, dict)]

    # --- jobs --------------------------------------------------------------

    def check_job(self, job: dict[str, Any]) -> None:
        """POST jobs/check: None when the Manager would accept the job."""
        response = self._client.send(
            "POST", "jobs/check", json=job, what="checking the job", retry=True
        )
        self._raise_for_job_answer(response, "checking the job")

    def submit_job(self, job: dict[str, Any]) -> dict[str, Any]:
        """POST jobs: the created job (with its `id`)."""
        response = self._client.send("POST", "jobs", json=job, what="creating the job", retry=False)
        self._raise_for_job_answer(response, "creating the job")
        try:
            created = response.json()
        except ValueError:
            created = None
        if not isinstance(created, dict) or not isinstance(created.get("id"), str):
            raise SubmitError(f"the Manager at {self.url} sent an unreadable answer to the new job")
        return created

    def delete_job(self, job_id: str) -> None:
        path = f"jobs/{urllib.parse.quote(job_id, safe='')}"
        response = self._client.send("DELETE", path, what="deleting the job", retry=True)
        self._raise_for_job_answer(response, "deleting the job")

    # --- plumbing ----------------------------------------------------------

    def _get(self, path: str, what: str) -> Any:
        response = self._client.send("GET", path, what=what, retry=True)
        if response.status_code == 503:
            raise SubmitError(f"the Manager at {self.url} is busy (503 when {what})")
        self._client.raise_for_status(response, what)
        try:
            return response.json()
        except ValueError:
            raise SubmitError(
                f"{self.url} does not look like a Flamenco Manager (no JSON when {what})"
            ) from None

    def _raise_for_job_answer(self, response: requests.Response, what: str) -> None:
        status = response.status_code
        if status < 300:
            return
        if status == 400:
            raise JobRefused(response_message(response), self.url)
        if status == 412:
            raise JobTypeChanged(
                f"the job type changed on the Manager at {self.url}; refresh the job types"
            )
        if status == 503:
            raise SubmitError(f"the Manager at {self.url} is busy (503 when {what})")
        self._client.raise_for_status(response, what)
