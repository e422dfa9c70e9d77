"""Hashing: streamed SHA-256, and files that change while being read are read again."""

import hashlib
import os
import threading

import pytest
from flamenco_shaman.engine import hashing
from flamenco_shaman.engine.errors import SubmitCancelled, SubmitError
from flamenco_shaman.engine.hashing import identify, sha256_of


def test_sha256_matches_hashlib_across_block_boundaries(tmp_path):
    path = tmp_path / "data.bin"
    data = os.urandom(hashing.BLOCK_SIZE * 2 + 123)
    path.write_bytes(data)
    assert sha256_of(path) == hashlib.sha256(data).hexdigest()


def test_empty_file_has_the_empty_digest(tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(b"")
    ident = identify(path)
    assert (ident.sha, ident.size) == (hashlib.sha256(b"").hexdigest(), 0)


def test_progress_counts_every_byte(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"x" * (hashing.BLOCK_SIZE + 10))
    seen = []
    sha256_of(path, on_bytes=seen.append)
    assert sum(seen) == hashing.BLOCK_SIZE + 10


def test_file_changed_while_hashing_is_hashed_again(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"old" * hashing.BLOCK_SIZE)
    changed = []

    def change_once(_n):
        if not changed:
            changed.append(True)
            path.write_bytes(b"new content")

    ident = identify(path, on_bytes=change_once)
    assert ident.sha == hashlib.sha256(b"new content").hexdigest()
    assert ident.size == len(b"new content")


def test_file_that_never_stops_changing_is_an_error(tmp_path, monkeypatch):
    path = tmp_path / "busy.bin"
    path.write_bytes(b"0")
    counter = iter(range(10**6))

    def keep_changing(_n):
        path.write_bytes(str(next(counter)).encode() * 10)

    with pytest.raises(SubmitError, match="keeps changing"):
        identify(path, on_bytes=keep_changing)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(SubmitError, match="vanished"):
        identify(tmp_path / "gone.png")


def test_hashing_stops_when_cancelled(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"x" * 10)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(SubmitCancelled):
        sha256_of(path, cancel)
