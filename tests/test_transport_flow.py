"""The wire transport's flow control: reading pauses while a body waits for its reader."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from src.services.base.transport import WireBody, WireTransport
from tests.helpers.raw_upstream import OK, RawUpstream, answer, eventually, raw_upstream

pytestmark = pytest.mark.anyio

KIB = 1024
BOUND = 20.0  # every wait here ends well within this on a loaded machine


async def test_a_connection_put_back_with_its_answer_unread_while_paused_reads_the_next() -> None:
    """An answer of more than a mebibyte that arrived whole and was closed unread leaves reading
    paused; the connection goes back to the pool, and the next request on it must be read."""
    large = answer(b"x" * (1024 * KIB + 1))

    async def two_answers(
        up: RawUpstream, _: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await up.read_request(reader)
        writer.write(large)
        await up.read_request(reader)
        writer.write(OK)
        await reader.read()

    async with raw_upstream(two_answers) as up:
        wire = WireTransport(trust_env=False)
        timeouts = {"connect": BOUND, "read": 2.0, "write": BOUND, "pool": BOUND}
        try:
            first = await asyncio.wait_for(
                wire.handle_async_request(
                    httpx.Request("GET", f"{up.url}/", extensions={"timeout": timeouts})
                ),
                BOUND,
            )
            assert isinstance(first.stream, WireBody)
            connection = first.stream._connection
            assert await eventually(lambda: connection.complete)
            await first.stream.aclose()
            second = await asyncio.wait_for(
                wire.handle_async_request(
                    httpx.Request("GET", f"{up.url}/", extensions={"timeout": timeouts})
                ),
                BOUND,
            )
            assert isinstance(second.stream, WireBody)
            body = await asyncio.wait_for(second.stream.read(), BOUND)
            await second.stream.aclose()
        finally:
            await wire.aclose()

    assert (second.status_code, body) == (200, b"ok")
    assert (up.connections, len(up.requests)) == (1, 2)
