"""`shaman.tuning`: each Linux fast path can be switched off, and both ways give the
same results (blobs, answers, checkouts); only the way there differs."""

from __future__ import annotations

import hashlib
import logging
import os
import textwrap
from pathlib import Path

import pytest
import requests
from helpers import blob_path, pending_path, temps, wait_until
from reliability_support import upload

import manager_plugin.http.bodies as bodies_module
import manager_plugin.store.splice as splice_module
from manager_plugin.config import Config, ConfigError, load_config
from manager_plugin.service import ShamanService
from manager_plugin.store import system
from manager_plugin.tuning import Tuning

MiB = 1024 * 1024


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "flamenco-manager.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_every_fast_path_is_on_by_default(tmp_path):
    cfg = load_config(write(tmp_path, f"shared_storage_path: {tmp_path}\n"))
    assert cfg.tuning == Tuning(splice=True, anonymous_temps=True, reuse_links=True)


def test_each_switch_is_read_from_shaman_tuning(tmp_path):
    cfg = load_config(
        write(
            tmp_path,
            f"""\
            shared_storage_path: {tmp_path}
            shaman:
              tuning:
                splice: false
                anonymousTemps: false
                reuseLinks: true
            """,
        )
    )
    assert cfg.tuning == Tuning(splice=False, anonymous_temps=False, reuse_links=True)


def test_a_switch_that_is_not_a_boolean_names_its_key(tmp_path):
    path = write(tmp_path, f"shared_storage_path: {tmp_path}\nshaman:\n  tuning:\n    splice: 0\n")
    with pytest.raises(ConfigError, match=r"shaman\.tuning\.splice"):
        load_config(path)


def test_a_misspelt_switch_is_warned_about(tmp_path, caplog):
    path = write(tmp_path, f"shared_storage_path: {tmp_path}\nshaman:\n  tuning:\n    splise: 0\n")
    with caplog.at_level(logging.WARNING, logger="manager_plugin.config"):
        load_config(path)
    assert "did you mean shaman.tuning.splice?" in caplog.text


def test_the_switches_reach_the_store_and_the_checkout_builder(tmp_path, tuning):
    service = ShamanService(Config(storage_path=tmp_path, tuning=tuning))
    try:
        assert service.store.splice == (tuning.splice and system.SPLICE_AVAILABLE)
        assert service.store.anonymous_temps == (
            tuning.anonymous_temps and system.ANONYMOUS_TEMPS_AVAILABLE
        )
        assert service.checkouts.reuse_links == tuning.reuse_links
    finally:
        service.close()


@pytest.fixture
def spliced(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Offer every body for splicing; the list records each one actually spliced."""
    monkeypatch.setattr(bodies_module, "SPLICE_MIN_SIZE", 1)
    sizes: list[int] = []
    real = splice_module.SpliceJob.run

    def counting(job: splice_module.SpliceJob) -> int:
        sizes.append(job.size)
        return real(job)

    monkeypatch.setattr(splice_module.SpliceJob, "run", counting)
    return sizes


def test_big_upload_is_stored_the_same_with_or_without_splice(manager_factory, tuning, spliced):
    manager = manager_factory(tuning=tuning)
    data = os.urandom(3 * MiB + 5)
    assert upload(manager.url, data).status_code == 204
    assert upload(manager.url, data).status_code == 208
    assert blob_path(manager.store, data).read_bytes() == data
    assert manager.service.store.blobs_written == 1
    assert wait_until(lambda: not temps(manager.store))
    assert spliced == ([len(data)] if tuning.splice and system.SPLICE_AVAILABLE else [])


def test_batch_records_are_stored_the_same_with_or_without_anonymous_temps(manager_factory, tuning):
    manager = manager_factory(tuning=tuning)
    datas = [f"small file {i}\n".encode() * (i + 1) for i in range(30)]
    body = b"".join(f"{hashlib.sha256(d).hexdigest()} {len(d)}\n".encode() + d for d in datas)
    resp = requests.post(
        f"{manager.url}api/v3/shaman/batch-upload",
        data=body,
        headers={"Content-Type": "application/x-shaman-batch"},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    assert [f["status"] for f in resp.json()["files"]] == ["stored"] * len(datas)
    for data in datas:
        assert pending_path(manager.store, data).read_bytes() == data
    assert list((manager.store / "uploading").iterdir()) == []
    anonymous = tuning.anonymous_temps and system.ANONYMOUS_TEMPS_AVAILABLE
    assert manager.service.store.anonymous_temps == anonymous


def test_resubmitted_checkout_is_the_same_with_or_without_link_reuse(manager_factory, tuning):
    manager = manager_factory(tuning=tuning)
    datas = [os.urandom(100 + i) for i in range(20)]
    for data in datas:
        assert upload(manager.url, data).status_code == 204
    files = [
        {"sha": hashlib.sha256(d).hexdigest(), "size": len(d), "path": f"tex/{i}.png"}
        for i, d in enumerate(datas)
    ]
    for job in ("proj/job-1", "proj/job-2"):
        resp = requests.post(
            f"{manager.url}api/v3/shaman/checkout/create",
            json={"files": files, "checkoutPath": job},
            timeout=30,
        )
        assert resp.status_code == 200, resp.text
        for i, data in enumerate(datas):
            link = manager.jobs / job / f"tex/{i}.png"
            assert link.is_symlink()
            assert link.read_bytes() == data
    reused = manager.service.checkouts.links_reused
    assert reused == (len(datas) if tuning.reuse_links else 0)
