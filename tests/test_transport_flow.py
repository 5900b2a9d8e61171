"""The wire transport's connection at moments no upstream can aim at, on a fake socket: where
reading pauses and resumes for a body read slowly, bytes that arrive before any request, a
request in the loop turn between our close and the loss it causes; and a connect timeout
through a proxy that never opens its tunnel."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from src.services.base.exceptions import UpstreamConnectionError, UpstreamTimeoutError
from src.services.base.transport import PoolStats, WireBody, WireTransport, _Connection
from tests.helpers.raw_upstream import OK, RawUpstream, answer, eventually, raw_upstream

pytestmark = pytest.mark.anyio

REQUEST = b"GET / HTTP/1.1\r\nhost: upstream.test\r\n\r\n"
KIB = 1024
BOUND = 20.0  # every wait here ends well within this on a loaded machine


class FakeSocket(asyncio.Transport):
    """Records what the connection asks of its socket instead of doing it."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.reading: list[str] = []
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def pause_reading(self) -> None:
        self.reading.append("pause")

    def resume_reading(self) -> None:
        self.reading.append("resume")

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def connected() -> tuple[_Connection, FakeSocket]:
    connection = _Connection(("http", "upstream.test", 80), asyncio.get_running_loop())
    fake = FakeSocket()
    connection.connection_made(fake)
    return connection, fake


async def read_piece(connection: _Connection) -> bytes:
    item = await asyncio.wait_for(connection.next_chunk(BOUND), BOUND)
    assert item is not None
    return item[0]


async def test_reading_pauses_past_a_mebibyte_waiting_and_resumes_below_half_of_it() -> None:
    connection, fake = connected()
    connection.send(REQUEST, None, None, False)
    # Pieces that leave 768 KiB waiting once the first is read, exactly 512 KiB once the
    # second is.
    pieces = [
        b"a" * (256 * KIB + 1),
        b"b" * (256 * KIB),
        b"c" * (256 * KIB),
        b"d" * (256 * KIB - 2),
    ]
    total = sum(map(len, pieces)) + 2
    connection.data_received(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % total)
    for piece in pieces:
        connection.data_received(piece)
    connection.data_received(b"e")  # exactly 1 MiB waiting: not more than the mark
    assert fake.reading == []
    connection.data_received(b"f")  # one byte past it
    assert fake.reading == ["pause"]

    assert await read_piece(connection) == pieces[0]  # 768 KiB left: still paused
    assert await read_piece(connection) == pieces[1]  # exactly 512 KiB left: not below half
    assert fake.reading == ["pause"]
    assert await read_piece(connection) == pieces[2]  # below half
    assert fake.reading == ["pause", "resume"]

    rest = [await read_piece(connection) for _ in range(3)]
    assert rest == [pieces[3], b"e", b"f"]
    assert await asyncio.wait_for(connection.next_chunk(BOUND), BOUND) is None
    assert fake.reading == ["pause", "resume"]
    assert connection.reusable


async def test_reading_pauses_once_however_much_more_arrives_while_paused() -> None:
    connection, fake = connected()
    connection.send(REQUEST, None, None, False)
    connection.data_received(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (3 * 1024 * KIB))
    for _ in range(4):
        connection.data_received(b"x" * (256 * KIB))
    assert fake.reading == []
    for _ in range(4):  # the socket may still hand over what it held
        connection.data_received(b"x" * (256 * KIB))
    assert fake.reading == ["pause"]


async def test_bytes_before_the_first_request_close_the_connection_and_refuse_it() -> None:
    """An answer nobody asked for must not be taken for the answer to the first request."""
    connection, fake = connected()
    connection.data_received(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi")

    assert fake.aborted
    with pytest.raises(UpstreamConnectionError) as refused:
        connection.send(REQUEST, None, None, False)
    assert refused.value.detail == "Upstream connection failed: closed before the request was sent"
    assert (refused.value.before_answer, refused.value.written) == (True, False)
    assert fake.written == []


async def test_a_connection_we_closed_refuses_a_request_before_its_loss_is_reported() -> None:
    """The loss our close causes is reported a loop turn later; a request in between must be
    refused as unsent, not written into an aborted socket."""
    connection, fake = connected()
    connection.send(REQUEST, None, None, False)
    connection.data_received(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    assert connection.reusable

    connection.close()

    assert fake.aborted
    assert not connection.reusable
    with pytest.raises(UpstreamConnectionError) as refused:
        connection.send(REQUEST, None, None, False)
    assert (refused.value.before_answer, refused.value.written) == (True, False)
    assert fake.written == [REQUEST]


@contextlib.asynccontextmanager
async def silent_proxy() -> AsyncIterator[int]:
    """A proxy that accepts connections and never answers a CONNECT."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.fixture
def no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    yield monkeypatch


async def test_a_connect_timeout_through_a_proxy_names_the_proxy(
    no_proxy_variables: pytest.MonkeyPatch,
) -> None:
    async with silent_proxy() as port:
        no_proxy_variables.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
        wire = WireTransport()
        timeouts = {"connect": 0.5, "read": BOUND, "write": BOUND, "pool": BOUND}
        sent = httpx.Request("GET", "https://upstream.test/", extensions={"timeout": timeouts})
        try:
            with pytest.raises(UpstreamTimeoutError) as timed_out:
                await asyncio.wait_for(wire.handle_async_request(sent), BOUND)
        finally:
            await wire.aclose()

    assert timed_out.value.detail == (
        f"Upstream timed out: connecting to upstream.test:443 through proxy "
        f"http://127.0.0.1:{port} took over 0.5 s"
    )
    assert wire.stats().open == 0


def test_a_pool_that_opened_nothing_reports_nothing_open() -> None:
    assert WireTransport(trust_env=False).stats() == PoolStats(
        open=0, in_use=0, most_open=0, requests=0
    )


def test_the_counters_a_caller_reads_are_a_copy_it_cannot_change_the_pool_through() -> None:
    wire = WireTransport(trust_env=False)
    read = wire.stats()
    read.open, read.in_use, read.most_open, read.requests = 5, 5, 5, 5
    assert wire.stats() == PoolStats(open=0, in_use=0, most_open=0, requests=0)


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


async def test_reading_pauses_again_for_the_next_answer_on_a_connection_put_back_paused() -> None:
    connection, fake = connected()
    oversized = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (1024 * KIB + 1)
    connection.send(REQUEST, None, None, False)
    connection.data_received(oversized + b"x" * (1024 * KIB + 1))  # arrives whole, unread
    assert connection.reusable and fake.reading == ["pause"]

    connection.send(REQUEST, None, None, False)
    assert fake.reading == ["pause", "resume"]
    connection.data_received(oversized + b"y" * (1024 * KIB + 1))
    assert fake.reading == ["pause", "resume", "pause"]


async def test_an_idle_connection_the_upstream_closed_unseen_by_the_loop_is_not_reused() -> None:
    """The upstream closes a keep-alive connection right after its answer; the next request,
    sent before the loop has delivered that close, goes out on a new connection instead of
    failing in the closed one."""

    async def answer_then_close(
        up: RawUpstream, _: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await up.read_request(reader)
        writer.write(OK)
        writer.close()

    async with raw_upstream(answer_then_close) as up:
        wire = WireTransport(trust_env=False)
        timeouts = {"connect": BOUND, "read": BOUND, "write": BOUND, "pool": BOUND}

        async def both() -> list[tuple[int, bytes]]:
            answers = []
            for _ in range(2):
                # No await between the first answer's end and the second request's write
                # gives the loop a turn to deliver the upstream's close.
                response = await wire.handle_async_request(
                    httpx.Request("GET", f"{up.url}/", extensions={"timeout": timeouts})
                )
                assert isinstance(response.stream, WireBody)
                body = await response.stream.read()
                await response.stream.aclose()
                answers.append((response.status_code, body))
            return answers

        try:
            answers = await asyncio.wait_for(both(), BOUND)
        finally:
            await wire.aclose()

    assert answers == [(200, b"ok"), (200, b"ok")]
    assert (up.connections, len(up.requests)) == (2, 2)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("by_port", [False, True], ids=["host", "host-and-port"])
async def test_a_request_to_an_origin_no_proxy_names_goes_direct(
    by_port: bool, no_proxy_variables: pytest.MonkeyPatch
) -> None:
    async with raw_upstream(one_ok) as up:
        port = int(up.url.rsplit(":", 1)[1])
        no_proxy_variables.setenv("ALL_PROXY", f"http://127.0.0.1:{closed_port()}")
        no_proxy_variables.setenv("NO_PROXY", f"127.0.0.1:{port}" if by_port else "127.0.0.1")
        wire = WireTransport()
        timeouts = {"connect": BOUND, "read": BOUND, "write": BOUND, "pool": BOUND}
        sent = httpx.Request("GET", f"{up.url}/", extensions={"timeout": timeouts})
        try:
            response = await asyncio.wait_for(wire.handle_async_request(sent), BOUND)
            assert isinstance(response.stream, WireBody)
            body = await asyncio.wait_for(response.stream.read(), BOUND)
            await response.stream.aclose()
        finally:
            await wire.aclose()

    assert (response.status_code, body) == (200, b"ok")
    assert up.requests and up.requests[0].startswith(b"GET / HTTP/1.1\r\n")


async def one_ok(
    up: RawUpstream, _: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    await up.read_request(reader)
    writer.write(OK)
    await reader.read()
