"""`shaman-manager serve` as a newcomer runs it: its URL line, the cycle, clean shutdown."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

API = "api/v3/"


@contextmanager
def serve(*args: str, cwd: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    # The log goes to a file: a pipe nobody reads would block the server when full.
    with open(cwd / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "manager_plugin", "serve", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    assert proc.stdout is not None
    with proc.stdout:
        try:
            yield proc.stdout.readline(), proc
        finally:
            if proc.poll() is None:
                proc.terminate()
            proc.wait(30)


def url_of(line: str) -> str:
    return line.split()[3]


def test_serve_prints_its_real_url_and_storage(tmp_path):
    storage = tmp_path / "storage"
    with serve("--storage", str(storage), "--listen", "127.0.0.1:0", cwd=tmp_path) as (line, _p):
        assert line.startswith("Shaman listening on http://127.0.0.1:")
        assert not line.split(":")[2].startswith("0/")
        assert line.rstrip().endswith(f"storage={storage}")
        assert requests.get(url_of(line) + API + "version").status_code == 200


def test_acceptance_cycle_against_the_command(tmp_path):
    storage = tmp_path / "storage"
    sent = {"scene.blend": os.urandom(7000), "tex/a.png": os.urandom(3000)}
    files = [
        {"sha": hashlib.sha256(d).hexdigest(), "size": len(d), "path": p} for p, d in sent.items()
    ]
    with serve("--storage", str(storage), "--listen", "127.0.0.1:0", cwd=tmp_path) as (line, _p):
        url = url_of(line) + API + "shaman/"
        todo = requests.post(url + "checkout/requirements", json={"files": files}).json()["files"]
        for item in todo:
            resp = requests.post(
                f"{url}files/{item['sha']}/{item['size']}", data=sent[item["path"]]
            )
            assert resp.status_code == 204
        again = requests.post(url + "checkout/requirements", json={"files": files}).json()
        assert again == {"files": []}
        body = {"files": files, "checkoutPath": "proj/job"}
        first = requests.post(url + "checkout/create", json=body).json()["checkoutPath"]
        second = requests.post(url + "checkout/create", json=body).json()["checkoutPath"]
    assert first == "proj/job"
    assert second != first and second.startswith("proj/job-")
    for path, data in sent.items():
        link = storage / "jobs" / first / path
        assert not os.readlink(link).startswith("/")
        assert link.read_bytes() == data


def test_without_config_it_serves_the_embedded_default_storage(tmp_path):
    with serve("--listen", "127.0.0.1:0", cwd=tmp_path) as (line, _p):
        assert line.rstrip().endswith(f"storage={tmp_path / 'flamenco-storage'}")
        config = requests.get(url_of(line) + API + "configuration").json()
    assert config["storageLocation"] == str(tmp_path / "flamenco-storage")
    assert config["shamanEnabled"] is True
    assert (tmp_path / "flamenco-storage/file-store/stored").is_dir()


def test_flags_override_the_config_file(tmp_path):
    cfg = tmp_path / "flamenco-manager.yaml"
    cfg.write_text(f"listen: 127.0.0.1:1\nshared_storage_path: {tmp_path}/from-file\n")
    args = ("--config", str(cfg), "--storage", str(tmp_path / "flag"), "--listen", "127.0.0.1:0")
    with serve(*args, cwd=tmp_path) as (line, _p):
        assert line.rstrip().endswith(f"storage={tmp_path / 'flag'}")
        assert requests.get(url_of(line) + API + "version").status_code == 200


def test_sigterm_shuts_down_cleanly(tmp_path):
    with serve("--storage", str(tmp_path), "--listen", "127.0.0.1:0", cwd=tmp_path) as (_l, proc):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_bad_listen_flag_is_a_config_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "manager_plugin", "serve", "--listen", "nonsense"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--listen" in result.stderr
