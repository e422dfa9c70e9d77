"""The gateway (our server in gateway mode) in front of the stand-in Flamenco Manager.

`gateway_factory(**options)` starts a stand-in (with the probe routes of
tests/standin_probes.py) and our server in front of it on the same storage;
`read_timeout=` sets the gateway's idle read timeout, `upstream=` points it elsewhere,
`storage=` gives it a storage of its own (a misconfiguration).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flamenco_standin import FlamencoStandin, StandinFactory
from standin_probes import setup_probe_routes

from manager_plugin.config import Config
from manager_plugin.gateway_config import GatewaySettings
from manager_plugin.http.server import BackgroundServer


@dataclass
class RunningGateway:
    url: str  # the gateway's base URL, trailing slash
    flamenco: FlamencoStandin
    server: BackgroundServer

    @property
    def storage(self) -> Path:
        return self.flamenco.storage

    def api(self, path: str) -> str:
        return self.url + path.lstrip("/")


GatewayFactory = Callable[..., RunningGateway]


@pytest.fixture
def gateway_factory(flamenco_factory: StandinFactory) -> Iterator[GatewayFactory]:
    servers: list[BackgroundServer] = []

    def start(
        *,
        read_timeout: float = 60.0,
        upstream: str | None = None,
        storage: Path | None = None,
        **standin: Any,
    ) -> RunningGateway:
        flamenco = flamenco_factory(extra_routes=(setup_probe_routes,), **standin)
        settings = GatewaySettings(
            upstream=upstream or flamenco.url.rstrip("/"), read_timeout=read_timeout
        )
        config = Config(
            listen="127.0.0.1:0",
            storage_path=storage or flamenco.storage,
            gc_period=0,
            gateway=settings,
        )
        server = BackgroundServer(config)
        url = server.start()
        servers.append(server)
        return RunningGateway(url=url, flamenco=flamenco, server=server)

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def gateway(gateway_factory: GatewayFactory) -> RunningGateway:
    return gateway_factory()
