"""The loopback upstream the in-process tests rely on, seen from a plain HTTP client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import httpx
import pytest
import respx

from tests.helpers.openrouter import UPSTREAM
from tests.helpers.upstream_server import LoopbackUpstream

pytestmark = pytest.mark.anyio


@pytest.fixture
async def http(upstream_server: LoopbackUpstream) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(upstream_server.base_url + "/") as session:
        yield session


async def test_a_request_reaches_the_route_as_sent_to_the_upstream_url(
    upstream: respx.MockRouter, http: aiohttp.ClientSession
) -> None:
    route = upstream.post("/chat/completions").respond(
        201, json={"ok": True}, headers={"x-upstream": "yes"}
    )

    async with http.post("chat/completions?x=1", data=b"{}", headers={"a": "b"}) as response:
        body = await response.json()

    assert (response.status, body, response.headers["x-upstream"]) == (201, {"ok": True}, "yes")
    sent = route.calls.last.request
    assert sent.url == f"{UPSTREAM}/chat/completions?x=1"
    assert sent.headers["host"] == "upstream.test"
    assert (sent.headers["a"], sent.content) == ("b", b"{}")


async def test_a_body_is_sent_as_it_is_produced(
    upstream: respx.MockRouter, http: aiohttp.ClientSession
) -> None:
    first_read = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"first"
        await asyncio.wait_for(first_read.wait(), 10)  # only a streamed body gets past this
        yield b"second"

    upstream.get("/models").mock(side_effect=lambda _: httpx.Response(200, content=body()))

    async with http.get("models") as response:
        assert await response.content.readexactly(5) == b"first"
        first_read.set()
        assert await response.content.read() == b"second"


@pytest.mark.parametrize(
    "error", [httpx.ConnectError("x"), httpx.ReadError("x"), httpx.RemoteProtocolError("x")]
)
async def test_a_transport_error_closes_the_connection_without_an_answer(
    upstream: respx.MockRouter, http: aiohttp.ClientSession, error: Exception
) -> None:
    route = upstream.get("/models").mock(side_effect=error)

    with pytest.raises(aiohttp.ServerDisconnectedError):
        await http.get("models")
    assert route.call_count >= 1


async def test_a_body_that_breaks_drops_the_connection_mid_body(
    upstream: respx.MockRouter, http: aiohttp.ClientSession
) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"partial"
        raise httpx.ReadError("reset")

    upstream.post("/chat/completions").mock(
        side_effect=lambda _: httpx.Response(200, content=body())
    )

    async with http.post("chat/completions") as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()


async def test_a_timeout_holds_the_request_and_the_client_leaving_ends_it(
    upstream: respx.MockRouter, upstream_server: LoopbackUpstream, http: aiohttp.ClientSession
) -> None:
    upstream.get("/models").mock(side_effect=httpx.ReadTimeout("x"))

    with pytest.raises(TimeoutError):
        await http.get("models", timeout=aiohttp.ClientTimeout(sock_read=0.2))
    await http.close()

    # The server let go of the connection once the client closed it.
    for _ in range(1000):
        if not upstream_server.open_connections:
            break
        await asyncio.sleep(0.01)
    assert upstream_server.open_connections == 0


async def test_a_client_that_leaves_cancels_the_answer_it_waits_for(
    upstream: respx.MockRouter, http: aiohttp.ClientSession
) -> None:
    called, cancelled = asyncio.Event(), asyncio.Event()

    async def never(_: httpx.Request) -> httpx.Response:
        called.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("unreachable")

    upstream.get("/models").mock(side_effect=never)
    request = asyncio.create_task(http.get("models"))
    await asyncio.wait_for(called.wait(), 10)
    request.cancel()  # aiohttp closes the connection of a cancelled request

    await asyncio.wait_for(cancelled.wait(), 10)


async def test_anything_else_a_side_effect_raises_is_kept_for_the_test(
    upstream: respx.MockRouter, upstream_server: LoopbackUpstream, http: aiohttp.ClientSession
) -> None:
    upstream.post("/chat/completions").mock(side_effect=RuntimeError("a bug in the test"))

    with pytest.raises(aiohttp.ServerDisconnectedError):
        await http.post("not-mocked")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await http.post("chat/completions")

    assert [type(error).__name__ for error in upstream_server.errors] == [
        "AllMockedAssertionError",
        "RuntimeError",
    ]
    upstream_server.errors.clear()  # seen: the fixture would fail the test with them
