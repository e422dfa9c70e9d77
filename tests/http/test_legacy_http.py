"""The legacy (Flamenco 2) Shaman routes over real HTTP: formats, statuses, tokens, base path."""

from __future__ import annotations

import logging
import os
import socket
import textwrap
import threading
import time
from pathlib import Path

import pytest
import requests
from helpers import blob_path, pending_path, sha256, stored_files

from manager_plugin.config import Config, load_config
from manager_plugin.errors import ConfigError
from manager_plugin.http.app import create_app

TIMEOUT = 30
LEGACY_LOGGER = "manager_plugin.http.legacy"


def cdf(*files: tuple[bytes, str]) -> bytes:
    """A Checkout Definition File for (content, path) pairs, as BAT builds it."""
    return b"\n".join(f"{sha256(data)} {len(data)} {path}".encode() for data, path in files)


def post(url: str, body: bytes = b"", token: str | None = None, **headers: str):
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.post(url, data=body, headers=headers, timeout=TIMEOUT)


def upload(base: str, data: bytes, **headers: str) -> requests.Response:
    return post(f"{base}files/{sha256(data)}/{len(data)}", data, **headers)


def stored_blobs(store: Path) -> list[Path]:
    """Every `.blob` and `.pending` of the store (a small upload is `.pending` until a
    checkout links it)."""
    return stored_files(store)


# ---- get-token and tokens -------------------------------------------------------------------


def test_get_token_without_configured_token_hands_out_a_dummy_token(manager):
    resp = requests.get(f"{manager.url}get-token", timeout=TIMEOUT)
    assert resp.status_code == 200
    assert resp.text.strip()


def test_any_bearer_token_or_none_is_accepted_when_no_token_is_configured(manager):
    body = cdf((b"x", "x.txt"))
    for token in ("anything", None):
        resp = post(f"{manager.url}checkout/requirements", body, token)
        assert resp.status_code == 200, resp.text


def test_get_token_does_not_reveal_the_configured_token(manager_factory):
    manager = manager_factory(token="s3cret-farm-token")
    resp = requests.get(f"{manager.url}get-token", timeout=TIMEOUT)
    assert resp.status_code == 403
    assert "s3cret" not in resp.text and "s3cret" not in resp.reason
    # BAT shows only the status line of this answer, so the hint must be in the reason.
    assert "SHAMAN_JWT_TOKEN" in resp.reason and "SHAMAN_JWT_TOKEN" in resp.text


@pytest.mark.parametrize("token", [None, "guess", "no-token-needed"])
@pytest.mark.parametrize(
    "route", ["checkout/requirements", f"files/{'a' * 64}/1", "checkout/create/job"]
)
def test_requests_without_the_configured_token_get_401_naming_shaman_jwt_token(
    manager_factory, route, token
):
    manager = manager_factory(token="s3cret-farm-token")
    resp = post(f"{manager.url}{route}", b"x", token)
    assert resp.status_code == 401
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert "SHAMAN_JWT_TOKEN" in resp.text and "s3cret" not in resp.text
    assert stored_blobs(manager.store) == []


def test_requests_with_the_configured_token_are_served(manager_factory):
    manager = manager_factory(token="s3cret-farm-token")
    data = b"with token"
    assert upload(manager.url, data, Authorization="Bearer s3cret-farm-token").status_code == 204
    resp = post(f"{manager.url}checkout/create/tok", cdf((data, "a")), "s3cret-farm-token")
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize(
    ("method", "route"),
    [
        ("GET", "get-token"),
        ("POST", "checkout/requirements"),
        ("POST", f"files/{'a' * 64}/1"),
        ("POST", "checkout/create/job"),
    ],
)
def test_every_legacy_route_answers_503_when_shaman_is_disabled(manager_factory, method, route):
    manager = manager_factory(shaman_enabled=False)
    resp = requests.request(method, f"{manager.url}{route}", data=b"x", timeout=TIMEOUT)
    assert resp.status_code == 503
    assert "disabled" in resp.text


# ---- checkout/requirements ------------------------------------------------------------------


def test_requirements_lists_unknown_files_as_file_unknown_with_their_path(manager):
    resp = post(f"{manager.url}checkout/requirements", cdf((b"one", "a/one.txt")))
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert resp.text == "file-unknown a/one.txt\n"


def test_requirements_leaves_out_stored_files(manager):
    assert upload(manager.url, b"stored").status_code == 204
    body = cdf((b"stored", "stored.txt"), (b"new", "new.txt"))
    resp = post(f"{manager.url}checkout/requirements", body)
    assert resp.text == "file-unknown new.txt\n"


def test_requirements_with_everything_stored_is_an_empty_answer(manager):
    assert upload(manager.url, b"stored").status_code == 204
    resp = post(f"{manager.url}checkout/requirements", cdf((b"stored", "s.txt")))
    assert (resp.status_code, resp.text) == (200, "")


def test_requirements_lists_the_same_content_once_even_under_two_paths(manager):
    body = cdf((b"twin", "first.png"), (b"twin", "second.png"))
    resp = post(f"{manager.url}checkout/requirements", body)
    assert resp.text == "file-unknown first.png\n"


def test_requirements_accepts_crlf_trailing_newline_spaces_and_non_ascii_paths(manager):
    files = [
        (b"1", "with space/file name.png"),
        (b"2", "ránið/lélegt vélmenni.blend"),
        (b"3", "日本/テクスチャ.png"),
    ]
    body = cdf(*files).replace(b"\n", b"\r\n") + b"\r\n\r\n"
    resp = post(f"{manager.url}checkout/requirements", body)
    assert resp.status_code == 200, resp.text
    assert resp.content.decode("utf-8").splitlines() == [f"file-unknown {p}" for _, p in files]


def test_requirements_rejects_a_malformed_line_with_400_naming_the_line(manager):
    body = cdf((b"ok", "ok.txt")) + b"\n" + f"{sha256(b'x')} twelve x.txt".encode()
    resp = post(f"{manager.url}checkout/requirements", body)
    assert resp.status_code == 400
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert resp.text.startswith("line 2: size 'twelve' is not a whole number")


@pytest.mark.parametrize("bad_path", ["../../etc/passwd", "/abs/path", "c:/x", "a\\b", "a/./b"])
def test_requirements_rejects_an_unsafe_path_with_400_naming_the_line(manager, bad_path):
    body = cdf((b"ok", "ok.txt"), (b"bad", bad_path))
    resp = post(f"{manager.url}checkout/requirements", body)
    assert resp.status_code == 400
    assert resp.text.startswith("line 2: path: ")


def test_requirements_touches_stored_files_so_gc_spares_them(manager):
    assert upload(manager.url, b"old").status_code == 204
    [blob] = stored_blobs(manager.store)
    assert blob == pending_path(manager.store, b"old")  # touched while not synced yet
    blob_mtime = blob.stat().st_mtime
    os.utime(blob, (blob_mtime - 3600, blob_mtime - 3600))
    post(f"{manager.url}checkout/requirements", cdf((b"old", "old.txt")))
    assert blob.stat().st_mtime > blob_mtime - 60


# ---- files/{sha}/{size} ---------------------------------------------------------------------


def test_upload_stores_the_file_then_answers_208_already_there(manager):
    assert (
        upload(manager.url, b"payload", **{"X-Shaman-Original-Filename": "p.bin"}).status_code
        == 204
    )
    [blob] = stored_blobs(manager.store)
    assert blob == pending_path(manager.store, b"payload")
    assert blob.read_bytes() == b"payload"
    assert upload(manager.url, b"payload").status_code == 208  # a .pending counts as stored
    assert stored_blobs(manager.store) == [blob]


def test_upload_with_the_wrong_checksum_is_417_and_stores_nothing(manager):
    resp = post(f"{manager.url}files/{sha256(b'declared')}/8", b"received")
    assert resp.status_code == 417
    assert "SHA-256" in resp.text
    assert stored_blobs(manager.store) == []
    assert list((manager.store / "uploading").rglob("*.tmp")) == []


def test_upload_with_the_wrong_size_is_417_and_stores_nothing(manager):
    resp = post(f"{manager.url}files/{sha256(b'abc')}/4", b"abc")
    assert resp.status_code == 417
    assert stored_blobs(manager.store) == []


@pytest.mark.parametrize("route", ["files/NOTHEX/3", f"files/{'a' * 64}/-1", f"files/{'a' * 64}/x"])
def test_upload_with_a_malformed_checksum_or_size_in_the_url_is_400(manager, route):
    resp = post(f"{manager.url}{route}", b"abc")
    assert resp.status_code == 400


def test_empty_file_sent_chunked_is_stored(manager):
    # requests sends an empty file object with Transfer-Encoding: chunked, as BAT does.
    def chunks():
        yield from ()

    resp = requests.post(f"{manager.url}files/{sha256(b'')}/0", data=chunks(), timeout=TIMEOUT)
    assert resp.status_code == 204
    [blob] = stored_blobs(manager.store)
    assert blob == pending_path(manager.store, b"")
    assert blob.stat().st_size == 0


class StalledUpload:
    """An upload that sent its headers and half its body, then waits (raw socket)."""

    def __init__(self, url: str, data: bytes) -> None:
        host, port = url.removeprefix("http://").rstrip("/").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
        head = (
            f"POST /files/{sha256(data)}/{len(data)} HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        )
        self.sock.sendall(head.encode() + data[: len(data) // 2])
        self.rest = data[len(data) // 2 :]

    def finish(self) -> int | None:
        """Send the rest; the status, or None if the server hung up (stored by someone else)."""
        try:
            self.sock.sendall(self.rest)
            status_line = self.sock.makefile("rb").readline()
        except OSError:
            return None
        finally:
            self.sock.close()
        return int(status_line.split()[1]) if status_line else None


class LogWatch(logging.Handler):
    """Sets `seen` when `logger` (the legacy routes') logs a message containing `text`."""

    def __init__(self, text: str, logger: str = LEGACY_LOGGER) -> None:
        super().__init__(logging.INFO)
        self.logger = logger
        self.text = text
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()

    def __enter__(self) -> LogWatch:
        logger = logging.getLogger(self.logger)
        self.old_level = logger.level
        logger.setLevel(logging.INFO)
        logger.addHandler(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        logger = logging.getLogger(self.logger)
        logger.removeHandler(self)
        logger.setLevel(self.old_level)


def wait_until_uploading(store: Path) -> None:
    for _ in range(200):
        if list((store / "uploading").rglob("*.tmp")):
            return
        time.sleep(0.05)
    raise AssertionError("the stalled upload never started")


def test_file_being_uploaded_is_listed_as_already_uploading_and_deferred_with_208(manager):
    data = b"big file " * 10_000
    stalled = StalledUpload(manager.url, data)
    try:
        wait_until_uploading(manager.store)
        resp = post(f"{manager.url}checkout/requirements", cdf((data, "big.bin")))
        assert resp.text == "already-uploading big.bin\n"
        # BAT reads 208 as "defer" when it offered to; Flamenco 3's 425 would abort it.
        deferred = upload(manager.url, data, **{"X-Shaman-Can-Defer-Upload": "true"})
        assert deferred.status_code == 208
    finally:
        assert stalled.finish() == 204
    assert len(stored_blobs(manager.store)) == 1


# ---- checkout/create/{id} -------------------------------------------------------------------


@pytest.mark.parametrize(
    "checkout_id", ["job", "project/scene/job-1", "with spaces in it", "ránið/lélegt vélmenni"]
)
def test_checkout_create_answers_the_checkout_path_relative_to_the_jobs_dir(manager, checkout_id):
    files = [(b"blend", "scene.blend"), (b"tex", "tex/wood grain.png")]
    for data, _ in files:
        assert upload(manager.url, data).status_code in (204, 208)
    resp = post(f"{manager.url}checkout/create/{checkout_id}", cdf(*files))
    assert resp.status_code == 200, resp.text
    assert resp.text.strip() == checkout_id
    for data, path in files:
        assert (manager.jobs / checkout_id / path).read_bytes() == data
    # The checkout made the small uploads durable before linking them.
    assert stored_blobs(manager.store) == sorted(blob_path(manager.store, d) for d, _ in files)


def test_checkout_create_waits_for_a_file_someone_else_is_still_uploading(manager):
    # BAT defers such a file and never retries it; it asks for the checkout at once.
    data = b"uploaded by another artist " * 10_000
    stalled = StalledUpload(manager.url, data)
    wait_until_uploading(manager.store)
    answer: list[requests.Response] = []
    # The wait is the service's policy (`checkout_when_uploaded`), so it logs there.
    with LogWatch("waits for 1 files", "manager_plugin.service") as watch:
        creating = threading.Thread(
            target=lambda: answer.append(
                post(f"{manager.url}checkout/create/waiting", cdf((data, "shared.bin")))
            )
        )
        creating.start()
        assert watch.seen.wait(TIMEOUT)
        assert stalled.finish() == 204
        creating.join(TIMEOUT)
    assert answer[0].status_code == 200, answer[0].text
    assert (manager.jobs / "waiting" / "shared.bin").read_bytes() == data


def test_checkout_create_with_a_taken_id_answers_the_suffixed_path(manager):
    assert upload(manager.url, b"x").status_code == 204
    first = post(f"{manager.url}checkout/create/dup", cdf((b"x", "x"))).text.strip()
    second = post(f"{manager.url}checkout/create/dup", cdf((b"x", "x"))).text.strip()
    assert first == "dup"
    assert second.startswith("dup-") and len(second) == len("dup-abcd")
    assert (manager.jobs / second / "x").read_bytes() == b"x"


def test_checkout_create_with_missing_files_is_424_and_creates_nothing(manager):
    assert upload(manager.url, b"here").status_code == 204
    body = cdf((b"here", "here.txt"), (b"missing", "missing.txt"))
    resp = post(f"{manager.url}checkout/create/incomplete", body)
    assert resp.status_code == 424
    assert "missing.txt" in resp.text
    assert not (manager.jobs / "incomplete").exists()


@pytest.mark.parametrize("checkout_id", ["bad:id", "a;b", "x/../../../etc", "a%5Cb"])
def test_checkout_create_with_an_invalid_checkout_id_is_400(manager, checkout_id):
    assert upload(manager.url, b"x").status_code == 204
    resp = post(f"{manager.url}checkout/create/{checkout_id}", cdf((b"x", "x")))
    assert resp.status_code in (400, 404), resp.text
    assert list(manager.jobs.iterdir()) == []


def test_checkout_create_with_one_path_listed_with_two_contents_names_the_line(manager):
    for data in (b"a", b"b"):
        assert upload(manager.url, data).status_code == 204
    body = cdf((b"a", "same.txt"), (b"b", "other.txt")) + b"\n\n" + cdf((b"b", "same.txt"))
    resp = post(f"{manager.url}checkout/create/clash", body)
    assert resp.status_code == 400
    assert resp.text.startswith("line 4: ") and "same.txt" in resp.text


def test_checkout_create_with_a_malformed_line_is_400_naming_the_line(manager):
    resp = post(f"{manager.url}checkout/create/j", b"\n\nnot a line")
    assert resp.status_code == 400
    assert resp.text.startswith("line 3: ")


# ---- both protocols, one store --------------------------------------------------------------


def test_file_uploaded_through_the_v3_api_is_stored_for_the_legacy_protocol(manager):
    data = b"via v3"
    resp = post(manager.api(f"api/v3/shaman/files/{sha256(data)}/{len(data)}"), data)
    assert resp.status_code == 204
    assert post(f"{manager.url}checkout/requirements", cdf((data, "v3.txt"))).text == ""


def test_file_uploaded_through_the_legacy_protocol_is_stored_for_the_v3_api(manager):
    data = b"via legacy"
    assert upload(manager.url, data).status_code == 204
    resp = requests.get(manager.api(f"api/v3/shaman/files/{sha256(data)}/{len(data)}"), timeout=10)
    assert resp.json() == {"status": "stored"}


# ---- base path ------------------------------------------------------------------------------


@pytest.mark.parametrize("configured", ["/studio/shaman", "studio/shaman/", " /studio/shaman/ "])
def test_legacy_routes_are_served_under_the_configured_base_path_and_at_the_root(
    manager_factory, configured
):
    manager = manager_factory(legacy_base_path=configured)
    for base in (manager.url, f"{manager.url}studio/shaman/"):
        assert requests.get(f"{base}get-token", timeout=TIMEOUT).status_code == 200
        resp = post(f"{base}checkout/requirements", cdf((b"q", "q.txt")))
        assert resp.text == "file-unknown q.txt\n"


@pytest.mark.parametrize("configured", ["/api/v3/shaman", "api", "/a/../b"])
def test_a_legacy_base_path_that_would_clash_or_escape_is_a_config_error(tmp_path, configured):
    with pytest.raises(ConfigError, match="legacyBasePath"):
        create_app(Config(storage_path=tmp_path, legacy_base_path=configured))


def test_legacy_base_path_is_read_from_shaman_legacy_base_path(tmp_path):
    config_file = tmp_path / "flamenco-manager.yaml"
    config_file.write_text(
        textwrap.dedent(
            f"""\
            shared_storage_path: {tmp_path / "storage"}
            shaman:
              enabled: true
              legacyBasePath: /studio/shaman
            """
        )
    )
    assert load_config(config_file).legacy_base_path == "/studio/shaman"


def test_legacy_base_path_defaults_to_root_only(tmp_path):
    config_file = tmp_path / "flamenco-manager.yaml"
    config_file.write_text(f"shared_storage_path: {tmp_path / 'storage'}\n")
    assert load_config(config_file).legacy_base_path == ""
