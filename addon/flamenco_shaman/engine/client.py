"""HTTP client for a Flamenco manager's Shaman API (`/api/v3`), one requests.Session each.

Every failure an artist can run into becomes a SubmitError with a one-line reason.
Uploads are the exception: their transport errors are raised as UploadInterrupted so
the uploader can retry them.

It speaks to this project's server and to Flamenco's own Go Manager alike, whose answers
differ from the spec: a stored upload is 200 (spec: 204), and a checkout of files the
store lacks is 500 "unknown files requested in checkout" (spec: 424).
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from .. import protocol
from .errors import SubmitError
from .http_text import (
    encode_original_filename,
    never_sent,
    response_message,
    short_reason,
    tls_failure,
)

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 300.0
RETRY_DELAYS = (0.2, 0.5, 1.0)  # for idempotent calls that hit a 5xx or a dropped connection


class UploadInterrupted(Exception):
    """The connection broke during an upload (the manager may have closed it on purpose)."""


class CheckoutIncomplete(SubmitError):
    """checkout/create found files the manager does not store (424, or Go's 500)."""


# Flamenco's Go Manager answers every checkout error with 500 and this message.
GO_UNKNOWN_FILES = "unknown files requested in checkout"


@dataclass
class Checkout:
    """A checkout the manager made: the path it used, and what the artist should know
    (names Windows/macOS workers cannot hold, when the manager checks them)."""

    path: str
    warnings: list[str] = field(default_factory=list)


def upload_stored(status: int) -> bool:
    """Whether an upload answer means "received and stored": 204 per the spec, 200 from
    Flamenco's Go server; any 2xx but 208 (already stored) counts."""
    return 200 <= status < 300 and status != 208


class ManagerClient:
    """Talks to one manager; not shared between threads (each thread makes its own)."""

    def __init__(self, url: str, token: str | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise SubmitError(f"the manager URL must start with http:// or https://: {url}")
        if not urllib.parse.urlsplit(url).hostname:
            raise SubmitError(f"the manager URL has no host name: {url!r}")
        self.url = url if url.endswith("/") else url + "/"
        self.api = self.url + "api/v3/"
        self.token = token
        self.session = requests.Session()
        adapter = HTTPAdapter(max_retries=0, pool_connections=1, pool_maxsize=1)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = "flamenco-shaman-submit"
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def clone(self) -> ManagerClient:
        """A client for another thread: same manager, own connection."""
        return ManagerClient(self.url, self.token)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> ManagerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- information -------------------------------------------------------

    def version(self) -> dict[str, Any]:
        """GET version; checks that this is a Flamenco-compatible manager."""
        body = self._json("GET", "version", what="asking its version", retry=True)
        # Flamenco answers at least {"version", "name"}; other JSON APIs may have a version.
        if not isinstance(body, dict) or not all(
            isinstance(body.get(key), str) for key in ("version", "name")
        ):
            raise SubmitError(
                f"{self.url} is not a Flamenco manager "
                f"(its {self.api}version answer lacks Flamenco's version and name)"
            )
        return body

    def configuration(self) -> dict[str, Any]:
        """GET configuration; a manager with Shaman switched off is an error here."""
        body = self._json("GET", "configuration", what="asking its configuration", retry=True)
        if not isinstance(body, dict):
            raise SubmitError(f"{self.url} does not look like a Flamenco manager")
        if body.get("shamanEnabled") is False:
            raise SubmitError(f"Shaman is disabled on the manager at {self.url}")
        return body

    # --- shaman ------------------------------------------------------------

    def requirements(self, files: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """POST checkout/requirements; the files the manager wants, each with a status."""
        body = self._json(
            "POST",
            "shaman/checkout/requirements",
            json={"files": list(files)},
            what="negotiating which files to upload",
            retry=True,
        )
        files_out = body.get("files") if isinstance(body, dict) else None
        if not isinstance(files_out, list):
            raise SubmitError("the manager sent an unreadable answer to checkout/requirements")
        return files_out

    def upload(
        self, sha: str, size: int, body: Any, *, filename: str, can_defer: bool
    ) -> tuple[int, str]:
        """POST files/{sha}/{size} with a streamed body; (status, message).

        Raises UploadInterrupted on a transport error; exceptions raised by the body
        iterator itself (cancel, file changed) pass through unchanged.
        """
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Shaman-Original-Filename": encode_original_filename(filename),
            # Python's str(bool), exactly like Flamenco's generated client.
            "X-Shaman-Can-Defer-Upload": str(bool(can_defer)),
        }
        try:
            response = self.session.post(
                f"{self.api}shaman/files/{sha}/{size}",
                data=body,
                headers=headers,
                timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
            )
        except requests.RequestException as ex:
            raise UploadInterrupted(str(ex)) from ex
        with response:
            message = response_message(response) if response.status_code >= 300 else ""
        return response.status_code, message

    def upload_batch(self, body: Iterable[bytes]) -> tuple[int, list[dict[str, Any]], str]:
        """POST shaman/batch-upload (our extension) with a streamed body of records.

        Returns (status, per-record results, message); the results are only there on
        200. Raises UploadInterrupted on a transport error, like upload().
        """
        try:
            response = self.session.post(
                f"{self.api}shaman/batch-upload",
                data=body,
                headers={"Content-Type": protocol.BATCH_CONTENT_TYPE},
                timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
            )
        except requests.RequestException as ex:
            raise UploadInterrupted(str(ex)) from ex
        with response:
            if not upload_stored(response.status_code):
                return response.status_code, [], response_message(response)
            try:
                files = response.json()["files"]
            except (ValueError, KeyError, TypeError):
                files = None
        if not isinstance(files, list) or not all(isinstance(f, dict) for f in files):
            raise SubmitError("the manager sent an unreadable answer to a batch upload")
        return 200, files, ""

    def create_checkout(self, files: Iterable[dict[str, Any]], checkout_path: str) -> Checkout:
        """POST checkout/create; the checkout path the manager used and its warnings."""
        response = self.send(
            "POST",
            "shaman/checkout/create",
            json={"files": list(files), "checkoutPath": checkout_path},
            what="creating the checkout",
            retry=False,
        )
        if response.status_code == 424 or (
            response.status_code == 500 and GO_UNKNOWN_FILES in response_message(response)
        ):
            raise CheckoutIncomplete(
                f"the manager is missing files for the checkout: {response_message(response)}"
            )
        if response.status_code == 409:
            raise SubmitError(
                f"no free checkout directory for {checkout_path!r}: {response_message(response)}"
            )
        self.raise_for_status(response, "creating the checkout")
        try:
            body = response.json()
            used = body["checkoutPath"]
        except (ValueError, KeyError, TypeError):
            raise SubmitError("the manager sent an unreadable answer to checkout/create") from None
        # Optional and additive (Flamenco's own Manager never sends it): take the lines
        # that are text, one line each, and ignore anything else.
        warnings = body.get("warnings") if isinstance(body, dict) else None
        lines = [" ".join(w.split()) for w in warnings or () if isinstance(w, str)]
        return Checkout(str(used), [line for line in lines if line])

    # --- plumbing ----------------------------------------------------------

    def _json(self, method: str, path: str, *, what: str, retry: bool, **kw: Any) -> Any:
        response = self.send(method, path, what=what, retry=retry, **kw)
        self.raise_for_status(response, what)
        try:
            return response.json()
        except ValueError:
            raise SubmitError(
                f"{self.url} does not look like a Flamenco manager (no JSON when {what})"
            ) from None

    def send(
        self, method: str, path: str, *, what: str, retry: bool, **kw: Any
    ) -> requests.Response:
        delays = RETRY_DELAYS if retry else ()
        attempt = 0
        while True:
            try:
                response = self.session.request(
                    method, self.api + path, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT), **kw
                )
            except requests.exceptions.SSLError as ex:
                raise SubmitError(tls_failure(self.url, ex)) from None
            except requests.RequestException as ex:
                # A refused connection never delivered the request, so even a call that
                # must not run twice (checkout/create) can wait for a restarting manager.
                budget = RETRY_DELAYS if retry or never_sent(ex) else ()
                if attempt < len(budget):
                    time.sleep(budget[attempt])
                    attempt += 1
                    continue
                raise SubmitError(
                    f"cannot reach the manager at {self.url} ({short_reason(ex)})"
                ) from None
            if response.status_code >= 500 and response.status_code != 503:
                if attempt < len(delays):
                    time.sleep(delays[attempt])
                    attempt += 1
                    continue
            return response

    def raise_for_status(self, response: requests.Response, what: str) -> None:
        status = response.status_code
        if status < 300:
            return
        if status == 503:
            raise SubmitError(f"Shaman is disabled on the manager at {self.url}")
        if status in (401, 403):
            raise SubmitError(
                f"the manager at {self.url} refused access ({status}); check the token"
            )
        if status == 404:
            raise SubmitError(f"{self.url} does not look like a Flamenco manager (404 when {what})")
        raise SubmitError(
            f"the manager answered {status} when {what}: {response_message(response)}"
        )
