"""Helpers shared by the tests/reliability/ files: raw HTTP, uploads, polling.

Raw sockets are used where a well-behaved client library would refuse to
misbehave: lying about Content-Length, stalling, disconnecting mid-body.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from typing import Any
from urllib.parse import urlsplit

import requests
from helpers import sha256


def file_url(base: str, data: bytes) -> str:
    return f"{base}api/v3/shaman/files/{sha256(data)}/{len(data)}"


def upload(base: str, data: bytes, **headers: str) -> requests.Response:
    return requests.post(
        file_url(base, data),
        data=data,
        headers={"Content-Type": "application/octet-stream", **headers},
        timeout=30,
    )


def host_port(base: str) -> tuple[str, int]:
    parts = urlsplit(base)
    assert parts.hostname and parts.port
    return parts.hostname, parts.port


def connect(base: str, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(host_port(base), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def request_head(base: str, method: str, path: str, headers: dict[str, str] | None = None) -> bytes:
    host, port = host_port(base)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


Answer = tuple[int, dict[str, str], bytes]  # status, headers (lower-case names), body


def read_response(sock: socket.socket) -> Answer | None:
    """Read one HTTP response; None when the server closed without answering.

    The body is read per Content-Length when present, else until close; a 1xx, 204 or
    304 answer has none.
    """
    buf = b""
    try:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            buf += chunk
    except (ConnectionResetError, BrokenPipeError):
        return None
    head, _, body = buf.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split()[1])
    headers = {}
    for line in header_lines:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    length = int(headers.get("content-length", "-1"))
    if status < 200 or status in (204, 304):
        length = 0
    try:
        while length < 0 or len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    except (ConnectionResetError, BrokenPipeError, TimeoutError):
        pass
    return status, headers, body[: length if length >= 0 else None]


FILES_API = "/api/v3/shaman/files"


def upload_request(base: str, data: bytes, size: int | None = None, **headers: str) -> bytes:
    """A raw `POST files/{sha}/{size}` of `data`, head and body (`size` may lie)."""
    size = len(data) if size is None else size
    fields = {"Content-Length": str(len(data)), **headers}
    return request_head(base, "POST", f"{FILES_API}/{sha256(data)}/{size}", fields) + data


def status_request(base: str, data: bytes, **headers: str) -> bytes:
    """A raw status `GET files/{sha}/{size}` for `data`."""
    return request_head(base, "GET", f"{FILES_API}/{sha256(data)}/{len(data)}", headers)


def exchange(base: str, raw_requests: list[bytes], pause: float = 0.0) -> list[Answer]:
    """Each request in turn on one keep-alive connection, each answer read before the
    next is sent (then `pause` seconds)."""
    sock = connect(base)
    answers = []
    try:
        for raw in raw_requests:
            sock.sendall(raw)
            answer = read_response(sock)
            assert answer is not None, raw[:200]
            answers.append(answer)
            time.sleep(pause)
    finally:
        sock.close()
    return answers


def send_quietly(sock: socket.socket, data: bytes) -> bool:
    """sendall that reports whether the server was still listening."""
    try:
        sock.sendall(data)
        return True
    except (BrokenPipeError, ConnectionResetError):
        return False


def abort(sock: socket.socket) -> None:
    """Close with a TCP RST, the way a crashed client vanishes."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def json_error(resp: requests.Response) -> dict[str, Any]:
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.text
    body = resp.json()
    assert body["code"] == resp.status_code
    assert isinstance(body["message"], str) and body["message"]
    return body


def assert_serving(base: str) -> None:
    """The server still answers and still accepts a normal upload."""
    data = os.urandom(4096)
    resp = upload(base, data)
    assert resp.status_code == 204, resp.text
