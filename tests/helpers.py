"""Small helpers every part of the suite uses: naming content as the store does, looking at
what a store holds on disk, planting a blob, and waiting for something the server does
asynchronously. Written once here, imported by name (`from helpers import ident`)."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from manager_plugin.http.fastlane import FastLane
from manager_plugin.models import FileSpec
from manager_plugin.store import FileStore


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ident(data: bytes) -> tuple[str, int]:
    """(checksum, size): how the store names `data`."""
    return sha256(data), len(data)


def blob_path(store: Path, data: bytes) -> Path:
    """Where the file store under `store` (a `file-store` directory) keeps `data`."""
    sha = sha256(data)
    return store / "stored" / sha[:2] / sha[2:] / f"{len(data)}.blob"


def pending_path(store: Path, data: bytes) -> Path:
    """Where the file store under `store` keeps `data` after a small upload (at most
    `receive.SMALL_BODY` bytes through files/{sha}/{size}): verified, not synced yet,
    until the first checkout that links it renames it to its `blob_path`."""
    return blob_path(store, data).with_suffix(".pending")


def stored_file(store: Path, data: bytes) -> Path:
    """The file holding `data` under `store`: its `.blob` if there is one, else its
    `.pending`. Raises FileNotFoundError if neither exists."""
    for path in (blob_path(store, data), pending_path(store, data)):
        if path.exists():
            return path
    raise FileNotFoundError(f"neither {blob_path(store, data)} nor its .pending")


def files_under(root: Path) -> list[Path]:
    """Every non-directory entry below root (symlinks included, not followed), sorted.

    os.walk shrugs off directories the server removes while we look.
    """
    if not root.exists():
        return []
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        out.extend(Path(dirpath, n) for n in filenames)
        out.extend(Path(dirpath, n) for n in dirnames if Path(dirpath, n).is_symlink())
    return sorted(out)


def temps(store: Path) -> list[Path]:
    """Upload temps of the file store under `store`."""
    return files_under(store / "uploading")


def blobs(store: Path) -> list[Path]:
    """Blobs of the file store under `store`, durable (`.blob`) or pending (`.pending`)."""
    return files_under(store / "stored")


def stored_files(store: Path) -> list[Path]:
    """The `.blob`s and `.pending`s of the file store under `store`, sorted (no temps,
    nothing else that may sit under stored/)."""
    return [p for p in files_under(store / "stored") if p.suffix in (".blob", ".pending")]


def put_blob(store: FileStore, data: bytes, mtime: float | None = None) -> FileSpec:
    """Place `data` as a verified blob would be (read-only), optionally with an mtime."""
    sha = sha256(data)
    path = store.blob_path(sha, len(data))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o444)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return FileSpec(sha, len(data), "")


ACCESS_LOGGER = "manager_plugin.http.access"


def access_messages(caplog: pytest.LogCaptureFixture, settle: float = 0.05) -> list[str]:
    """The server's access log lines captured so far, once no new one arrived for
    `settle` seconds: the server writes its lines a few ms after their answers are
    sent (see accesslog._Backlog), so some may still be on their way when the client
    has its answer. The logger's level must still be INFO then (`caplog.set_level`,
    not a `with caplog.at_level` that ended before this call)."""
    deadline = time.monotonic() + 10.0
    seen = -1
    while True:
        lines = [r.getMessage() for r in caplog.records if r.name == ACCESS_LOGGER]
        if len(lines) == seen or time.monotonic() > deadline:
            return lines
        seen = len(lines)
        time.sleep(settle)


def clear_access_log(caplog: pytest.LogCaptureFixture) -> None:
    """Forget the records captured so far, once the access lines of the requests
    already answered are among them (see `access_messages`)."""
    access_messages(caplog)
    caplog.clear()


def wait_until(cond: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Poll `cond` until true or `timeout` passes; the server cleans up asynchronously."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def turn_lane_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast lane (manager_plugin.http.fastlane) declines every request: aiohttp
    answers them all."""

    def decline(self: FastLane, data: bytes) -> None:
        return None

    monkeypatch.setattr(FastLane, "answer", decline)
