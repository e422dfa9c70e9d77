"""Guarantee 2 on the per-file path: small uploads are answered before their bytes are
synced (as `.pending`), so a power cut can leave a name on disk with other bytes in it.
Every file of a checkout answered 200 must still be durable, and a pending blob a power
cut damaged must be re-verified and quarantined, never linked.

The manager is killed with -9 before any checkout (nothing synced), then some of its
pending blobs are damaged the ways a power cut can leave them; fsck and the restarted
manager must both find exactly those, and the submission must end with a checkout whose
every link is a durable `.blob` of the right bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import requests
from reliability_helpers import ManagerProcess, verify_store

API = "api/v3/shaman/"
FILES = 40


def _upload(url: str, data: bytes) -> int:
    sha = hashlib.sha256(data).hexdigest()
    resp = requests.post(
        f"{url}{API}files/{sha}/{len(data)}",
        data=data,
        headers={"X-Shaman-Original-Filename": "f.bin", "X-Shaman-Can-Defer-Upload": "True"},
        timeout=30,
    )
    return resp.status_code


def _specs(datas: list[bytes]) -> list[dict[str, object]]:
    return [
        {"sha": hashlib.sha256(d).hexdigest(), "size": len(d), "path": f"tex/f{i:02d}.png"}
        for i, d in enumerate(datas)
    ]


def _damage(path: Path, how: str, rng: random.Random) -> None:
    size = path.stat().st_size
    os.chmod(path, 0o644)
    if how == "zeros":  # the size reached the disk, the data blocks did not
        path.write_bytes(bytes(size))
    elif how == "empty":  # only the name did
        path.write_bytes(b"")
    else:  # stale blocks of some other file
        path.write_bytes(rng.randbytes(size))
    os.chmod(path, 0o444)


def test_pending_blobs_damaged_by_a_power_cut_are_found_and_never_linked(tmp_path):
    rng = random.Random(20261130)
    datas = [rng.randbytes(rng.randint(1, 16 * 1024)) for _ in range(FILES)]
    storage = tmp_path / "storage"
    mgr = ManagerProcess(storage).start()
    try:
        assert {_upload(mgr.url, d) for d in datas} == {204}
        mgr.kill()  # before any checkout: nothing of it is synced

        pending = sorted((storage / "file-store" / "stored").rglob("*.pending"))
        assert len(pending) == FILES and not list(storage.rglob("*.blob"))
        damaged = {
            p: how
            for p, how in zip(rng.sample(pending, 6), ["zeros", "empty", "other"] * 2, strict=True)
        }
        for path, how in damaged.items():
            _damage(path, how, rng)

        fsck = subprocess.run(
            [sys.executable, "-m", "manager_plugin", "fsck", "--storage", str(storage)],
            capture_output=True,
            text=True,
        )
        assert fsck.returncode != 0
        reported = {Path(p) for p in damaged if p.as_posix() in fsck.stdout}
        assert reported == set(damaged), fsck.stdout

        mgr.start()  # on the same storage
        specs = _specs(datas)
        by_key = {(s["sha"], s["size"]): d for s, d in zip(specs, datas, strict=True)}
        resp = requests.post(f"{mgr.url}{API}checkout/requirements", json={"files": specs})
        assert resp.status_code == 200
        wanted = {(f["sha"], f["size"]) for f in resp.json()["files"]}
        damaged_keys = {(p.parent.parent.name + p.parent.name, int(p.stem)) for p in damaged}
        assert wanted == damaged_keys
        assert not any(p.exists() for p in damaged)  # quarantined, not deleted
        quarantine = storage / "file-store" / "quarantine"
        assert len(list(quarantine.rglob("*.pending"))) == len(damaged)

        # A checkout before they are sent again is refused, and creates nothing.
        body = {"files": specs, "checkoutPath": "shots/power"}
        resp = requests.post(f"{mgr.url}{API}checkout/create", json=body)
        assert resp.status_code == 424, resp.text
        assert not (storage / "jobs" / "shots" / "power").exists()

        for key in wanted:
            assert _upload(mgr.url, by_key[key]) == 204
        resp = requests.post(f"{mgr.url}{API}checkout/create", json=body)
        assert resp.status_code == 200, resp.text
        used = json.loads(resp.text)["checkoutPath"]
        for spec, data in zip(specs, datas, strict=True):
            link = storage / "jobs" / used / str(spec["path"])
            assert os.path.realpath(link).endswith(".blob"), link
            assert link.read_bytes() == data
        assert not list((storage / "file-store" / "stored").rglob("*.pending"))
        assert verify_store(mgr.store) == []
    finally:
        mgr.stop()
