"""Request guards: Shaman disabled -> 503, bearer token when one is configured -> 401.

Handlers decorated with `public` (version, configuration) skip both guards.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ..config import Config
from ..errors import ShamanDisabled, Unauthorized

if TYPE_CHECKING:
    from ..service import ShamanService

_PUBLIC_ATTR = "_shaman_public"
H = TypeVar("H")


def public(handler: H) -> H:
    """Mark a handler as reachable without token and while Shaman is disabled."""
    setattr(handler, _PUBLIC_ATTR, True)
    return handler


def check_token(expected: str, authorization: str | None) -> bool:
    if not authorization:
        return False
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode(), expected.encode())


def ensure_access(config: Config, authorization: str | None) -> None:
    """Raise ShamanDisabled or Unauthorized unless this request may use Shaman."""
    if not config.shaman_enabled:
        raise ShamanDisabled("Shaman is disabled in this manager's configuration")
    if config.token is not None and not check_token(config.token, authorization):
        raise Unauthorized("missing or wrong bearer token")


def guard_middleware_for(service_key: web.AppKey[ShamanService]) -> Middleware:
    """Build the middleware; takes the app key so it works inside a sub-application."""

    @web.middleware
    async def guard_middleware(
        request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        match = request.match_info
        if match.http_exception is not None or getattr(match.handler, _PUBLIC_ATTR, False):
            return await handler(request)
        ensure_access(request.config_dict[service_key].config, request.headers.get("Authorization"))
        return await handler(request)

    return guard_middleware
