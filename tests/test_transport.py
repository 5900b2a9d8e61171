"""The wire transport against a real loopback server: HTTP, the pool, timeouts and the clock."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from aiohttp import web

from src.services.base.exceptions import (
    UpstreamConnectionError,
    UpstreamInvalidResponseError,
    UpstreamTimeoutError,
)
from src.services.base.transport import WireBody, WireTransport

pytestmark = pytest.mark.anyio

DELAY = 0.2
TIMEOUTS = {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}


@dataclass
class Upstream:
    url: str = ""
    stream_closed_early: asyncio.Event = field(default_factory=asyncio.Event)
    peers: set[int] = field(default_factory=set)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/echo", self.echo)
        app.router.add_get("/late-body", self.late_body)
        app.router.add_get("/chunked", self.chunked)
        app.router.add_get("/stream", self.stream)
        app.router.add_get("/slow", self.slow)
        app.router.add_get("/big", self.big)
        return app

    async def echo(self, request: web.Request) -> web.Response:
        assert request.transport is not None
        self.peers.add(request.transport.get_extra_info("peername")[1])
        headers = {name.lower(): value for name, value in request.headers.items()}
        return web.json_response({"body": (await request.read()).decode(), "headers": headers})

    async def late_body(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        await asyncio.sleep(DELAY)
        await response.write(b"late")
        await response.write_eof()
        return response

    async def chunked(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in (b"one ", b"two ", b"three"):
            await response.write(part)
            await asyncio.sleep(0.01)
        await response.write_eof()
        return response

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for index in range(500):
                await response.write(f"data: {index}\n\n".encode())
                await asyncio.sleep(0.01)
        except (ConnectionResetError, asyncio.CancelledError):
            self.stream_closed_early.set()
            raise
        return response

    async def slow(self, _: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response(text="late")

    async def big(self, _: web.Request) -> web.Response:
        return web.Response(body=b"x" * 100_000)


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    server = Upstream()
    runner = web.AppRunner(server.app(), handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield server
    finally:
        await runner.cleanup()


@pytest.fixture
async def transport() -> AsyncIterator[WireTransport]:
    wire = WireTransport(max_connections=4)
    yield wire
    await wire.aclose()


def request(
    method: str, url: str, *, content: bytes | None = None, **timeouts: float
) -> httpx.Request:
    return httpx.Request(
        method,
        url,
        content=content,
        headers={"authorization": "Bearer k", "content-type": "application/json"},
        extensions={"timeout": {**TIMEOUTS, **timeouts}},
    )


async def body_of(response: httpx.Response) -> bytes:
    assert isinstance(response.stream, WireBody)
    try:
        return await response.stream.read()
    finally:
        await response.stream.aclose()


async def test_a_post_arrives_whole_and_its_answer_comes_back(
    upstream: Upstream, transport: WireTransport
) -> None:
    response = await transport.handle_async_request(
        request("POST", f"{upstream.url}/echo", content=b'{"a": 1}')
    )
    echoed = json.loads(await body_of(response))

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert json.loads(echoed["body"]) == {"a": 1}
    assert echoed["headers"]["authorization"] == "Bearer k"
    assert echoed["headers"]["content-length"] == "8"
    assert echoed["headers"]["host"] == upstream.url.removeprefix("http://")


async def test_sequential_requests_reuse_one_connection(
    upstream: Upstream, transport: WireTransport
) -> None:
    for _ in range(5):
        await body_of(await transport.handle_async_request(request("POST", f"{upstream.url}/echo")))

    assert len(upstream.peers) == 1
    assert transport.stats().most_open == 1
    assert transport.stats().requests == 5


async def test_the_end_is_stamped_when_the_last_byte_arrives(
    upstream: Upstream, transport: WireTransport
) -> None:
    response = await transport.handle_async_request(request("GET", f"{upstream.url}/late-body"))
    assert isinstance(response.stream, WireBody)
    timing = response.stream.timing
    await asyncio.sleep(DELAY * 5)  # read long after the body arrived: the stamp must not move
    assert await body_of(response) == b"late"

    assert timing.sent <= timing.head <= timing.end
    assert DELAY * 0.9 <= timing.end - timing.sent < DELAY * 4


async def test_chunked_bodies_arrive_in_order_with_rising_arrival_times(
    upstream: Upstream, transport: WireTransport
) -> None:
    response = await transport.handle_async_request(request("GET", f"{upstream.url}/chunked"))
    assert isinstance(response.stream, WireBody)
    pieces = []
    while (item := await response.stream.next()) is not None:
        pieces.append(item)
    await response.stream.aclose()

    assert b"".join(data for data, _ in pieces) == b"one two three"
    arrivals = [arrived for _, arrived in pieces]
    assert arrivals == sorted(arrivals)


async def test_closing_a_stream_early_closes_the_upstream_connection(
    upstream: Upstream, transport: WireTransport
) -> None:
    response = await transport.handle_async_request(request("GET", f"{upstream.url}/stream"))
    assert isinstance(response.stream, WireBody)
    assert await response.stream.next() is not None
    await response.stream.aclose()

    await asyncio.wait_for(upstream.stream_closed_early.wait(), timeout=10)
    assert transport.stats().open == 0
    # The pool is still usable afterwards.
    answer = await transport.handle_async_request(request("POST", f"{upstream.url}/echo"))
    assert answer.status_code == 200
    await body_of(answer)


async def test_a_silent_upstream_is_a_read_timeout(
    upstream: Upstream, transport: WireTransport
) -> None:
    with pytest.raises(UpstreamTimeoutError) as caught:
        await asyncio.wait_for(
            transport.handle_async_request(request("GET", f"{upstream.url}/slow", read=0.05)), 10
        )

    assert caught.value.during_connect is False
    assert transport.stats().in_use == 0


async def test_a_refused_connection_is_a_connection_error_before_any_answer(
    transport: WireTransport,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = sock.getsockname()[1]
        with pytest.raises(UpstreamConnectionError) as caught:
            await transport.handle_async_request(request("GET", f"http://127.0.0.1:{port}/x"))

    assert caught.value.before_answer is True
    assert transport.stats().open == 0


async def test_a_full_pool_waits_no_longer_than_the_pool_timeout(upstream: Upstream) -> None:
    wire = WireTransport(max_connections=1)
    try:
        hanging = asyncio.ensure_future(
            wire.handle_async_request(request("GET", f"{upstream.url}/slow"))
        )
        await asyncio.sleep(0.05)
        with pytest.raises(UpstreamTimeoutError, match="No free upstream connection") as caught:
            await asyncio.wait_for(
                wire.handle_async_request(request("POST", f"{upstream.url}/echo", pool=0.05)), 10
            )
        assert caught.value.during_connect is True
        hanging.cancel()
        await asyncio.gather(hanging, return_exceptions=True)
        assert wire.stats().in_use == 0
    finally:
        await wire.aclose()


async def test_the_pool_never_opens_more_than_its_limit(
    upstream: Upstream, transport: WireTransport
) -> None:
    async def one() -> int:
        response = await transport.handle_async_request(request("GET", f"{upstream.url}/late-body"))
        await body_of(response)
        return response.status_code

    statuses = await asyncio.gather(*(one() for _ in range(12)))

    assert statuses == [200] * 12
    assert transport.stats().most_open == 4


async def test_an_answer_over_the_size_cap_is_refused(upstream: Upstream) -> None:
    wire = WireTransport(max_body_bytes=10_000)
    try:
        with pytest.raises(
            UpstreamInvalidResponseError, match="MAX_UPSTREAM_RESPONSE_BYTES=10000 bytes"
        ):
            response = await wire.handle_async_request(request("GET", f"{upstream.url}/big"))
            await body_of(response)
        assert wire.stats().open == 0
    finally:
        await wire.aclose()


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            # Keep-alive promised, then the connection closed once idle: what a server's
            # idle timeout does.
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    wire = WireTransport()
    try:
        assert await body_of(await wire.handle_async_request(request("GET", url))) == b"ok"
        for _ in range(1000):  # until the close reached us: the pool lets the connection go
            if wire.stats().open == 0:
                break
            await asyncio.sleep(0.01)
        assert wire.stats().open == 0
        assert await body_of(await wire.handle_async_request(request("GET", url))) == b"ok"
        assert connections == 2
    finally:
        await wire.aclose()
        server.close()
        await server.wait_closed()


async def test_garbage_instead_of_http_is_an_invalid_response() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    wire = WireTransport()
    try:
        with pytest.raises(UpstreamInvalidResponseError, match="invalid HTTP"):
            await wire.handle_async_request(request("GET", f"http://127.0.0.1:{port}/"))
    finally:
        await wire.aclose()
        server.close()
        await server.wait_closed()
