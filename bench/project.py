"""Generated Blender projects: a real .blend (saved by bpy) whose images use generated files."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .datagen import write_tree

_MAKE_BLEND = Path(__file__).with_name("make_blend.py")


@dataclass
class Project:
    root: Path
    blend: Path
    paths: list[str]  # asset paths relative to root, the blend excluded
    sizes: list[int]

    @property
    def asset_bytes(self) -> int:
        return sum(self.sizes)

    @property
    def total_bytes(self) -> int:
        return self.asset_bytes + self.blend.stat().st_size

    @property
    def file_count(self) -> int:
        return len(self.paths) + 1


def make_blend(blend: Path, rel_paths: list[str]) -> None:
    """Save `blend` with one image datablock per relative path (runs bpy in a subprocess)."""
    blend.parent.mkdir(parents=True, exist_ok=True)
    listing = blend.with_suffix(".files.txt")
    listing.write_text("\n".join(rel_paths))
    try:
        proc = subprocess.run(
            [sys.executable, str(_MAKE_BLEND), str(listing), str(blend)],
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        listing.unlink()
    if proc.returncode != 0 or not blend.exists():
        raise RuntimeError(f"bpy could not save {blend}: {proc.stderr[-2000:]}")


def make_project(root: Path, rel_paths: list[str], sizes: list[int]) -> Project:
    """Write the asset files and a `scene.blend` at the root that references all of them."""
    write_tree(root, rel_paths, sizes)
    blend = root / "scene.blend"
    make_blend(blend, rel_paths)
    return Project(root=root, blend=blend, paths=list(rel_paths), sizes=list(sizes))
