"""A stand-in for Home Assistant's ingress proxy: serves the panel under /api/hassio_ingress/<token>/, adds
X-Ingress-Path, streams the responses (events included), and connects from its own loopback address."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
from aiohttp import web

PROXY_ADDRESS = "127.0.0.2"  # the panel's allowlist holds this, as the add-on's holds 172.30.32.2
TOKEN = "Xyz0123456789abcdef"
PREFIX = f"/api/hassio_ingress/{TOKEN}"


@dataclass
class Line:
    """The network between the page and the panel: `cut()` silences every open response without closing it,
    as a lost connection does; new requests go through again."""

    generation: int = 0

    def cut(self) -> None:
        self.generation += 1


@asynccontextmanager
async def ingress_proxy(panel_port: int, line: Line | None = None) -> AsyncIterator[str]:
    line = line or Line()
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(local_addr=(PROXY_ADDRESS, 0)),
        timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
        auto_decompress=False,
    )

    async def forward(request: web.Request) -> web.StreamResponse:
        path = request.match_info["tail"]
        generation = line.generation
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        headers["X-Ingress-Path"] = PREFIX
        async with session.request(
            request.method,
            f"http://127.0.0.1:{panel_port}/{path}",
            params=request.query,
            headers=headers,
            data=await request.read(),
        ) as upstream:
            response = web.StreamResponse(status=upstream.status)
            for key, value in upstream.headers.items():
                if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                    response.headers[key] = value
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    if line.generation == generation:  # a lost line passes nothing, and says nothing
                        await response.write(chunk)
            except ConnectionResetError:
                pass  # the browser went away (a page closed while its event stream was open)
            return response

    app = web.Application()
    app.router.add_route("*", PREFIX + "/{tail:.*}", forward)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}{PREFIX}/"
    finally:
        await runner.cleanup()
        await session.close()
