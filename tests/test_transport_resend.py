"""A request whose bytes were written is never sent again: not by the transport, not by the
client's retries. Failures before sending still are retried."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import httpx
import pytest

from src.services.base.exceptions import UpstreamConnectionError
from src.services.base.transport import WireBody, WireTransport
from tests.helpers.app import Serve, make_settings
from tests.helpers.openrouter import GENERATE, completion_body
from tests.helpers.raw_upstream import RawUpstream, answer, raw_upstream

pytestmark = pytest.mark.anyio

TIMEOUTS = {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}
BOUND = 20.0
COMPLETION = answer(
    json.dumps(completion_body()).encode(), extra=b"content-type: application/json\r\n"
)


def post(url: str) -> httpx.Request:
    return httpx.Request("POST", url, content=b'{"a": 1}', extensions={"timeout": TIMEOUTS})


async def read_then_close(
    up: RawUpstream, _: int, reader: asyncio.StreamReader, __: asyncio.StreamWriter
) -> None:
    await up.read_request(reader)  # the whole POST, then the connection closes unanswered


async def answer_once_then_read_and_close(
    up: RawUpstream, number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    await up.read_request(reader)
    if number == 1:
        writer.write(COMPLETION)
        await up.read_request(reader)  # the second request on the kept-alive connection


async def test_a_post_read_then_unanswered_on_a_fresh_connection_is_sent_once() -> None:
    async with raw_upstream(read_then_close) as up:
        wire = WireTransport()
        try:
            with pytest.raises(UpstreamConnectionError) as caught:
                await asyncio.wait_for(wire.handle_async_request(post(f"{up.url}/x")), BOUND)
        finally:
            await wire.aclose()

    assert len(up.requests) == 1
    assert caught.value.written is True
    assert "closed before answering" in caught.value.detail


async def test_a_post_read_then_unanswered_on_a_reused_connection_is_sent_once() -> None:
    async with raw_upstream(answer_once_then_read_and_close) as up:
        wire = WireTransport()
        try:
            first = await asyncio.wait_for(wire.handle_async_request(post(f"{up.url}/x")), BOUND)
            assert isinstance(first.stream, WireBody)
            await first.stream.read()
            await first.stream.aclose()
            with pytest.raises(UpstreamConnectionError) as caught:
                await asyncio.wait_for(wire.handle_async_request(post(f"{up.url}/x")), BOUND)
        finally:
            await wire.aclose()

    assert len(up.requests) == 2  # one each: the second was not sent again
    assert up.connections == 1
    assert caught.value.written is True


async def test_generate_is_sent_once_when_the_upstream_reads_it_and_closes(
    tmp_path: Path, retry_waits: list[float]
) -> None:
    settings = make_settings(tmp_path)
    async with raw_upstream(read_then_close) as up, Serve(up.url)(settings) as client:
        response = await asyncio.wait_for(client.post("/generate", json=GENERATE), BOUND)

    assert response.status_code == 502
    assert "closed before answering" in response.json()["detail"]
    assert len(up.requests) == 1  # RETRY_ATTEMPTS=3 in the test settings
    assert retry_waits == []


async def test_generate_on_a_reused_connection_the_upstream_closes_is_sent_once(
    tmp_path: Path, retry_waits: list[float]
) -> None:
    settings = make_settings(tmp_path)
    async with (
        raw_upstream(answer_once_then_read_and_close) as up,
        Serve(up.url)(settings) as client,
    ):
        first = await asyncio.wait_for(client.post("/generate", json=GENERATE), BOUND)
        second = await asyncio.wait_for(client.post("/generate", json=GENERATE), BOUND)

    assert first.status_code == 200
    assert second.status_code == 502
    assert "closed before answering" in second.json()["detail"]
    assert len(up.requests) == 2
    assert retry_waits == []


async def test_a_refused_connection_is_still_retried(
    tmp_path: Path, retry_waits: list[float]
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        async with Serve(url)(make_settings(tmp_path)) as client:
            response = await asyncio.wait_for(client.post("/generate", json=GENERATE), BOUND)

    assert response.status_code == 502
    assert "cannot reach" in response.json()["detail"]
    assert len(retry_waits) == 2  # RETRY_ATTEMPTS=3: every attempt was made
