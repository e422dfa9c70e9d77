"""Storage that is hostile or changed behind the server's back (issue 15): paths the OS
cannot hold, trees 1,000+ levels deep, FIFOs where files belong, blobs truncated on
disk, temps left by a crashed second manager.

Each drives the real server over HTTP, or the real `shaman-manager gc` / `fsck`
commands, the way the attack did.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import requests
from reliability_support import blob_path, sha256, upload

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
