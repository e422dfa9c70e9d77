"""Test data written fast: one random block reused, stamped so every file's content differs.

os.urandom for gigabytes would dominate the run; a 1 MiB random block with a per-file,
per-chunk counter stamped at its start gives unique content (unique SHA-256 per file) at
memcpy speed. Hashing cost does not depend on the bytes, so the figures are unaffected.
"""

from __future__ import annotations

import itertools
import os
import random
import struct
from collections.abc import Iterable
from pathlib import Path

_BLOCK_SIZE = 1 << 20
_BLOCK = os.urandom(_BLOCK_SIZE)
# A per-process salt keeps content unique across runs too, so no run reuses another's blobs.
_SALT = int.from_bytes(os.urandom(8), "little")
_seeds = itertools.count(1)


def next_seed() -> int:
    return next(_seeds)


def content(size: int, seed: int) -> bytes:
    """Bytes of a small file (< 1 MiB) with this seed; whole files at once."""
    if size > _BLOCK_SIZE - 64:
        raise ValueError("content() is for small files; use write_file()")
    start = (seed * 4099) % (_BLOCK_SIZE - size)
    stamp = struct.pack("<QQ", _SALT, seed)
    return (stamp + _BLOCK[start + len(stamp) : start + size])[:size]


def write_file(path: Path, size: int, seed: int | None = None) -> None:
    """Write `size` bytes of unique content to `path`, creating parent directories."""
    seed = next_seed() if seed is None else seed
    path.parent.mkdir(parents=True, exist_ok=True)
    if size <= _BLOCK_SIZE - 64:
        with open(path, "wb", buffering=0) as f:
            f.write(content(size, seed))
        return
    buf = bytearray(_BLOCK)
    view = memoryview(buf)
    with open(path, "wb", buffering=0) as f:
        chunk = 0
        remaining = size
        while remaining:
            n = min(remaining, _BLOCK_SIZE)
            buf[0:24] = struct.pack("<QQQ", _SALT, seed, chunk)
            f.write(view[:n])
            remaining -= n
            chunk += 1


def mixed_sizes(total: int, count: int, min_size: int, max_size: int, seed: int = 5) -> list[int]:
    """`count` log-uniform sizes in [min_size, max_size] scaled to sum to exactly `total`."""
    rng = random.Random(seed)
    lo, hi = min_size.bit_length(), max_size.bit_length()
    raw = [2 ** rng.uniform(lo, hi) for _ in range(count)]
    factor = total / sum(raw)
    sizes = [max(1, int(r * factor)) for r in raw]
    sizes[-1] += total - sum(sizes)
    if sizes[-1] < 1:
        raise ValueError("sizes do not fit the total")
    return sizes


def sizes_up_to(total: int, min_size: int, max_size: int, seed: int = 7) -> list[int]:
    """Log-uniform sizes in [min_size, max_size] until they add up to exactly `total`."""
    rng = random.Random(seed)
    lo, hi = min_size.bit_length(), max_size.bit_length()
    sizes: list[int] = []
    left = total
    while left > 0:
        size = min(left, int(2 ** rng.uniform(lo, hi)))
        sizes.append(size)
        left -= size
    return sizes


def tree_paths(
    count: int, prefix: str = "textures", per_dir: int = 500, ext: str = ".png"
) -> list[str]:
    """Relative paths spread over directories of `per_dir` files, like a real asset tree."""
    return [f"{prefix}/set{i // per_dir:03d}/asset_{i:06d}{ext}" for i in range(count)]


def write_tree(root: Path, paths: Iterable[str], sizes: Iterable[int]) -> int:
    """Write each path under root with the matching size; returns the bytes written."""
    made: set[str] = set()
    total = 0
    for rel, size in zip(paths, sizes, strict=True):
        path = root / rel
        parent = str(path.parent)
        if parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(parent)
        write_file(path, size)
        total += size
    return total
