"""HTTP layer (aiohttp): routes, error mapping, auth and access logging.

Handlers only translate requests into core calls and core errors into statuses.
"""

from .app import ROUTE_SETS, SERVICE, create_app

__all__ = ["ROUTE_SETS", "SERVICE", "create_app"]
