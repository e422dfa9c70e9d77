"""Where the shared real .blend files are: ../shared/blendfiles beside a clone, or this
machine's /work/shared/blendfiles. Read-only: copy them before BAT opens them."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BLENDFILE_DIRS = (REPO.parent / "shared" / "blendfiles", Path("/work/shared/blendfiles"))


def blendfiles_dir() -> Path:
    for candidate in BLENDFILE_DIRS:
        if candidate.is_dir():
            return candidate
    raise RuntimeError(f"the shared blend files are in none of {list(map(str, BLENDFILE_DIRS))}")
