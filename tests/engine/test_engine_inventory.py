"""The submission's inventory and the reading of upload answers: pure rules, no threads,
no network."""

from __future__ import annotations

import pytest
from flamenco_shaman.engine.inventory import Entry, Inventory
from flamenco_shaman.engine.outcome import Outcome, classify

A, B = "a" * 64, "b" * 64


def hashed(inventory: Inventory, path: str, sha: str, size: int) -> Entry:
    entry = inventory.add(path, f"/src/{path}", temporary=False)
    assert entry is not None
    entry.sha, entry.size = sha, size
    return entry


def test_a_pack_path_is_taken_once():
    inventory = Inventory(on_settled=lambda files, nbytes: None)
    assert inventory.add("seq/0001.png", "/x/0001.png", temporary=False) is not None
    assert inventory.add("seq/0001.png", "/x/0001.png", temporary=False) is None
    assert [e.pack_path for e in inventory.entries()] == ["seq/0001.png"]


def test_one_blob_per_identity_and_settling_counts_every_path_once():
    settled: list[tuple[int, int]] = []
    inventory = Inventory(on_settled=lambda files, nbytes: settled.append((files, nbytes)))
    first = inventory.attach(hashed(inventory, "a.png", A, 10))
    assert first is not None
    assert inventory.attach(hashed(inventory, "copy/a.png", A, 10)) is None  # same identity
    inventory.settle(first)
    inventory.settle(first)
    assert settled == [(2, 20)]
    # A path joining an identity the manager already has counts as settled at once.
    assert inventory.attach(hashed(inventory, "late/a.png", A, 10)) is None
    assert settled == [(2, 20), (1, 10)]


def test_a_changed_file_moves_to_its_new_identity_and_is_deferred_to_the_next_round():
    inventory = Inventory(on_settled=lambda files, nbytes: None)
    entry = hashed(inventory, "wood.png", A, 10)
    blob = inventory.attach(entry)
    assert blob is not None
    inventory.settle(blob)
    key = inventory.reidentify(entry, B, 12, 7)
    assert key == (B, 12)
    assert blob.entries == []
    inventory.defer([key])
    (moved,) = inventory.take_round(set())
    assert (moved.key, moved.settled, moved.entries) == ((B, 12), False, [entry])
    # The old identity no path has any more is not asked about.
    assert inventory.take_round({(A, 10)}) == []
    assert inventory.checkout_files() == [{"sha": B, "size": 12, "path": "wood.png"}]


def test_deferred_paths_name_every_path_of_a_deferred_identity():
    inventory = Inventory(on_settled=lambda files, nbytes: None)
    inventory.attach(hashed(inventory, "b.png", A, 1))
    inventory.attach(hashed(inventory, "a.png", A, 1))
    inventory.defer([(A, 1)])
    assert inventory.deferred_paths() == ["a.png", "b.png"]


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.STORED),  # Flamenco's Go Manager
        (204, Outcome.STORED),  # the spec
        (201, Outcome.STORED),
        (208, Outcome.ALREADY_STORED),
        (425, Outcome.DEFER),
        (417, Outcome.REJECTED),
        (0, Outcome.RETRY),  # the connection broke
        (500, Outcome.RETRY),
        (503, Outcome.RETRY),
        (404, Outcome.NO_BATCHES),
        (405, Outcome.NO_BATCHES),
        (401, Outcome.REFUSED),
        (403, Outcome.REFUSED),
        (400, Outcome.FAILED),
        (413, Outcome.FAILED),
        (302, Outcome.FAILED),
    ],
)
def test_classify_reads_single_and_batch_upload_statuses_alike(status, outcome):
    assert classify(status) is outcome
