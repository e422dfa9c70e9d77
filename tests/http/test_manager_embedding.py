"""Another aiohttp manager can mount Shaman as a sub-application."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import aiohttp
from aiohttp import web
from helpers import pending_path

from manager_plugin.config import Config
from manager_plugin.http import create_app


async def host_page(request: web.Request) -> web.Response:
    return web.Response(text="the host manager's own page")


def test_shaman_works_mounted_under_a_prefix_of_another_app(tmp_path: Path):
    data = b"embedded"
    sha, size = hashlib.sha256(data).hexdigest(), len(data)

    async def scenario() -> tuple[int, dict[str, str], int]:
        host_app = web.Application()
        host_app.router.add_get("/", host_page)
        config = Config(storage_path=tmp_path, token="t0k", gc_period=0)
        host_app.add_subapp("/farm/", create_app(config))
        runner = web.AppRunner(host_app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        base = f"http://127.0.0.1:{port}/farm/api/v3/shaman/files/{sha}/{size}"
        try:
            async with aiohttp.ClientSession() as session:
                async with session.post(base, data=data) as denied:
                    denied_status = denied.status
                headers = {"Authorization": "Bearer t0k"}
                async with session.post(base, data=data, headers=headers) as stored:
                    stored_status = stored.status
                async with session.get(base, headers=headers) as status:
                    return denied_status, await status.json(), stored_status
        finally:
            await runner.cleanup()

    denied, status, stored = asyncio.run(scenario())
    assert denied == 401
    assert stored == 204
    assert status == {"status": "stored"}
    assert pending_path(tmp_path / "file-store", data).exists()  # small: .blob at checkout
