"""Shared fixtures: the real Shaman server on a loopback port.

`manager` starts the server (Shaman enabled, GC off) with storage in a fresh tmp
dir; `manager_factory(**config_overrides)` does the same with other settings,
e.g. `manager_factory(token="s3cret")` or `manager_factory(shaman_enabled=False)`.

Also: every test (and every process it starts) uses a private checksum/trace cache,
`blendfiles` is where the shared real .blend files are, and tests marked `root` are
deselected, with the reason, when the suite does not run as root.
`flamenco` / `flamenco_factory`: the stand-in Flamenco Manager (tests/flamenco_standin.py).
`gateway` / `gateway_factory`: our server in gateway mode in front of it (tests/gateway_helpers.py).
`lane_log` records what the fast lane (manager_plugin.http.fastlane) answered; `lane_off`
turns it off, so aiohttp answers every request.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flamenco_standin import flamenco, flamenco_factory  # noqa: F401  (fixtures)
from gateway_helpers import gateway, gateway_factory  # noqa: F401  (fixtures)
from helpers import turn_lane_off
from shared_files import blendfiles_dir

from manager_plugin.config import Config
from manager_plugin.http.fastlane import FastLane, Partial
from manager_plugin.http.server import BackgroundServer
from manager_plugin.service import ShamanService
from manager_plugin.store import FileStore
from manager_plugin.tuning import Tuning


@pytest.fixture(scope="session")
def blendfiles() -> Path:
    """The shared real .blend files (read-only: copy them before BAT opens them)."""
    return blendfiles_dir()


@pytest.fixture(scope="session", autouse=True)
def private_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Keep the suite out of the user's ~/.cache/flamenco-shaman, subprocesses included."""
    path = tmp_path_factory.mktemp("shaman-cache")
    before = os.environ.get("FLAMENCO_SHAMAN_CACHE_DIR")
    os.environ["FLAMENCO_SHAMAN_CACHE_DIR"] = str(path)
    yield path
    if before is None:
        os.environ.pop("FLAMENCO_SHAMAN_CACHE_DIR", None)
    else:
        os.environ["FLAMENCO_SHAMAN_CACHE_DIR"] = before


NEEDS_ROOT = "need root to mount a tmpfs (CI runs as root)"
_deselected_for_root = pytest.StashKey[list[str]]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect tests marked `root` when not root; they are listed in the summary."""
    if os.geteuid() == 0:
        return
    needs_root = [item for item in items if item.get_closest_marker("root")]
    if needs_root:
        items[:] = [item for item in items if not item.get_closest_marker("root")]
        config.hook.pytest_deselected(items=needs_root)
        config.stash[_deselected_for_root] = [item.nodeid for item in needs_root]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    names = terminalreporter.config.stash.get(_deselected_for_root, [])
    if names:
        terminalreporter.section("deselected: not running as root")
        terminalreporter.write_line(f"{len(names)} tests {NEEDS_ROOT}:")
        for name in names:
            terminalreporter.write_line(f"  {name}")


@dataclass
class RunningManager:
    """A live server: its base URL (trailing slash) and its storage directories."""

    url: str
    storage: Path
    config: Config
    service: ShamanService

    @property
    def jobs(self) -> Path:
        return self.storage / "jobs"

    @property
    def store(self) -> Path:
        return self.storage / "file-store"

    def api(self, path: str) -> str:
        """Full URL of an API path such as "api/v3/version"."""
        return self.url + path.lstrip("/")


ManagerFactory = Callable[..., RunningManager]


@pytest.fixture
def manager_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagerFactory]:
    servers: list[BackgroundServer] = []

    def start(**overrides: Any) -> RunningManager:
        settings: dict[str, Any] = {
            "listen": "127.0.0.1:0",
            "storage_path": tmp_path_factory.mktemp("storage"),
            "shaman_enabled": True,
            "gc_period": 0,
        }
        settings.update(overrides)
        config = Config(**settings)
        server = BackgroundServer(config)
        url = server.start()
        servers.append(server)
        return RunningManager(
            url=url, storage=config.storage_path, config=config, service=server.service
        )

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def manager(manager_factory: ManagerFactory) -> RunningManager:
    return manager_factory()


@pytest.fixture(params=["fast", "plain"])
def tuning(request: pytest.FixtureRequest) -> Tuning:
    """A test twice: with every Linux fast path of `shaman.tuning` (the default) and with
    none, against the same expectations."""
    return Tuning() if request.param == "fast" else Tuning.plain()


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    """A bare file store (no server) in a fresh tmp dir."""
    store = FileStore(tmp_path / "storage")
    store.ensure_dirs()
    return store


@pytest.fixture(params=["one thread", "threads"])
def checkout_modes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test twice: small checkouts run inline, big ones on the checkout pool. Use with
    `pytestmark = pytest.mark.usefixtures("checkout_modes")`."""
    if request.param == "threads":
        monkeypatch.setattr("manager_plugin.checkout_tree.PARALLEL_MIN", 1)


@pytest.fixture
def lane_log(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """One entry per request the fast lane was offered: True if it answered it (an
    upload whose body came in pieces is entered once, when the lane is done with it)."""
    taken: list[bool] = []

    def recording(method: Callable[..., object]) -> Callable[..., object]:
        def wrapper(self: FastLane, *args: Any) -> object:
            result = method(self, *args)
            if not isinstance(result, Partial):
                taken.append(isinstance(result, bytes))
            return result

        return wrapper

    monkeypatch.setattr(FastLane, "answer", recording(FastLane.answer))
    monkeypatch.setattr(FastLane, "more", recording(FastLane.more))
    return taken


@pytest.fixture
def lane_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast lane declines everything: aiohttp answers every request."""
    turn_lane_off(monkeypatch)
