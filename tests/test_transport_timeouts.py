"""Every phase of an upstream exchange has its timeout, and a whole call its deadline
(UPSTREAM_DEADLINE_SECONDS): each test here fails, within its bound, if its limit is removed."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from src.services.base.client import BaseClient, Body, RetryPolicy
from src.services.base.exceptions import UpstreamConnectionError, UpstreamTimeoutError
from src.services.base.timing import Timing
from src.services.base.transport import WireBody, WireTransport
from tests.helpers.app import Serve, make_settings
from tests.helpers.openrouter import GENERATE
from tests.helpers.raw_upstream import RawUpstream, raw_upstream

pytestmark = pytest.mark.anyio

LONG = 60.0  # a limit that must not be the one that fires
BOUND = 15.0  # every test ends well within this, unless the limit under test is missing


def request(
    url: str,
    *,
    method: str = "GET",
    content: bytes | None = None,
    deadline: float | None = None,
    **timeouts: float,
) -> httpx.Request:
    extensions: dict[str, object] = {
        "timeout": {"connect": LONG, "read": LONG, "write": LONG, "pool": LONG, **timeouts}
    }
    if deadline is not None:
        extensions["deadline"] = deadline
    return httpx.Request(method, url, content=content, extensions=extensions)


async def read_body(response: httpx.Response) -> bytes:
    assert isinstance(response.stream, WireBody)
    try:
        return await response.stream.read()
    finally:
        await response.stream.aclose()


async def silent(
    up: RawUpstream, _: int, reader: asyncio.StreamReader, __: asyncio.StreamWriter
) -> None:
    await up.read_request(reader)
    await asyncio.sleep(LONG)


async def stalls_mid_body(
    up: RawUpstream, _: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    await up.read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf.")
    await asyncio.sleep(LONG)


async def trickles(
    up: RawUpstream, _: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """An answer that never ends, one keep-alive comment at a time: the read timeout never fires."""
    await up.read_request(reader)
    writer.write(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    while True:
        writer.write(b"1\r\n \r\n")
        await writer.drain()
        await asyncio.sleep(0.05)


@contextlib.contextmanager
def unreachable_listener() -> Iterator[str]:
    """A loopback port whose accept queue is full: a new connection's SYN is dropped, so the
    connect hangs until its timeout."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        fillers = []
        try:
            for _ in range(4):
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(address)
                fillers.append(filler)
            yield f"http://127.0.0.1:{address[1]}"
        finally:
            for filler in fillers:
                filler.close()


async def test_a_connect_that_hangs_ends_at_the_connect_timeout() -> None:
    wire = WireTransport()
    try:
        with unreachable_listener() as url, pytest.raises(UpstreamTimeoutError) as caught:
            await asyncio.wait_for(wire.handle_async_request(request(url, connect=0.3)), BOUND)
    finally:
        await wire.aclose()

    address = url.removeprefix("http://")
    assert caught.value.detail == f"Upstream timed out: connecting to {address} took over 0.3 s"
    assert caught.value.during_connect is True
    assert wire.stats().open == 0


async def test_a_peer_that_does_not_read_the_request_ends_at_the_write_timeout() -> None:
    async def never_reads(
        _: RawUpstream, __: int, ___: asyncio.StreamReader, ____: asyncio.StreamWriter
    ) -> None:
        await asyncio.sleep(LONG)

    body = b"x" * (64 * 1024 * 1024)  # far more than the socket buffers hold
    async with raw_upstream(never_reads) as up:
        wire = WireTransport()
        try:
            with pytest.raises(UpstreamTimeoutError, match="writing the request") as caught:
                await asyncio.wait_for(
                    wire.handle_async_request(
                        request(up.url, method="POST", content=body, write=0.3)
                    ),
                    BOUND,
                )
            assert wire.stats().open == 0
        finally:
            await wire.aclose()

    assert caught.value.during_connect is False  # written in part: never sent again


async def test_a_silent_upstream_ends_at_the_read_timeout() -> None:
    async with raw_upstream(silent) as up:
        wire = WireTransport()
        try:
            with pytest.raises(UpstreamTimeoutError, match="nothing received for 0.3 s") as caught:
                await asyncio.wait_for(wire.handle_async_request(request(up.url, read=0.3)), BOUND)
        finally:
            await wire.aclose()

    assert caught.value.during_connect is False
    assert len(up.requests) == 1


async def test_a_body_that_stalls_after_the_head_ends_at_the_read_timeout() -> None:
    async with raw_upstream(stalls_mid_body) as up:
        wire = WireTransport()
        try:
            response = await asyncio.wait_for(
                wire.handle_async_request(request(up.url, read=0.3)), BOUND
            )
            with pytest.raises(UpstreamTimeoutError, match="nothing received for 0.3 s"):
                await asyncio.wait_for(read_body(response), BOUND)
            assert wire.stats().open == 0
        finally:
            await wire.aclose()


async def test_a_full_pool_ends_at_the_pool_timeout() -> None:
    async with raw_upstream(silent) as up:
        wire = WireTransport(max_connections=1)
        try:
            hanging = asyncio.ensure_future(wire.handle_async_request(request(up.url)))
            with pytest.raises(UpstreamTimeoutError) as caught:
                await asyncio.wait_for(wire.handle_async_request(request(up.url, pool=0.3)), BOUND)
            hanging.cancel()
            await asyncio.gather(hanging, return_exceptions=True)
        finally:
            await wire.aclose()

    assert caught.value.detail == (
        "No free upstream connection within 0.3 s (UPSTREAM_MAX_CONNECTIONS=1)"
    )
    assert caught.value.during_connect is True
    assert wire.stats().in_use == 0


async def test_a_fresh_connection_closed_before_any_answer_fails_at_once() -> None:
    async def close_unanswered(
        up: RawUpstream, _: int, reader: asyncio.StreamReader, __: asyncio.StreamWriter
    ) -> None:
        await up.read_request(reader)

    async with raw_upstream(close_unanswered) as up:
        wire = WireTransport()
        try:
            with pytest.raises(UpstreamConnectionError, match="closed before answering"):
                await asyncio.wait_for(wire.handle_async_request(request(up.url)), BOUND)
        finally:
            await wire.aclose()

    assert wire.stats().open == 0


async def test_a_trickling_answer_ends_at_the_deadline() -> None:
    async with raw_upstream(trickles) as up:
        wire = WireTransport()
        try:
            response = await asyncio.wait_for(
                wire.handle_async_request(request(up.url, read=5.0, deadline=0.5)), BOUND
            )
            with pytest.raises(
                UpstreamTimeoutError, match="UPSTREAM_DEADLINE_SECONDS=0.5"
            ) as caught:
                await asyncio.wait_for(read_body(response), BOUND)
            assert wire.stats().open == 0
        finally:
            await wire.aclose()

    assert caught.value.during_connect is False


async def test_a_head_that_never_comes_ends_at_the_deadline_before_the_read_timeout() -> None:
    async with raw_upstream(silent) as up:
        wire = WireTransport()
        try:
            with pytest.raises(UpstreamTimeoutError, match="UPSTREAM_DEADLINE_SECONDS=0.3"):
                await asyncio.wait_for(
                    wire.handle_async_request(request(up.url, read=LONG, deadline=0.3)), BOUND
                )
        finally:
            await wire.aclose()


async def test_generate_against_a_trickling_upstream_is_a_504_at_the_deadline(
    tmp_path: Path, retry_waits: list[float]
) -> None:
    settings = make_settings(tmp_path, upstream_deadline_seconds=0.5, upstream_timeout_seconds=5.0)
    async with raw_upstream(trickles) as up, Serve(up.url)(settings) as client:
        response = await asyncio.wait_for(client.post("/generate", json=GENERATE), BOUND)

    assert response.status_code == 504
    assert "UPSTREAM_DEADLINE_SECONDS=0.5" in response.json()["detail"]
    assert len(up.requests) == 1  # never retried
    assert retry_waits == []


async def endless(_: httpx.Request) -> httpx.Response:
    async def trickle() -> AsyncIterator[bytes]:
        while True:
            yield b" "
            await asyncio.sleep(0.05)

    return httpx.Response(200, content=trickle())


async def piece_by_piece(body: Body) -> None:
    while await body.next() is not None:
        pass


@pytest.mark.parametrize("read_timeout", [0.2, LONG])
@pytest.mark.parametrize("whole", [True, False])
async def test_another_transports_trickling_body_ends_at_the_deadline(
    read_timeout: float, whole: bool
) -> None:
    client = BaseClient(
        httpx.MockTransport(endless),
        base_url="http://upstream.test",
        timeout=httpx.Timeout(read_timeout),
        retry_policy=RetryPolicy(attempts=1),
        deadline_seconds=0.5,
    )
    try:
        body = await asyncio.wait_for(client.open("GET", "x", Timing()), BOUND)
        with pytest.raises(UpstreamTimeoutError, match="UPSTREAM_DEADLINE_SECONDS=0.5"):
            await asyncio.wait_for(body.read() if whole else piece_by_piece(body), BOUND)
        await body.aclose()
    finally:
        await client.aclose()
