"""The aiohttp-backed httpx transport against a real loopback server."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web

from src.services.base.client import BaseClient, RetryPolicy, build_http_client
from src.services.base.exceptions import UpstreamConnectionError, UpstreamTimeoutError
from src.services.base.transport import AiohttpTransport

pytestmark = pytest.mark.anyio


class Upstream:
    def __init__(self) -> None:
        self.stream_closed_early = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_post("/echo", self.echo)
        self.app.router.add_get("/gzip", self.gzipped)
        self.app.router.add_get("/stream", self.stream)
        self.app.router.add_get("/slow", self.slow)

    async def echo(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"body": (await request.read()).decode(), "headers": dict(request.headers)}
        )

    async def gzipped(self, _: web.Request) -> web.Response:
        return web.Response(
            body=gzip.compress(b'{"ok": true}'),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for index in range(200):
                await response.write(f"data: {index}\n\n".encode())
                await asyncio.sleep(0.005)
        except (ConnectionResetError, asyncio.CancelledError):
            self.stream_closed_early.set()
            raise
        return response

    async def slow(self, _: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, str]]:
    server = Upstream()
    runner = web.AppRunner(server.app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_post_round_trip_keeps_body_and_headers(upstream: tuple[Upstream, str]) -> None:
    _, url = upstream
    async with httpx.AsyncClient(transport=AiohttpTransport(), base_url=url) as client:
        response = await client.post("/echo", json={"a": 1}, headers={"Authorization": "Bearer k"})

    assert response.status_code == 200
    echoed = response.json()
    assert json.loads(echoed["body"]) == {"a": 1}
    assert echoed["headers"]["Authorization"] == "Bearer k"
    assert echoed["headers"]["Content-Type"] == "application/json"


async def test_gzip_bodies_are_decoded_once(upstream: tuple[Upstream, str]) -> None:
    _, url = upstream
    async with httpx.AsyncClient(transport=AiohttpTransport(), base_url=url) as client:
        response = await client.get("/gzip")

    assert response.json() == {"ok": True}


async def test_closing_a_stream_early_closes_the_upstream_connection(
    upstream: tuple[Upstream, str],
) -> None:
    server, url = upstream
    async with httpx.AsyncClient(transport=AiohttpTransport(), base_url=url) as client:
        async with client.stream("GET", "/stream") as response:
            async for line in response.aiter_lines():
                if line == "data: 3":
                    break
        await asyncio.wait_for(server.stream_closed_early.wait(), timeout=2)

        # The pool is still usable afterwards.
        assert (await client.post("/echo", content=b"x")).status_code == 200


async def test_read_timeout_is_an_upstream_timeout(upstream: tuple[Upstream, str]) -> None:
    _, url = upstream
    http = build_http_client(
        url, api_key="", timeout_seconds=0.05, connect_timeout_seconds=1, max_connections=10
    )
    async with http:
        with pytest.raises(UpstreamTimeoutError) as caught:
            await BaseClient(http).request_bytes("GET", "slow")

    assert caught.value.during_connect is False


async def test_connection_refused_is_an_upstream_connection_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        http = build_http_client(
            f"http://127.0.0.1:{port}",
            api_key="",
            timeout_seconds=1,
            connect_timeout_seconds=1,
            max_connections=10,
        )
        async with http:
            with pytest.raises(UpstreamConnectionError):
                await BaseClient(http, RetryPolicy(attempts=2), sleep=no_wait).request_bytes(
                    "GET", "models"
                )


async def no_wait(_: float) -> None:
    return None
