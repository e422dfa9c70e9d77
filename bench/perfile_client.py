"""A plain HTTP client that sends files the way Flamenco's official add-on does.

One request per file, in sequence on a keep-alive connection: `checkout/requirements`
for every file at once, then for each file the server does not have a status `GET
files/{sha}/{size}` and, if still unknown, a `POST` of its bytes with
`X-Shaman-Original-Filename` (RFC 2047, one line) and `X-Shaman-Can-Defer-Upload: True`
(Python's `str(True)`, as the add-on's generated client sends it); then `checkout/create`.
With several connections, each thread owns one connection and a share of the files.

Deliberately lean (stdlib `http.client`): on a 2-core machine the client shares the CPU
with the server it measures. The add-on's generated OpenAPI client costs more per request.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

API = "/api/v3/shaman"
_Q_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")


@dataclass(frozen=True)
class LocalFile:
    sha: str
    size: int
    path: str  # path in the checkout
    local: Path  # where its bytes are read from

    def spec(self) -> dict[str, object]:
        return {"sha": self.sha, "size": self.size, "path": self.path}


def rfc2047(text: str) -> str:
    """`=?utf-8?q?...?=` on one line, every byte but letters and digits escaped (as the
    add-on encodes it: `linked_cube.blend` -> `=?utf-8?q?linked=5Fcube=2Eblend?=`)."""
    body = "".join(chr(b) if b in _Q_SAFE else f"={b:02X}" for b in text.encode("utf-8"))
    return f"=?utf-8?q?{body}?="


class Connection:
    """One keep-alive connection; reconnects once if the server closed an idle one."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        for attempt in (0, 1):
            try:
                self.conn.request(method, self.prefix + path, body=body, headers=headers or {})
                resp = self.conn.getresponse()
                return resp.status, resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


def _json(conn: Connection, path: str, payload: object) -> tuple[int, bytes]:
    body = json.dumps(payload).encode()
    return conn.request("POST", path, body, {"Content-Type": "application/json"})


def upload_one(conn: Connection, f: LocalFile) -> bool:
    """Status GET, then POST if still unknown; True if this request stored it."""
    status, body = conn.request("GET", f"{API}/files/{f.sha}/{f.size}")
    if status != 200:
        raise RuntimeError(f"status of {f.path}: HTTP {status} {body[:200]!r}")
    if json.loads(body).get("status") == "stored":
        return False
    with open(f.local, "rb") as src:  # the add-on streams the file from disk
        data = src.read()
    headers = {
        "Content-Type": "application/octet-stream",
        "X-Shaman-Original-Filename": rfc2047(f.path),
        "X-Shaman-Can-Defer-Upload": "True",
    }
    status, body = conn.request("POST", f"{API}/files/{f.sha}/{f.size}", data, headers)
    if status == 208:
        return False
    if not 200 <= status < 300:
        raise RuntimeError(f"upload of {f.path}: HTTP {status} {body[:200]!r}")
    return True


def send(url: str, files: Sequence[LocalFile], checkout_path: str, connections: int = 1) -> int:
    """Requirements, per-file uploads on `connections` threads, checkout; files uploaded."""
    main = Connection(url)
    try:
        status, body = _json(
            main, f"{API}/checkout/requirements", {"files": [f.spec() for f in files]}
        )
        if status != 200:
            raise RuntimeError(f"requirements: HTTP {status} {body[:200]!r}")
        wanted = {(r["sha"], r["size"]) for r in json.loads(body)["files"]}
        todo = [f for f in files if (f.sha, f.size) in wanted]
        uploaded = _upload_all(url, main, todo, connections)
        status, body = _json(
            main,
            f"{API}/checkout/create",
            {"files": [f.spec() for f in files], "checkoutPath": checkout_path},
        )
        if status != 200:
            raise RuntimeError(f"checkout: HTTP {status} {body[:200]!r}")
        return uploaded
    finally:
        main.close()


def _upload_all(url: str, main: Connection, todo: list[LocalFile], connections: int) -> int:
    if connections <= 1:
        return sum(upload_one(main, f) for f in todo)
    counts = [0] * connections
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        conn = Connection(url)
        try:
            counts[k] = sum(upload_one(conn, f) for f in todo[k::connections])
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return sum(counts)
