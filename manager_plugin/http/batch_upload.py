"""`POST /api/v3/shaman/batch-upload` (our extension): many small files in one request.

Flamenco's protocol costs one request per file; clients that find this route use it
for small files and fall back to `files/{checksum}/{filesize}` when it answers 404.
The record format and its limits are in `manager_plugin.protocol`; reading a body's
records and storing them is the core's (`ShamanService.batch_receiver`).
"""

from __future__ import annotations

from aiohttp import web

from ..service import ShamanService
from .accesslog import LOG_EXTRA
from .bodies import body_pace, refuse_encoded_body

BATCH_UPLOAD_PATH = "/api/v3/shaman/batch-upload"


def setup_batch_upload_route(app: web.Application, service: ShamanService) -> None:
    """Register the batch upload route on `app`, serving from `service`."""

    async def batch_upload(request: web.Request) -> web.Response:
        refuse_encoded_body(request)
        receiver = service.batch_receiver(request.content.read, body_pace(service.config))
        try:
            files = await receiver.run()
        finally:
            request[LOG_EXTRA] = (
                f" records={receiver.records_read} stored={receiver.records_stored}"
            )
        return web.json_response({"files": files})

    app.router.add_post(BATCH_UPLOAD_PATH, batch_upload)
