"""The physical baselines each figure is compared with, measured on the same files.

Each one is the bare minimum a program must do for the same result: hash with one core,
copy the bytes, create the links, walk the directories. Ratios against these, not raw
figures, are what can be compared between (noisy) runs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from manager_plugin.store.system import sync_filesystem


def settle() -> None:
    """Flush dirty pages so writeback of earlier steps does not slow the next timed one."""
    os.sync()


def sha256_files(paths: Iterable[Path]) -> tuple[float, int]:
    """Single-thread hashlib.sha256 over the files: (seconds, bytes hashed)."""
    settle()
    total = 0
    start = time.perf_counter()
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            hashlib.file_digest(f, "sha256")
            total += f.tell()
    return time.perf_counter() - start, total


def copy_file(src: Path, dst: Path, *, sync: bool = False) -> float:
    """shutil.copyfile onto the same filesystem, including getting the bytes to the kernel;
    with `sync`, also until the copy is on disk (fsync)."""
    settle()
    start = time.perf_counter()
    shutil.copyfile(src, dst)
    if sync:
        fd = os.open(dst, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return time.perf_counter() - start


def _bat_command() -> list[str]:
    exe = shutil.which("bat") or str(Path(sys.executable).with_name("bat"))
    return [exe]


def bat_pack(project_root: Path, blend: Path, target: Path) -> float:
    """`bat pack -p PROJECT BLEND TARGETDIR`: the copy-per-job way of sending a project."""
    settle()
    start = time.perf_counter()
    proc = subprocess.run(
        [*_bat_command(), "pack", "-p", str(project_root), str(blend), str(target)],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"bat pack failed: {proc.stderr[-2000:]}")
    return seconds


def symlink_tree(root: Path, links: list[tuple[str, str]]) -> float:
    """A bare os.symlink loop: (target, relative link path) pairs, directories made as needed."""
    settle()
    start = time.perf_counter()
    made: set[str] = set()
    base = str(root)
    for target, rel in links:
        link = f"{base}/{rel}"
        parent = link.rpartition("/")[0]
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        os.symlink(target, link)
    return time.perf_counter() - start


def scandir_walk(roots: Iterable[Path], *, readlinks: bool = False) -> tuple[float, int]:
    """A bare os.scandir walk of the trees: (seconds, entries seen).

    With `readlinks`, also os.readlink of every symlink: the inode reads any collector
    must add to the walk to know what each link points at (readdir alone reads no inode).
    """
    settle()
    start = time.perf_counter()
    seen = 0
    stack = [str(r) for r in roots]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                seen += 1
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif readlinks and entry.is_symlink():
                    os.readlink(entry.path)
    return time.perf_counter() - start, seen


def create_files(root: Path, rels: list[str], data: bytes) -> float:
    """A bare loop creating the files (dirs as needed): the disk's floor for storing them."""
    settle()
    start = time.perf_counter()
    made: set[str] = set()
    base = str(root)
    for rel in rels:
        path = f"{base}/{rel}"
        parent = path.rpartition("/")[0]
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        with open(path, "wb", buffering=0) as f:
            f.write(data)
    return time.perf_counter() - start


def store_blobs(
    root: Path, files: list[tuple[str, int, Path]], *, sync: bool, grouped: bool = False
) -> tuple[float, float]:
    """A bare loop storing each file as a blob: (seconds, CPU seconds of this process).

    For each (sha, size, source): read the source, write it to a temp name, then (with
    `sync`) fsync it, rename it to `stored/{sha[:2]}/{sha[2:]}/{size}.blob` and fsync that
    directory, so the blob survives a crash once the loop moves on: the per-file floor of
    a store that answers "stored" only when it is durable. With `grouped` instead, one
    filesystem sync after the loop makes them all durable at once: the floor of a store
    whose durability point is the checkout. No HTTP, no hashing.
    """
    settle()
    temps = f"{root}/uploading"
    stored = f"{root}/stored"
    os.makedirs(temps, exist_ok=True)
    cpu = time.process_time()
    start = time.perf_counter()
    for n, (sha, size, source) in enumerate(files):
        with open(source, "rb", buffering=0) as src:
            data = src.read()
        temp = f"{temps}/{size}-{n}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        directory = f"{stored}/{sha[:2]}/{sha[2:]}"
        os.makedirs(directory, exist_ok=True)
        os.rename(temp, f"{directory}/{size}.blob")
        if sync:
            dfd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    if grouped and not sync_filesystem(stored):
        os.sync()
    return time.perf_counter() - start, time.process_time() - cpu
