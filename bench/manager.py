"""The real manager on loopback, as a subprocess, and a minimal client for raw uploads."""

from __future__ import annotations

import http.client
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

_URL = re.compile(r"https?://[^\s'\"]+")


class ManagerProcess:
    """`shaman-manager serve --storage DIR --listen 127.0.0.1:0`; `url` once it listens."""

    def __init__(self, storage: Path, log: Path, extra_args: list[str] | None = None) -> None:
        self.storage = storage
        self.log_path = log
        self.extra_args = extra_args or []
        self.url = ""
        self.proc: subprocess.Popen[str] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> ManagerProcess:
        self.storage.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w")  # closed in stop()
        cmd = [sys.executable, "-m", "manager_plugin", "serve", "--storage", str(self.storage)]
        cmd += ["--listen", "127.0.0.1:0", *self.extra_args]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1
        )
        lines: queue.Queue[str] = queue.Queue()
        # Keep reading stdout after the URL line so a chatty server never blocks on a pipe.
        threading.Thread(target=self._drain, args=(lines,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            found = _URL.search(line)
            if found:
                self.url = found.group(0).rstrip("/") + "/"
                return self
        self.stop()
        raise RuntimeError(f"manager did not print its URL: {self.log_tail()}")

    def _drain(self, lines: queue.Queue[str]) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            lines.put(line)

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text()[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self) -> ManagerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def upload_file(url: str, path: Path, sha: str, size: int) -> int:
    """POST the file to /api/v3/shaman/files/{sha}/{size} with sendfile; the HTTP status.

    The client side is kept as cheap as possible (the kernel moves the bytes), so the
    time measures the manager's ingest: receiving, hashing, writing, verifying.
    """
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    try:
        conn.putrequest("POST", f"{parts.path.rstrip('/')}/api/v3/shaman/files/{sha}/{size}")
        conn.putheader("Content-Type", "application/octet-stream")
        conn.putheader("Content-Length", str(size))
        conn.putheader("X-Shaman-Original-Filename", path.name)
        conn.endheaders()
        assert conn.sock is not None
        with open(path, "rb") as f:
            conn.sock.sendfile(f)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()
