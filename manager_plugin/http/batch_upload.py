"""`POST /api/v3/shaman/batch-upload` (our extension): many small files in one request.

Flamenco's protocol costs one request per file; clients that find this route use it
for small files and fall back to `files/{checksum}/{filesize}` when it answers 404.
The wire format and limits are in `manager_plugin.batchupload`.
"""

from __future__ import annotations

from aiohttp import web

from ..batchupload import BatchReceiver
from ..service import ShamanService
from .accesslog import LOG_EXTRA
from .bodies import body_pace, refuse_encoded_body

BATCH_UPLOAD_PATH = "/api/v3/shaman/batch-upload"
BATCH_CONTENT_TYPE = "application/x-shaman-batch"


def setup_batch_routes(app: web.Application, service: ShamanService) -> None:
    """Register the batch upload route on `app`, serving from `service`."""

    async def batch_upload(request: web.Request) -> web.Response:
        refuse_encoded_body(request)
        receiver = BatchReceiver(
            service.store,
            request.content.read,
            service.config.body_read_timeout,
            body_pace(service.config),
        )
        try:
            files = await receiver.run()
        finally:
            request[LOG_EXTRA] = (
                f" records={receiver.records_read} stored={receiver.records_stored}"
            )
        return web.json_response({"files": files})

    app.router.add_post(BATCH_UPLOAD_PATH, batch_upload)
