"""Shared by the checkout test modules (their fixtures, `store` and `checkout_modes`,
are in conftest.py)."""

from __future__ import annotations

import hashlib

from manager_plugin.models import FileSpec
from manager_plugin.store import FileStore


def put(store: FileStore, data: bytes, path: str) -> FileSpec:
    """Store `data` as a blob (as a verified upload would) and name it `path`."""
    sha = hashlib.sha256(data).hexdigest()
    blob = store.blob_path(sha, len(data))
    blob.parent.mkdir(parents=True, exist_ok=True)
    if not blob.exists():
        blob.write_bytes(data)
    return FileSpec(sha, len(data), path)
