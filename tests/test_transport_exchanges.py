"""The wire transport keeps each answer with its own request: 1xx, stray bytes, HEAD, trailers,
the head's size, HTTP versions, streamed request bodies and connections lost while idle."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from src.services.base.exceptions import UpstreamInvalidResponseError
from src.services.base.transport import MAX_HEAD_BYTES, WireBody, WireTransport
from tests.helpers.app import Serve, make_settings
from tests.helpers.openrouter import GENERATE, completion_body
from tests.helpers.raw_upstream import OK, RawUpstream, answer, eventually, raw_upstream

pytestmark = pytest.mark.anyio

TIMEOUTS = {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}
BOUND = 10.0  # no exchange here takes more than a fraction of this, even on a loaded box


def request(method: str, url: str, content: bytes | None = None) -> httpx.Request:
    return httpx.Request(method, url, content=content, extensions={"timeout": TIMEOUTS})


async def exchange(wire: WireTransport, method: str, url: str) -> tuple[httpx.Response, bytes]:
    async def run() -> tuple[httpx.Response, bytes]:
        response = await wire.handle_async_request(request(method, url))
        assert isinstance(response.stream, WireBody)
        try:
            return response, await response.stream.read()
        finally:
            await response.stream.aclose()

    return await asyncio.wait_for(run(), BOUND)


def numbered(connection: int, request_number: int) -> bytes:
    return answer(b"c%dr%d" % (connection, request_number))


async def test_an_early_hints_answer_in_the_same_read_is_skipped() -> None:
    async def serve(
        up: RawUpstream, number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        served = 0
        while True:
            await up.read_request(reader)
            served += 1
            hints = (
                b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>\r\n\r\n" if served == 1 else b""
            )
            writer.write(hints + numbered(number, served))

    async with raw_upstream(serve) as up:
        wire = WireTransport()
        try:
            response, body = await exchange(wire, "GET", f"{up.url}/")
            _, next_body = await exchange(wire, "GET", f"{up.url}/")
        finally:
            await wire.aclose()

    assert (response.status_code, body) == (200, b"c1r1")
    assert response.extensions["http_version"] == b"HTTP/1.1"  # the final answer's own
    assert "link" not in response.headers  # a 1xx's headers are not the answer's
    assert next_body == b"c1r2"  # the same connection, kept, with the next answer


async def test_an_informational_answer_in_an_earlier_read_is_skipped() -> None:
    async def serve(
        up: RawUpstream, _: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await up.read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(b"HTTP/1.1 102 Processing\r\nx-step: 1\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(answer(b"final", extra=b"x-final: 1\r\n"))
        await reader.read()

    async with raw_upstream(serve) as up:
        wire = WireTransport()
        try:
            response, body = await exchange(wire, "GET", f"{up.url}/")
        finally:
            await wire.aclose()

    assert (response.status_code, body) == (200, b"final")
    assert response.headers.get("x-final") == "1"
    assert "x-step" not in response.headers


async def test_a_101_answer_never_asked_for_is_an_invalid_answer() -> None:
    async def serve(
        up: RawUpstream, _: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await up.read_request(reader)
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"
        )
        await reader.read()

    async with raw_upstream(serve) as up:
        wire = WireTransport()
        try:
            with pytest.raises(
                UpstreamInvalidResponseError,
                match=r"^Upstream switched protocols \(101\) though no upgrade was asked for$",
            ):
                await exchange(wire, "GET", f"{up.url}/")
            assert wire.stats().open == 0
        finally:
            await wire.aclose()


async def test_two_answers_in_one_read_never_reach_the_next_request() -> None:
    async def serve(
        up: RawUpstream, number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        served = 0
        while True:
            await up.read_request(reader)
            served += 1
            stray = answer(b"stray") if (number, served) == (1, 1) else b""
            writer.write(numbered(number, served) + stray)

    async with raw_upstream(serve) as up:
        wire = WireTransport()
        try:
            _, first = await exchange(wire, "GET", f"{up.url}/")
            _, second = await exchange(wire, "GET", f"{up.url}/")
        finally:
            await wire.aclose()

    assert first == b"c1r1"
    assert second == b"c2r1"  # on a new connection, not the stray answer
    assert up.connections == 2


async def test_bytes_arriving_on_an_idle_connection_drop_it_at_once() -> None:
    async def serve(
        up: RawUpstream, number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        served = 0
        while True:
            await up.read_request(reader)
            served += 1
            writer.write(numbered(number, served))
            if number == 1:
                await asyncio.sleep(0.2)  # the client has put the connection back by then
                writer.write(answer(b"stray"))

    async with raw_upstream(serve) as up:
        wire = WireTransport()
        try:
            _, first = await exchange(wire, "GET", f"{up.url}/")
            dropped = await eventually(lambda: wire.stats().open == 0)
            _, second = await exchange(wire, "GET", f"{up.url}/")
        finally:
            await wire.aclose()

    assert first == b"c1r1"
    assert dropped, "the connection that received stray bytes stayed in the pool"
    assert second == b"c2r1"


async def test_a_head_answer_has_no_body_even_with_a_content_length() -> None:
    async def serve(
        up: RawUpstream, number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        served = 0
        while True:
            sent = await up.read_request(reader)
            served += 1
            if sent.startswith(b"HEAD "):
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
            else:
                writer.write(numbered(number, served))

    async with raw_upstream(serve) as up:
        wire = WireTransport()
        try:
            head, head_body = await exchange(wire, "HEAD", f"{up.url}/")
            _, after = await exchange(wire, "GET", f"{up.url}/")
        finally:
            await wire.aclose()

    assert (head.status_code, head.headers["content-length"], head_body) == (200, "1000", b"")
    assert isinstance(head.stream, WireBody)
    assert head.stream.timing.end == head.stream.timing.head > 0  # it ended with its head
    # The HEAD's connection is closed with it: what may follow its head on the wire is no
    # one's answer. The GET gets a connection of its own.
    assert after == b"c2r1"


async def test_trailers_stay_out_of_the_answer_headers() -> None:
    async def serve(
        up: RawUpstream, _: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await up.read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n"
            b"5\r\nhello\r\n0\r\nx-checksum: abc\r\n\r\n"
        )
        await reader.read()

    async with raw_upstream(serve) as up:
        wire = WireTransport()
        try:
            response, body = await exchange(wire, "GET", f"{up.url}/")
        finally:
            await wire.aclose()

    assert body == b"hello"
    assert "x-checksum" not in response.headers


async def test_an_http_1_0_answer_reports_http_1_0() -> None:
    async def serve(
        up: RawUpstream, _: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await up.read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await reader.read()

    async with raw_upstream(serve) as up:
        wire = WireTransport()
        try:
            response, body = await exchange(wire, "GET", f"{up.url}/")
        finally:
            await wire.aclose()

    assert body == b"ok"
    assert response.extensions["http_version"] == b"HTTP/1.0"


async def test_a_streamed_request_body_is_sent_with_chunked_framing() -> None:
    async def serve(
        up: RawUpstream, _: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            await up.read_request(reader)
            writer.write(OK)

    async def pieces() -> AsyncIterator[bytes]:
        yield b"hello "
        yield b""
        yield b"world"

    class Stream(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield b"abc"

    async with raw_upstream(serve) as up:
        wire = WireTransport()
        try:
            for sent in (
                # httpx sets Transfer-Encoding for an iterator...
                httpx.Request("POST", up.url, content=pieces(), extensions={"timeout": TIMEOUTS}),
                # ...and nothing for a bare stream: the transport adds it.
                httpx.Request("POST", up.url, stream=Stream(), extensions={"timeout": TIMEOUTS}),
            ):
                response = await asyncio.wait_for(wire.handle_async_request(sent), BOUND)
                assert isinstance(response.stream, WireBody)
                assert await response.stream.read() == b"ok"
                await response.stream.aclose()
        finally:
            await wire.aclose()

    first, second = up.requests
    assert first.lower().count(b"transfer-encoding") == 1  # httpx's own, not a second one
    assert b"transfer-encoding: chunked\r\n" in first.lower()
    assert first.endswith(b"\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n")
    assert second.lower().count(b"transfer-encoding") == 1
    assert b"transfer-encoding: chunked\r\n" in second.lower()
    assert second.endswith(b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n")


async def test_a_head_over_max_head_bytes_is_refused_even_when_one_read_completes_it() -> None:
    big = b"x-big: " + b"a" * (MAX_HEAD_BYTES + 40_000) + b"\r\n"

    async def serve(
        up: RawUpstream, _: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await up.read_request(reader)
        writer.write(answer(b"ok", extra=big))
        await reader.read()

    async with raw_upstream(serve) as up:
        wire = WireTransport()
        try:
            with pytest.raises(UpstreamInvalidResponseError, match="headers are larger than"):
                await exchange(wire, "GET", f"{up.url}/")
        finally:
            await wire.aclose()


async def test_a_large_body_in_the_same_read_as_a_small_head_is_not_counted_as_head() -> None:
    body = b"b" * (MAX_HEAD_BYTES * 2)

    async def serve(
        up: RawUpstream, _: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await up.read_request(reader)
        writer.write(answer(body, extra=b"x-pad: " + b"p" * 100_000 + b"\r\n"))
        await reader.read()

    async with raw_upstream(serve) as up:
        wire = WireTransport()
        try:
            response, received = await exchange(wire, "GET", f"{up.url}/")
        finally:
            await wire.aclose()

    assert response.status_code == 200
    assert received == body


async def test_connections_the_server_closes_while_idle_leave_the_pool_at_once() -> None:
    all_idle = asyncio.Event()

    async def serve(
        up: RawUpstream, number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await up.read_request(reader)
        writer.write(numbered(number, 1))
        await all_idle.wait()  # then every connection closes, idle in the client's pool

    async with raw_upstream(serve) as up:
        wire = WireTransport(max_connections=100)
        try:
            await asyncio.gather(*(exchange(wire, "GET", f"{up.url}/") for _ in range(50)))
            open_when_idle = wire.stats().open
            all_idle.set()
            emptied = await eventually(lambda: wire.stats().open == 0)
            left_open = wire.stats().open
            _, body = await exchange(wire, "GET", f"{up.url}/")
        finally:
            all_idle.set()
            await wire.aclose()

    assert open_when_idle == 50
    assert emptied, f"stats().open stayed at {left_open}"
    assert body == b"c51r1"


async def test_generate_after_an_early_hints_answer_gets_its_own_completion(
    tmp_path: Path, retry_waits: list[float]
) -> None:
    def completion(text: str) -> bytes:
        body = json.dumps(completion_body(text)).encode()
        return answer(body, extra=b"content-type: application/json\r\n")

    async def serve(
        up: RawUpstream, _: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await up.read_request(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(completion("first"))
        await up.read_request(reader)
        writer.write(completion("second"))
        await reader.read()

    settings = make_settings(tmp_path)
    async with raw_upstream(serve) as up, Serve(up.url)(settings) as client:
        first = await asyncio.wait_for(client.post("/generate", json=GENERATE), BOUND)
        second = await asyncio.wait_for(client.post("/generate", json=GENERATE), BOUND)

    assert (first.status_code, second.status_code) == (200, 200)
    assert (first.json()["text"], second.json()["text"]) == ("first", "second")
    assert len(up.requests) == 2
