"""Guarantee 4, load: 20 clients submit overlapping projects at once, twice in a row; every
submission succeeds, every checkout is byte-identical to its source, and every distinct
blob is written exactly once.

"Written once" is checked three ways that do not trust each other: the clients count the
204 ("stored") answers per blob, the server's own request log is counted the same way, and
each blob's inode must survive the second run unchanged (a rewrite would replace it).
"""

from __future__ import annotations

import hashlib
import random
import re
import shutil
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from flamenco_shaman.engine import Submission, SubmitOptions, SubmitResult
from reliability_helpers import (
    ManagerProcess,
    RawShamanClient,
    SourceFile,
    make_project,
    shared_files,
    verify_checkout,
    verify_store,
    write_file,
)

SEED = 4242
CLIENTS = 20

pytestmark = pytest.mark.slow


def _projects(tmp: Path, rng: random.Random) -> list[list[SourceFile]]:
    shared = shared_files(rng, count=10, max_size=128 * 1024)
    return [
        make_project(
            tmp / "src",
            f"proj{i:02d}",
            rng,
            # Overlap in layers: all share `shared`, neighbours share half of it again.
            shared=shared if i % 2 == 0 else shared[: len(shared) // 2],
            unique_files=6,
            max_size=64 * 1024,
            large_files=1 if i % 4 == 0 else 0,
            large_size=1 << 20,
        )
        for i in range(CLIENTS)
    ]


def _grow(projects: list[list[SourceFile]], tmp: Path, rng: random.Random) -> None:
    """Second run: every project gains a file of its own and one new file they all share."""
    common = rng.randbytes(200 * 1024)
    for i, files in enumerate(projects):
        base = files[0].disk.parents[len(Path(files[0].rel).parts) - 1]
        for rel, data in (
            (f"v2/own-{i:02d}.bin", rng.randbytes(30_000)),
            ("v2/common.bin", common),
        ):
            write_file(base / rel, data)
            files.append(SourceFile(rel, base / rel, hashlib.sha256(data).hexdigest(), len(data)))


def _run(
    url: str, projects: list[list[SourceFile]], label: str
) -> list[tuple[str, RawShamanClient]]:
    def one(i: int) -> tuple[str, RawShamanClient]:
        client = RawShamanClient(url)
        try:
            return client.submit(projects[i], f"load/proj{i:02d}/{label}"), client
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        return list(pool.map(one, range(CLIENTS)))


def _inodes(store: Path) -> dict[Path, int]:
    return {p: p.stat().st_ino for p in (store / "stored").rglob("*.blob")}


def test_twenty_clients_twice_in_a_row_all_succeed_and_write_each_blob_once(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    projects = _projects(tmp_path, rng)
    mgr = ManagerProcess(tmp_path / "storage").start()
    try:
        first = _run(mgr.url, projects, "job")
        first_files = [list(files) for files in projects]
        inodes_after_first = _inodes(mgr.store)
        _grow(projects, tmp_path, rng)
        # Same checkout paths again: the server must pick fresh `-xxxx` directories.
        second = _run(mgr.url, projects, "job")

        for (used, _), files in zip(first + second, first_files + projects, strict=True):
            assert verify_checkout(mgr.jobs, mgr.store, used, files) == [], used
        assert len({used for used, _ in first + second}) == 2 * CLIENTS

        distinct = {(f.sha, f.size) for files in projects for f in files}
        client_204 = Counter(
            (sha, size)
            for _, c in first + second
            for sha, size, st in c.stats.statuses
            if st == 204
        )
        assert set(client_204) == distinct
        assert max(client_204.values()) == 1, "some blob was stored twice"
        assert verify_store(mgr.store) == []
        stored_now = _inodes(mgr.store)
        assert len(stored_now) == len(distinct)
        assert {p: stored_now[p] for p in inodes_after_first} == inodes_after_first
    finally:
        mgr.stop()
    server_204 = Counter((sha, size) for sha, size, st in mgr.upload_statuses() if st == 204)
    assert server_204 == client_204


# --- the same through the submission engine -----------------------------------------------

BATCH_STORED_RE = re.compile(r"POST /api/v3/shaman/batch-upload 200 .* stored=(\d+)")
FRAMES = [f"imgseq/{n:06d}.png" for n in range(210, 215)]


def _engine_projects(tmp: Path, rng: random.Random, blendfiles: Path) -> list[Path]:
    """The image-sequence blend, 20 times: the blend and three frames shared by all, two
    frames of each project's own (BAT only reads the frames' names)."""
    shared = {rel: rng.randbytes(rng.randint(50_000, 300_000)) for rel in FRAMES[:3]}
    blends = []
    for i in range(CLIENTS):
        proj = tmp / "engine-src" / f"proj{i:02d}"
        (proj / "imgseq").mkdir(parents=True)
        shutil.copy(blendfiles / "image_sequencer.blend", proj)
        for rel, data in shared.items():
            (proj / rel).write_bytes(data)
        for rel in FRAMES[3:]:
            (proj / rel).write_bytes(rng.randbytes(rng.randint(50_000, 300_000)))
        blends.append(proj / "image_sequencer.blend")
    return blends


def _engine_run(url: str, blends: list[Path], label: str) -> list[SubmitResult]:
    def one(i: int) -> SubmitResult:
        opts = SubmitOptions(
            blendfile=blends[i], manager_url=url, checkout_path=f"engine/proj{i:02d}/{label}"
        )
        return Submission(opts).run()

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        return list(pool.map(one, range(CLIENTS)))


def _assert_identical(jobs: Path, results: list[SubmitResult], blends: list[Path]) -> None:
    """Each checkout holds exactly the blend and its frames, byte-identical to the source."""
    for result, blend in zip(results, blends, strict=True):
        checkout = jobs / result.checkout_path
        names = {p.relative_to(checkout).as_posix() for p in checkout.rglob("*") if p.is_file()}
        assert names == {"image_sequencer.blend", *FRAMES}
        for rel in names:
            assert (checkout / rel).is_symlink()
            assert (checkout / rel).read_bytes() == (blend.parent / rel).read_bytes(), rel


def test_twenty_engine_submissions_twice_in_a_row_write_each_blob_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, blendfiles: Path
) -> None:
    monkeypatch.setenv("FLAMENCO_SHAMAN_CACHE_DIR", str(tmp_path / "cache"))
    rng = random.Random(SEED + 1)
    blends = _engine_projects(tmp_path, rng, blendfiles)
    mgr = ManagerProcess(tmp_path / "storage").start()
    try:
        first = _engine_run(mgr.url, blends, "job")
        _assert_identical(mgr.jobs, first, blends)
        # Between the runs one frame of every project changes; the rest is already stored.
        for blend in blends:
            (blend.parent / FRAMES[-1]).write_bytes(rng.randbytes(100_000))
        second = _engine_run(mgr.url, blends, "job")
        _assert_identical(mgr.jobs, second, blends)
        assert verify_store(mgr.store) == []
        assert sum(r.files_uploaded for r in second) <= CLIENTS
    finally:
        mgr.stop()
    written = Counter((sha, size) for sha, size, status in mgr.upload_statuses() if status == 204)
    stored = list((mgr.store / "stored").rglob("*.blob"))
    # Small frames go in batch requests, whose log line counts the blobs each one wrote:
    # every write adds one, so a blob written twice would make the total exceed the blobs.
    batch_writes = sum(int(n) for n in BATCH_STORED_RE.findall("\n".join(mgr.lines)))
    assert sum(written.values()) + batch_writes == len(stored)
    assert not written or max(written.values()) == 1


# --- many uploads into one directory ---------------------------------------------------------


def test_concurrent_uploads_into_one_sha_prefix_directory_all_succeed(tmp_path: Path) -> None:
    """Uploads whose checksums share the first two hex digits share `uploading/xx/` and
    `stored/xx/`; finished uploads prune empty directories while others create theirs."""
    rng = random.Random(SEED + 2)
    blobs: list[tuple[str, bytes]] = []
    while len(blobs) < 800:
        data = rng.randbytes(64)
        sha = hashlib.sha256(data).hexdigest()
        if sha.startswith("aa"):
            blobs.append((sha, data))
    mgr = ManagerProcess(tmp_path / "storage").start()
    try:

        def upload(item: tuple[str, bytes]) -> int:
            sha, data = item
            url = f"{mgr.url}api/v3/shaman/files/{sha}/{len(data)}"
            return requests.post(url, data=data, timeout=60).status_code

        with ThreadPoolExecutor(max_workers=4) as pool:
            statuses = Counter(pool.map(upload, blobs))
        assert statuses == {204: len(blobs)}, mgr.log_text()
        assert verify_store(mgr.store) == []
    finally:
        mgr.stop()
