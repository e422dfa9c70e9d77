"""ShamanService, the core's one front door: every operation a protocol needs, driven
directly (no HTTP), and the HTTP layer using nothing else of the core's parts."""

from __future__ import annotations

import ast
import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from manager_plugin import errors
from manager_plugin.config import Config
from manager_plugin.errors import InvalidPath, MissingFiles, ShamanError
from manager_plugin.http.errors import LEGACY_STATUS, STATUS, status_of
from manager_plugin.models import FileSpec
from manager_plugin.service import ShamanService
from manager_plugin.store import Received

HTTP_DIR = Path(__file__).resolve().parents[2] / "manager_plugin" / "http"


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ShamanService]:
    service = ShamanService(Config(storage_path=tmp_path / "storage"))
    service.prepare_storage()
    yield service
    service.close()


def _reader(data: bytes):
    chunks = [data, b""]

    async def read(_n: int) -> bytes:
        return chunks.pop(0) if chunks else b""

    return read


def receive(service: ShamanService, data: bytes) -> tuple[FileSpec, Received]:
    sha = hashlib.sha256(data).hexdigest()
    outcome = asyncio.run(service.receive(sha, len(data), _reader(data)))
    return FileSpec(sha, len(data), "scene.blend"), outcome


def test_a_file_is_received_once_then_reported_as_already_stored(service):
    spec, first = receive(service, b"scene bytes")
    _, second = receive(service, b"scene bytes")
    assert (first, second) == (Received.STORED, Received.ALREADY_STORED)
    assert service.file_status(spec.sha, spec.size) == "stored"
    assert service.requirements([spec]) == []


def test_checkout_when_uploaded_fails_at_once_when_nobody_uploads_the_missing_file(service):
    missing = FileSpec("0" * 64, 3, "missing.png")
    with pytest.raises(MissingFiles) as info:
        asyncio.run(service.checkout_when_uploaded("job", [missing], wait_seconds=60))
    assert info.value.files == [missing]
    assert not (service.config.jobs_path / "job").exists()


def test_erase_checkout_removes_the_checkout_and_keeps_the_blobs(service):
    spec, _ = receive(service, b"scene bytes")
    made = service.create_checkout("project/shot", [spec])
    checkout = service.config.jobs_path / made.path
    assert (checkout / "scene.blend").read_bytes() == b"scene bytes"
    assert service.erase_checkout(made.path)
    assert not checkout.exists()
    assert service.file_status(spec.sha, spec.size) == "stored"


def test_erase_checkout_unlinks_a_symlinked_checkout_without_following_it(service, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    service.config.jobs_path.mkdir(parents=True, exist_ok=True)
    (service.config.jobs_path / "link").symlink_to(outside)
    assert service.erase_checkout("link")
    assert (outside / "keep.txt").read_text() == "mine"


def test_erase_checkout_refuses_a_parent_that_leads_outside_jobs(service, tmp_path):
    outside = tmp_path / "outside"
    (outside / "victim").mkdir(parents=True)
    service.config.jobs_path.mkdir(parents=True, exist_ok=True)
    (service.config.jobs_path / "sneaky").symlink_to(outside)
    with pytest.raises(InvalidPath) as info:
        service.erase_checkout("sneaky/victim")
    assert info.value.field == "checkoutPath"
    assert (outside / "victim").is_dir()


@pytest.mark.parametrize("path", ["../outside", "/etc", "a//b", ""])
def test_erase_checkout_refuses_an_invalid_checkout_path(service, path):
    with pytest.raises(InvalidPath, match="^checkoutPath: "):
        service.erase_checkout(path)


def _error_classes(base: type[ShamanError]) -> Iterator[type[ShamanError]]:
    for cls in base.__subclasses__():
        yield cls
        yield from _error_classes(cls)


ERROR_CLASSES = sorted(_error_classes(ShamanError), key=lambda cls: cls.__name__)


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=[cls.__name__ for cls in ERROR_CLASSES])
def test_every_core_error_has_a_status_in_both_tables(cls: type[ShamanError]):
    assert not hasattr(cls, "status"), "statuses belong in manager_plugin.http.errors"
    found = [klass for klass in cls.__mro__ if klass in STATUS]
    assert found, f"{cls.__name__} would be a 500"
    assert found[0] in LEGACY_STATUS


def test_legacy_overrides_only_what_bat_reads_differently():
    changed = {cls for cls in LEGACY_STATUS if LEGACY_STATUS[cls] != STATUS.get(cls)}
    assert changed == {errors.MustDefer}
    assert status_of(errors.MustDefer("x"), LEGACY_STATUS) == 208
    assert status_of(InvalidPath("path", "bad", 3)) == 400


PARTS = {"store", "checkouts", "gc", "lock"}


@pytest.mark.parametrize("module", sorted(p.name for p in HTTP_DIR.glob("*.py")))
def test_http_handlers_use_only_the_service_facade(module):
    tree = ast.parse((HTTP_DIR / module).read_text(encoding="utf-8"))
    reached = [
        f"line {node.lineno}: service.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr in PARTS
        and isinstance(node.value, ast.Name)
        and node.value.id == "service"
    ]
    assert reached == []
