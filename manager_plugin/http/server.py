"""Running the app: on the command line until a signal, or in a background thread."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
from collections.abc import Callable

from aiohttp import web

from ..config import Config, parse_listen
from ..service import ShamanService
from .app import SERVICE, create_app
from .connections import ConnectionGuard, GuardedRunner, GuardedServer
from .descriptors import (
    ACCEPT_BATCH,
    deepen_accept_queue,
    default_max_connections,
    fd_limit,
    listen_backlog,
    quiet_accept_errors,
    raise_fd_limit,
)
from .fastlane import FastLane, FastLaneServer
from .logtext import EscapingFilter
from .throttledlog import ThrottledLog

SHUTDOWN_TIMEOUT = 10.0


def listening_fds(site: web.TCPSite) -> list[int]:
    """The descriptors `site` listens on."""
    server = site._server  # aiohttp keeps the asyncio server it started here
    sockets = getattr(server, "sockets", None) or ()
    return [sock.fileno() for sock in sockets]


def url_for(host: str | None, port: int) -> str:
    if host is None or host in ("", "0.0.0.0", "::"):
        host = "0.0.0.0" if host != "::" else "::"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


# Both override web.Server.__call__; the guard's may answer with a refusing protocol
# instead of a RequestHandler, so the two signatures differ in their return type.
class _Server(GuardedServer, FastLaneServer):  # type: ignore[misc]
    """Connections admitted and given header deadlines by the guard; their handlers
    take plain per-file requests in the fast lane and accept the obs-folded header
    lines of Flamenco add-ons 3.6-3.8.5."""


class _Runner(GuardedRunner):
    server_class = _Server


async def start_site(
    config: Config, service: ShamanService | None = None
) -> tuple[web.AppRunner, str]:
    """Start serving `config`; return the runner (to clean up) and the real URL."""
    host, port = parse_listen(config.listen)
    app = create_app(config, service=service)
    overload = ThrottledLog(logging.getLogger("manager_plugin.http.overload"))
    quiet_accept_errors(asyncio.get_running_loop(), overload)
    cap = config.max_connections or default_max_connections(fd_limit())
    runner = _Runner(
        app,
        guard=ConnectionGuard(cap, config.header_timeout, overload),
        access_log=None,
        auto_decompress=False,  # bodies are taken as sent: see bodies.refuse_encoded_body
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
    )
    await runner.setup()
    assert isinstance(runner.server, FastLaneServer)
    runner.server.lane = FastLane(app[SERVICE])
    site = web.TCPSite(runner, host, port, backlog=ACCEPT_BATCH)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    deepen_accept_queue(listening_fds(site), listen_backlog())
    real_port = port
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            real_port = address[1]
            break
    return runner, url_for(host, real_port)


async def serve_until_signal(config: Config, on_ready: Callable[[str], None]) -> None:
    """Serve until SIGINT/SIGTERM, then shut down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
            signal.signal(signum, lambda *_: loop.call_soon_threadsafe(stop.set))
    raise_fd_limit()
    for handler in logging.getLogger().handlers:
        handler.addFilter(EscapingFilter())  # one line per record, whatever a client sent
    runner, url = await start_site(config)
    try:
        on_ready(url)
        await stop.wait()
    finally:
        await runner.cleanup()


class BackgroundServer:
    """The real server on its own event loop in a daemon thread (tests, embedding)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.service = ShamanService(config)
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="shaman-server", daemon=True)

    def start(self) -> str:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self.url

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            runner, self.url = await start_site(self.config, self.service)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()
            await asyncio.to_thread(self.service.close)  # its worker threads

    def __enter__(self) -> BackgroundServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def print_ready_line(url: str, config: Config) -> None:
    upstream = f" upstream={config.gateway.upstream}" if config.gateway is not None else ""
    print(f"Shaman listening on {url} storage={config.storage_path}{upstream}", flush=True)
    sys.stdout.flush()
