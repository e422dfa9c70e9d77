"""`create_app(config)`: the aiohttp application (embeddable as a sub-app).

Route sets are plain functions `setup(app, service)` listed in ROUTE_SETS; adding
another protocol (e.g. the legacy Shaman API) is one entry there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from ..config import Config
from ..service import ShamanService
from .accesslog import access_log_middleware, write_out_access_log
from .auth import guard_middleware_for
from .batch_upload import setup_batch_upload_route
from .bigbodies import add_body_slots
from .errors import error_middleware
from .gateway import setup_gateway_routes
from .legacy import setup_legacy_routes
from .openapi import add_openapi_route
from .routes import setup_flamenco_routes

log = logging.getLogger(__name__)

SERVICE: web.AppKey[ShamanService] = web.AppKey("shaman_service", ShamanService)
JSON_MAX_SIZE = 64 * 1024 * 1024  # JSON bodies only; uploads stream and are not limited

RouteSetup = Callable[[web.Application, ShamanService], None]

# Every set of routes the server speaks. Add one line per protocol.
ROUTE_SETS: list[RouteSetup] = [
    setup_flamenco_routes,
    setup_batch_upload_route,
    setup_legacy_routes,
]


def create_app(config: Config, *, service: ShamanService | None = None) -> web.Application:
    """Build the application serving `config`'s storage (or the given `service`)."""
    owned = service is None
    service = service or ShamanService(config)
    app = web.Application(
        client_max_size=JSON_MAX_SIZE,
        middlewares=[access_log_middleware, error_middleware, guard_middleware_for(SERVICE)],
    )
    app[SERVICE] = service
    add_body_slots(app)
    for setup in ROUTE_SETS:
        setup(app, service)
    add_openapi_route(app)
    if service.config.gateway is not None:
        # Last: its route catches all.
        setup_gateway_routes(app, service.config.gateway, service.config.jobs_path)
    app.on_startup.append(_prepare_storage)
    app.cleanup_ctx.append(_periodic_gc)
    app.on_cleanup.append(write_out_access_log)
    if owned:  # a service handed in belongs to the caller, who closes it
        app.on_cleanup.append(_close_service)
    return app


async def _close_service(app: web.Application) -> None:
    await asyncio.to_thread(app[SERVICE].close)


async def _prepare_storage(app: web.Application) -> None:
    service = app[SERVICE]
    if service.config.shaman_enabled:
        await asyncio.to_thread(service.prepare_storage)


async def _periodic_gc(app: web.Application) -> AsyncIterator[None]:
    service = app[SERVICE]
    period = service.config.gc_period.total_seconds()
    task: asyncio.Task[None] | None = None
    if service.config.shaman_enabled and period > 0:
        task = asyncio.create_task(_gc_loop(service, period))
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _gc_loop(service: ShamanService, period: float) -> None:
    while True:
        await asyncio.sleep(period)
        try:
            await asyncio.to_thread(service.collect_garbage)
        except Exception:
            log.exception("shaman gc: sweep failed; will try again next period")
