"""Storage that is hostile or changed behind the server's back (issue 15): paths the OS
cannot hold, trees 1,000+ levels deep, FIFOs where files belong, blobs truncated on
disk, temps left by a crashed second manager.

Each drives the real server over HTTP, or the real `shaman-manager gc` / `fsck`
commands, the way the attack did.
"""

from __future__ import annotations

import fcntl
import os
import select
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from helpers import blob_path, pending_path, sha256, stored_file
from reliability_support import upload

from manager_plugin import paths
from manager_plugin.checkout import TEMP_PREFIX
from manager_plugin.fstree import remove_tree

CHECKOUT = "api/v3/shaman/checkout/create"
CONTENT = b"the blend file of a deep project\n"
OLD = time.time() - 40 * 24 * 3600


def checkout(manager, checkout_path: str, path: str, data: bytes = CONTENT) -> requests.Response:
    files = [{"sha": sha256(data), "size": len(data), "path": path}]
    return requests.post(
        manager.api(CHECKOUT), json={"checkoutPath": checkout_path, "files": files}, timeout=60
    )


def entries_below(root: Path) -> list[str]:
    """Every path below root, without recursion (the trees here are very deep)."""
    found = []
    stack = [str(root)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                found.append(entry.path)
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
    return found


def run_command(storage: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "manager_plugin", *args, "--storage", str(storage)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def make_deep_dir(root: Path, levels: int) -> Path:
    """root/d/d/…/d, `levels` deep, made one mkdir at a time (os.makedirs recurses)."""
    path = str(root)
    os.mkdir(path)
    for _ in range(levels - 1):
        path += "/d"
        os.mkdir(path)
    return Path(path)


# ---- deep and long paths are refused up front -------------------------------------


def test_a_checkout_path_of_1000_or_1400_levels_gets_400_and_leaves_nothing(manager):
    assert upload(manager.url, CONTENT).status_code == 204
    for levels in (1000, 1400):
        resp = checkout(manager, "/".join(["d"] * levels), "scene.blend")
        assert resp.status_code == 400, resp.text
        assert f"more than {paths.MAX_DEPTH}" in resp.json()["message"]
        assert entries_below(manager.jobs) == []
    # One level short of the limit is fine.
    resp = checkout(manager, "/".join(["d"] * (paths.MAX_DEPTH - 1)), "scene.blend")
    assert resp.status_code == 200, resp.text


def test_file_paths_too_deep_or_too_long_for_the_os_get_400_and_leave_nothing(manager):
    assert upload(manager.url, CONTENT).status_code == 204
    deep = "/".join(["t"] * paths.MAX_DEPTH) + "/scene.blend"
    long_name = "x" * 250
    too_long = "/".join([long_name] * 17) + "/scene.blend"  # every name fits, the path not
    for checkout_path, path, says in (
        ("job", deep, f"more than {paths.MAX_DEPTH}"),
        ("job", too_long, f"more than the OS takes ({paths.MAX_PATH_BYTES})"),
        ("/".join([long_name] * 17), "scene.blend", "the checkout directory's path"),
    ):
        resp = checkout(manager, checkout_path, path)
        assert resp.status_code == 400, resp.text
        assert says in resp.json()["message"]
        assert entries_below(manager.jobs) == []
    assert checkout(manager, "job", "/".join([long_name] * 10) + "/ok.blend").status_code == 200


# ---- trees left on disk, 1,000 and 1,400 levels deep --------------------------------


def test_fsck_and_gc_walk_trees_1400_levels_deep_without_crashing(tmp_path):
    """A checkout 1,000 levels deep and a half-built one 1,400 levels deep, as an older
    version or a crash left them: fsck checks every link, gc keeps the linked blob and
    removes the stale temp dir; no RecursionError, no traceback."""
    storage = tmp_path / "storage"
    try:
        stored = storage / "file-store/stored"
        blob = stored / sha256(CONTENT)[:2] / sha256(CONTENT)[2:] / f"{len(CONTENT)}.blob"
        blob.parent.mkdir(parents=True)
        blob.write_bytes(CONTENT)
        os.utime(blob, (OLD, OLD))
        (storage / "jobs").mkdir()
        deep = make_deep_dir(storage / "jobs/deep", 1000)
        (deep / "scene.blend").symlink_to(os.path.relpath(blob, deep))
        temp = storage / f"jobs/{TEMP_PREFIX}0123456789ab-crashed"
        bottom = make_deep_dir(temp, 1400)
        (bottom / "scene.blend").symlink_to(blob)  # relative would be too long for the OS
        os.utime(temp, (OLD, OLD))

        fsck = run_command(storage, "fsck")
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
        assert "2 links; 0 problems" in fsck.stdout
        assert "Traceback" not in fsck.stderr

        gc = run_command(storage, "gc")
        assert gc.returncode == 0, gc.stdout + gc.stderr
        assert "Traceback" not in gc.stderr
        assert "deleted 0 blobs" in gc.stdout
        assert blob.is_file()
        assert not temp.exists()
        assert (deep / "scene.blend").read_bytes() == CONTENT
        assert blob_path(storage / "file-store", CONTENT) == blob
    finally:
        # pytest's own cleanup of old tmp dirs recurses, and would fail on these.
        assert remove_tree(str(storage))


# ---- non-regular files in the store are never opened ----------------------------------


def make_fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def store_path(storage: Path, kind: str, data: bytes, name: str) -> Path:
    sha = sha256(data)
    return storage / "file-store" / kind / sha[:2] / sha[2:] / name


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The next stdout line, or "" if none comes within `timeout` (a hang fails the test)."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else ""


def test_fifos_named_like_a_temp_and_a_blob_hang_neither_serve_gc_fsck_nor_shutdown(tmp_path):
    storage = tmp_path / "storage"
    temp_fifo = make_fifo(store_path(storage, "uploading", CONTENT, f"{len(CONTENT)}-dead.tmp"))
    blob_fifo = make_fifo(store_path(storage, "stored", CONTENT, f"{len(CONTENT)}.blob"))
    pending_fifo = make_fifo(store_path(storage, "stored", CONTENT, f"{len(CONTENT)}.pending"))
    config = tmp_path / "flamenco-manager.yaml"
    config.write_text(
        f"shared_storage_path: {storage}\nshaman:\n  garbageCollect:\n    period: 200ms\n"
    )
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "manager_plugin", "serve", "--config", str(config)]
            + ["--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    try:
        line = read_line(proc, 60)  # startup removes stale temps: it must not open the FIFO
        assert line.startswith("Shaman listening on "), log_path.read_text()
        base = line.split()[3]
        files = [{"sha": sha256(CONTENT), "size": len(CONTENT), "path": "scene.blend"}]
        # Neither FIFO is a blob (both moved to quarantine), the dead temp no upload.
        resp = requests.post(
            base + "api/v3/shaman/checkout/requirements", json={"files": files}, timeout=30
        )
        assert resp.json()["files"][0]["status"] == "unknown"
        assert upload(base, CONTENT).status_code == 204
        assert not blob_fifo.exists()
        assert pending_fifo.read_bytes() == CONTENT  # small: a regular .pending now
        deadline = time.monotonic() + 60
        while log_path.read_text().count("shaman gc: ") < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert log_path.read_text().count("shaman gc: ") >= 3  # the periodic sweeps go on
        proc.terminate()
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert "Traceback" not in log_path.read_text()
    quarantined = sorted((storage / "file-store/quarantine").rglob("*.*"))
    assert sorted(p.suffix for p in quarantined) == [".blob", ".pending"]
    assert all(stat.S_ISFIFO(p.lstat().st_mode) for p in quarantined)
    assert stat.S_ISFIFO(temp_fifo.lstat().st_mode)  # not ours to remove, never opened

    other = b"another file"
    make_fifo(store_path(storage, "stored", other, f"{len(other)}.blob"))
    make_fifo(store_path(storage, "stored", other, f"{len(other)}.pending"))
    gc = run_command(storage, "gc", "--dry-run")
    assert gc.returncode == 0, gc.stdout + gc.stderr
    fsck = run_command(storage, "fsck")
    assert fsck.returncode == 1
    assert f"not-a-regular-file: {temp_fifo}: a FIFO among upload temps" in fsck.stdout
    assert "not-a-regular-file: " in fsck.stdout and f"/{len(other)}.blob: a FIFO" in fsck.stdout
    assert f"/{len(other)}.pending: a FIFO" in fsck.stdout
    repair = run_command(storage, "fsck", "--repair")
    assert repair.returncode == 0, repair.stdout
    assert not temp_fifo.exists()
    assert not store_path(storage, "stored", other, f"{len(other)}.blob").exists()
    assert not store_path(storage, "stored", other, f"{len(other)}.pending").exists()
    assert len(list((storage / "file-store/quarantine").rglob("*.blob"))) == 2
    assert len(list((storage / "file-store/quarantine").rglob("*.pending"))) == 2
    assert stored_file(storage / "file-store", CONTENT).read_bytes() == CONTENT


# ---- a blob changed on disk is not stored ------------------------------------------


def requirements(manager, data: bytes) -> str:
    files = [{"sha": sha256(data), "size": len(data), "path": "f"}]
    resp = requests.post(
        manager.api("api/v3/shaman/checkout/requirements"), json={"files": files}, timeout=30
    )
    assert resp.status_code == 200
    answer = resp.json()["files"]
    return answer[0]["status"] if answer else "stored"


def file_status(manager, data: bytes) -> str:
    resp = requests.get(manager.api(f"api/v3/shaman/files/{sha256(data)}/{len(data)}"), timeout=30)
    return resp.json()["status"]


def quarantined(manager) -> list[bytes]:
    """Contents of the quarantined blobs, durable (`.blob`) or not (`.pending`)."""
    moved = (manager.store / "quarantine").rglob("*")
    return sorted(p.read_bytes() for p in moved if p.suffix in (".blob", ".pending"))


def upload_as(manager, data: bytes, form: str) -> Path:
    """Upload small `data`, as the `.pending` the upload makes or, once a checkout has
    linked it, as its `.blob`; its path."""
    assert upload(manager.url, data).status_code == 204
    if form == ".blob":
        assert checkout(manager, f"job-{time.monotonic_ns()}", "f", data).status_code == 200
    assert stored_file(manager.store, data) == blob_path(manager.store, data).with_suffix(form)
    return blob_path(manager.store, data).with_suffix(form)


@pytest.mark.parametrize("form", [".pending", ".blob"])
def test_a_truncated_blob_is_quarantined_where_requirements_ask_and_accepted_again(manager, form):
    data = b"0123456789" * 100
    blob = upload_as(manager, data, form)
    os.chmod(blob, 0o644)
    os.truncate(blob, 10)  # the disk lost its tail
    assert requirements(manager, data) == "unknown"
    assert quarantined(manager) == [data[:10]]  # kept for a human, never deleted
    assert not blob.exists()
    assert upload(manager.url, data).status_code == 204  # not 208 and thrown away
    assert pending_path(manager.store, data).read_bytes() == data
    assert requirements(manager, data) == "stored"


def test_a_grown_blob_is_quarantined_where_its_status_or_a_checkout_asks(manager):
    for form in (".pending", ".blob"):
        data = f"the right bytes, {form}".encode()
        for ask in ("file status", "checkout", "upload"):
            grow_and_ask(manager, data, form, ask)
    assert len(quarantined(manager)) == 6
    for form in (".pending", ".blob"):
        data = f"the right bytes, {form}".encode()
        assert checkout(manager, f"job{form}", "f", data).status_code == 200
        assert (manager.jobs / f"job{form}/f").read_bytes() == data
        assert blob_path(manager.store, data).read_bytes() == data  # durable now
        assert not pending_path(manager.store, data).exists()


def grow_and_ask(manager, data: bytes, form: str, ask: str) -> None:
    """Grow the stored `data` (in `form`) on disk, then let `ask` find it."""
    blob = upload_as(manager, data, form)
    os.chmod(blob, 0o644)
    with open(blob, "ab") as f:
        f.write(b" and more")
    if ask == "file status":
        assert file_status(manager, data) == "unknown"
    elif ask == "checkout":
        resp = checkout(manager, f"job-{time.monotonic_ns()}", "f", data)
        assert resp.status_code == 424, resp.text  # missing, nothing linked
    else:
        # The upload itself finds the bad blob in the way and takes its place (small:
        # as a .pending, until a checkout links it).
        assert upload(manager.url, data).status_code == 204
        assert stored_file(manager.store, data) == pending_path(manager.store, data)
        assert pending_path(manager.store, data).read_bytes() == data
    if ask != "upload" or form == ".blob":  # else the new .pending took the bad one's name
        assert not blob.exists()


# ---- "uploading" means a temp whose lock is held -------------------------------------


def test_a_temp_left_by_a_crashed_manager_is_no_upload_in_progress(manager):
    """A second manager on the storage died mid-upload; its temp is young and unlocked.
    Requirements ask for the file, and a `bat pack` checkout does not wait 240 s for an
    upload nobody is doing: it answers 424 at once."""
    data = b"the crashed manager was receiving this"
    dead = store_path(manager.storage, "uploading", data, f"{len(data)}-deadbeef.tmp")
    dead.parent.mkdir(parents=True)
    dead.write_bytes(data[:5])
    assert requirements(manager, data) == "unknown"
    assert file_status(manager, data) == "unknown"
    cdf = f"{sha256(data)} {len(data)} f\n".encode()
    resp = requests.post(manager.url + "checkout/create/legacy-job", data=cdf, timeout=30)
    assert resp.status_code == 424, resp.text
    # The same temp held by a live upload is one.
    with open(dead, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert requirements(manager, data) == "uploading"
        assert file_status(manager, data) == "uploading"
