"""A file store filled directly in Flamenco's on-disk layout, for checkout and GC scenarios.

Going through HTTP to store 200,000 blobs would take longer than the scenarios themselves;
the layout is the protocol's (stored/{sha[0:2]}/{sha[2:]}/{size}.blob), with real content
whose SHA-256 and size match the name.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .datagen import content, next_seed


def stored_dir(storage: Path) -> Path:
    return storage / "file-store" / "stored"


def blob_path(storage: Path, sha: str, size: int) -> Path:
    return stored_dir(storage) / sha[:2] / sha[2:] / f"{size}.blob"


def write_blobs(storage: Path, count: int, mtime: float | None = None) -> list[tuple[str, int]]:
    """Store `count` small blobs of distinct content; (sha, size) of each.

    `mtime`, when given, backdates each blob (an unused blob older than maxAge is garbage).
    """
    root = str(stored_dir(storage))
    made: set[str] = set()
    blobs = []
    for i in range(count):
        size = 64 + (i * 37) % 4000
        data = content(size, next_seed())
        sha = hashlib.sha256(data).hexdigest()
        top = f"{root}/{sha[:2]}"
        if top not in made:
            os.makedirs(top, exist_ok=True)
            made.add(top)
        directory = f"{top}/{sha[2:]}"
        os.mkdir(directory)
        path = f"{directory}/{size}.blob"
        with open(path, "wb", buffering=0) as f:
            f.write(data)
        if mtime is not None:
            os.utime(path, (mtime, mtime))
        blobs.append((sha, size))
    return blobs


def age_blobs(storage: Path, blobs: list[tuple[str, int]], mtime: float) -> None:
    for sha, size in blobs:
        os.utime(blob_path(storage, sha, size), (mtime, mtime))


def count_links(root: Path) -> int:
    """Symlinks anywhere below root."""
    found = 0
    stack = [str(root)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.is_symlink():
                    found += 1
                elif entry.is_dir():
                    stack.append(entry.path)
    return found
