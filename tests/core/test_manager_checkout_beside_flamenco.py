"""Checkouts as Flamenco Manager's own clients and its job deletion expect them."""

from __future__ import annotations

import os
import re

import pytest
import requests
from checkout_helpers import put
from conftest import RunningManager

from manager_plugin.checkout import CheckoutBuilder
from manager_plugin.locking import StorageLock
from manager_plugin.store import FileStore


def builder(store: FileStore) -> CheckoutBuilder:
    return CheckoutBuilder(store, store.storage_root / "jobs", StorageLock(store.root / ".lock"))


def test_checkout_path_dot_becomes_dot_dash_four_characters_as_in_go(store: FileStore):
    spec = put(store, b"scene", "scene.blend")
    first = builder(store).create(".", [spec])
    second = builder(store).create(".", [spec])
    for used in (first, second):
        assert re.fullmatch(r"\.-[a-z0-9]{4}", used)
        assert (store.storage_root / "jobs" / used / "scene.blend").read_bytes() == b"scene"
    assert first != second


def test_checkout_path_dot_over_http(manager: RunningManager):
    data = b"x" * 100
    spec = put(FileStore(manager.storage), data, "scene.blend")
    answer = requests.post(
        manager.api("api/v3/shaman/checkout/create"),
        json={
            "files": [{"sha": spec.sha, "size": spec.size, "path": spec.path}],
            "checkoutPath": ".",
        },
    )
    assert answer.status_code == 200
    used = answer.json()["checkoutPath"]
    assert used.startswith(".-") and (manager.jobs / used / "scene.blend").read_bytes() == data


@pytest.mark.parametrize("path", ["./x", "x/.", "..", "a/./b"])
def test_other_dot_components_stay_refused(store: FileStore, path: str):
    spec = put(store, b"scene", "scene.blend")
    with pytest.raises(Exception, match="checkoutPath"):
        builder(store).create(path, [spec])


def test_jobs_dir_removed_by_flamenco_mid_checkout_is_made_again(
    store: FileStore, monkeypatch: pytest.MonkeyPatch
):
    """Flamenco deleting the last job removes jobs/ itself (its parent-if-empty rule);
    a checkout that saw jobs/ a moment before must not fail for it."""
    spec = put(store, b"scene", "scene.blend")
    checkouts = builder(store)
    jobs = store.storage_root / "jobs"
    make_parents = CheckoutBuilder._make_parents
    removed: list[bool] = []

    def parents_then_flamenco_deletes(self, jobs_dir, parent_rel, created):  # type: ignore[no-untyped-def]
        parent = make_parents(self, jobs_dir, parent_rel, created)
        if not removed:
            os.rmdir(jobs)
            removed.append(True)
        return parent

    monkeypatch.setattr(CheckoutBuilder, "_make_parents", parents_then_flamenco_deletes)
    assert checkouts.create("shot", [spec]) == "shot"
    assert removed and (jobs / "shot" / "scene.blend").read_bytes() == b"scene"
