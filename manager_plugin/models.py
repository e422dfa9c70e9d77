"""Value types passed between the HTTP layer and the core."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FileStatus = Literal["unknown", "uploading", "stored"]


@dataclass(frozen=True, slots=True)
class FileSpec:
    """One file of a checkout: its identity (sha, size) and its path inside the checkout."""

    sha: str
    size: int
    path: str
