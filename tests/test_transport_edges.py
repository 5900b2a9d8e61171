"""The wire transport at its edges: the exact head limit, the ports a URL leaves out, a request
the peer takes slowly, streamed bodies that carry their length, and what its errors say."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trustme

from src.services.base.exceptions import (
    UpstreamConnectionError,
    UpstreamInvalidResponseError,
    UpstreamTimeoutError,
)
from src.services.base.transport import MAX_HEAD_BYTES, WireBody, WireTransport, _Connection
from tests.helpers.raw_upstream import OK, Handler, RawUpstream, eventually, raw_upstream

pytestmark = pytest.mark.anyio

LONG = 60.0
TIMEOUTS = {"connect": LONG, "read": LONG, "write": LONG, "pool": LONG}
BOUND = 20.0  # every exchange here ends well within this on a loaded machine


def request(
    method: str,
    url: str,
    *,
    content: bytes | AsyncIterator[bytes] | None = None,
    headers: dict[str, str] | None = None,
    timeouts: dict[str, float] | None = None,
) -> httpx.Request:
    extensions = {"timeout": {**TIMEOUTS, **(timeouts or {})}}
    return httpx.Request(method, url, content=content, headers=headers, extensions=extensions)


async def exchange(wire: WireTransport, sent: httpx.Request) -> tuple[httpx.Response, bytes]:
    async def run() -> tuple[httpx.Response, bytes]:
        response = await wire.handle_async_request(sent)
        assert isinstance(response.stream, WireBody)
        try:
            return response, await response.stream.read()
        finally:
            await response.stream.aclose()

    return await asyncio.wait_for(run(), BOUND)


def head_of(size: int) -> bytes:
    """An answer's status line and headers, exactly `size` bytes, announcing a 2-byte body."""
    start = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-pad: "
    end = b"\r\n\r\n"
    return start + b"p" * (size - len(start) - len(end)) + end


@pytest.mark.parametrize(
    ("size", "accepted"), [(MAX_HEAD_BYTES, True), (MAX_HEAD_BYTES + 1, False)]
)
async def test_a_head_of_max_head_bytes_is_accepted_and_one_byte_more_is_refused(
    size: int, accepted: bool
) -> None:
    head = head_of(size)

    async def serve(
        up: RawUpstream, _: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await up.read_request(reader)
        # The head in two reads, the second with the body: the read that completes the head
        # then carries more than the head, and only the head's own size may count.
        writer.write(head[:4096])
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.write(head[4096:] + b"ok")
        await reader.read()

    async with raw_upstream(serve) as up:
        wire = WireTransport()
        try:
            if accepted:
                response, body = await exchange(wire, request("GET", f"{up.url}/"))
                assert (response.status_code, body) == (200, b"ok")
            else:
                with pytest.raises(UpstreamInvalidResponseError) as refused:
                    await exchange(wire, request("GET", f"{up.url}/"))
                assert refused.value.detail == (
                    f"Upstream answer's headers are larger than {MAX_HEAD_BYTES} bytes"
                )
        finally:
            await wire.aclose()


async def test_a_streamed_body_with_a_content_length_is_sent_as_it_is() -> None:
    async def answers(
        up: RawUpstream, _: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            await up.read_request(reader)
            writer.write(OK)

    async def pieces() -> AsyncIterator[bytes]:
        yield b"hello "
        yield b"world"

    async with raw_upstream(answers) as up:
        wire = WireTransport()
        try:
            sent = request("POST", f"{up.url}/", content=pieces(), headers={"Content-Length": "11"})
            _, body = await exchange(wire, sent)
        finally:
            await wire.aclose()

    [received] = up.requests
    assert body == b"ok"
    assert received.endswith(b"\r\n\r\nhello world")
    assert b"content-length: 11\r\n" in received.lower()
    assert b"transfer-encoding" not in received.lower()


async def test_a_request_the_peer_takes_slowly_is_sent_whole_and_answered() -> None:
    """The socket takes a large body in many pieces: the write timeout covers only the writing,
    and once it is written the answer has the read timeout, however long it takes."""
    body = b"x" * (8 * 1024 * 1024)  # more than the socket buffers hold: writing pauses

    async def slow_answer(
        up: RawUpstream, _: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await up.read_request(reader)
        await asyncio.sleep(2.0)  # longer than the write timeout, far shorter than the read one
        writer.write(OK)
        await reader.read()

    async with raw_upstream(slow_answer) as up:
        wire = WireTransport()
        try:
            sent = request("POST", f"{up.url}/", content=body, timeouts={"write": 1.5})
            response, answer = await exchange(wire, sent)
        finally:
            await wire.aclose()

    assert (response.status_code, answer) == (200, b"ok")
    [received] = up.requests
    assert received.endswith(b"\r\n\r\n" + body)


@contextlib.asynccontextmanager
async def refusing_socks5_proxy(destinations: list[bytes]) -> AsyncIterator[int]:
    """A SOCKS5 proxy that records each CONNECT's destination (name and port bytes) and answers
    "connection refused": the request goes no further, and the port it was for is known."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            _, count = await reader.readexactly(2)
            await reader.readexactly(count)
            writer.write(b"\x05\x00")  # no authentication
            _, _, _, kind = await reader.readexactly(4)
            length = (await reader.readexactly(1))[0] if kind == 3 else {1: 4, 4: 16}[kind]
            destinations.append(await reader.readexactly(length + 2))
            writer.write(b"\x05\x05\x00\x01" + bytes(6))
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(("scheme", "port"), [("http", 80), ("https", 443)])
async def test_a_url_without_a_port_goes_to_its_schemes_default_port(
    scheme: str, port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    destinations: list[bytes] = []
    async with refusing_socks5_proxy(destinations) as proxy_port:
        monkeypatch.setenv("ALL_PROXY", f"socks5h://127.0.0.1:{proxy_port}")
        wire = WireTransport()
        try:
            with pytest.raises(UpstreamConnectionError) as refused:
                await exchange(wire, request("GET", f"{scheme}://upstream.test/api/v1/models"))
        finally:
            await wire.aclose()

    assert destinations == [b"upstream.test" + port.to_bytes(2, "big")]
    assert refused.value.detail == (
        f"Upstream connection failed: SOCKS proxy socks5h://127.0.0.1:{proxy_port} refused "
        f"upstream.test:{port}: connection refused"
    )


@pytest.mark.parametrize(
    ("no_proxy", "url", "proxied"),
    [
        # NO_PROXY with a port matches that port only; a URL's default port is no port at all,
        # as httpx compares them.
        ("openrouter.ai:8443", "https://openrouter.ai:8443/api/v1", False),
        ("openrouter.ai:8443", "https://openrouter.ai/api/v1", True),
        ("openrouter.ai:80", "https://openrouter.ai/api/v1", True),
        ("openrouter.ai:80", "http://openrouter.ai/api/v1", True),
    ],
)
def test_the_proxy_named_for_a_url_follows_its_port(
    no_proxy: str, url: str, proxied: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALL_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", no_proxy)
    proxy = WireTransport().proxy_for(httpx.URL(url))

    assert (proxy.label if proxy else None) == ("http://proxy.corp:3128" if proxied else None)


async def test_a_refused_connection_names_the_upstream_and_the_reason() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = sock.getsockname()[1]
        wire = WireTransport()
        try:
            with pytest.raises(UpstreamConnectionError) as refused:
                await exchange(wire, request("GET", f"http://127.0.0.1:{port}/x"))
        finally:
            await wire.aclose()

    cause = refused.value.__cause__
    assert isinstance(cause, ConnectionRefusedError)
    assert refused.value.detail == (
        f"Upstream connection failed: cannot reach http://127.0.0.1:{port} "
        f"(ConnectionRefusedError: {cause.strerror})"
    )
    assert refused.value.before_answer is True
    assert refused.value.written is False


def hang_up(writer: asyncio.StreamWriter, reset: bool) -> None:
    """Close the connection: a plain close (the client reads EOF), or a reset (RST)."""
    if reset:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
    else:
        writer.close()


RESET = r" \(ConnectionResetError: .+\)"


@pytest.mark.parametrize(("reset", "reason"), [(False, ""), (True, RESET)])
async def test_a_connection_lost_before_the_answer_says_the_request_was_sent(
    reset: bool, reason: str
) -> None:
    async def read_then_hang_up(
        up: RawUpstream, _: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await up.read_request(reader)
        hang_up(writer, reset)

    async with raw_upstream(read_then_hang_up) as up:
        wire = WireTransport()
        try:
            with pytest.raises(UpstreamConnectionError) as lost:
                await exchange(wire, request("POST", f"{up.url}/", content=b"{}"))
        finally:
            await wire.aclose()

    assert re.fullmatch(
        f"Upstream connection failed: closed before answering{reason}; the request was sent, "
        "so it is not sent again",
        lost.value.detail,
    ), lost.value.detail
    assert (lost.value.before_answer, lost.value.written) == (True, True)
    assert len(up.requests) == 1


CHUNKED_START = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n"
LENGTH_START = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhello"


@pytest.mark.parametrize("start", [CHUNKED_START, LENGTH_START], ids=["chunked", "length"])
@pytest.mark.parametrize(("reset", "reason"), [(False, ""), (True, RESET)], ids=["eof", "rst"])
async def test_an_answer_cut_short_is_an_error_not_a_short_body(
    start: bytes, reset: bool, reason: str
) -> None:
    async def cut_short(
        up: RawUpstream, _: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await up.read_request(reader)
        writer.write(start)
        await writer.drain()
        await asyncio.sleep(0.2)  # the head and the first chunk are read before the end
        hang_up(writer, reset)

    async with raw_upstream(cut_short) as up:
        wire = WireTransport()
        try:
            with pytest.raises(UpstreamConnectionError) as lost:
                await exchange(wire, request("GET", f"{up.url}/"))
            assert wire.stats().open == 0
        finally:
            await wire.aclose()

    assert re.fullmatch(f"Upstream connection broke mid-answer{reason}", lost.value.detail), (
        lost.value.detail
    )


async def test_a_large_body_read_after_it_arrived_is_read_whole() -> None:
    """Reading from the socket pauses while a body waits for its reader, and resumes as the
    reader takes it."""
    body = bytes(range(256)) * (16 * 1024)  # 4 MiB: reading pauses more than once

    async def large(
        up: RawUpstream, _: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await up.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
        await reader.read()

    async with raw_upstream(large) as up:
        wire = WireTransport()
        try:
            sent = request("GET", f"{up.url}/", timeouts={"read": 5.0})
            response = await asyncio.wait_for(wire.handle_async_request(sent), BOUND)
            await asyncio.sleep(0.5)  # the body piles up unread meanwhile
            assert isinstance(response.stream, WireBody)
            received = await asyncio.wait_for(response.stream.read(), BOUND)
            await response.stream.aclose()
        finally:
            await wire.aclose()

    assert received == body


async def test_an_answer_read_through_httpx_streams_is_the_whole_body() -> None:
    async def chunked(
        up: RawUpstream, _: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await up.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\none\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"3\r\ntwo\r\n0\r\n\r\n")
        await reader.read()

    async with raw_upstream(chunked) as up:
        wire = WireTransport()
        try:
            response = await asyncio.wait_for(
                wire.handle_async_request(request("GET", f"{up.url}/")), BOUND
            )
            body = await asyncio.wait_for(response.aread(), BOUND)  # httpx iterates the stream
            await response.aclose()
        finally:
            await wire.aclose()

    assert body == b"onetwo"


async def test_an_https_upstream_is_spoken_to_over_tls_checked_against_its_ca(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    requests: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            while True:
                requests.append(await reader.readuntil(b"\r\n\r\n"))
                writer.write(OK)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_tls)
    url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/api/v1/models"
    wire = WireTransport()
    try:
        first = await exchange(wire, request("GET", url))
        second = await exchange(wire, request("GET", url))
    finally:
        await wire.aclose()
        server.close()
        await server.wait_closed()

    assert [(response.status_code, body) for response, body in (first, second)] == [
        (200, b"ok"),
        (200, b"ok"),
    ]
    assert [sent.split(b"\r\n")[0] for sent in requests] == [b"GET /api/v1/models HTTP/1.1"] * 2


async def test_an_answer_without_a_length_ends_when_the_upstream_closes() -> None:
    async def until_close(
        up: RawUpstream, _: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await up.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nhello ")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"world")
        await writer.drain()
        writer.close()

    async with raw_upstream(until_close) as up:
        wire = WireTransport()
        try:
            response, body = await exchange(wire, request("GET", f"{up.url}/"))
            assert wire.stats().open == 0  # its end was the connection's
        finally:
            await wire.aclose()

    assert (response.status_code, body) == (200, b"hello world")
    assert isinstance(response.stream, WireBody)
    timing = response.stream.timing
    assert 0 < timing.sent <= timing.head <= timing.end  # the end stamped at the close


def one_answer(*pieces: bytes, gap: float = 0.2) -> Handler:
    """Reads a request, then writes `pieces` `gap` seconds apart, and waits for the close."""

    async def serve(
        up: RawUpstream, _: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await up.read_request(reader)
        for index, piece in enumerate(pieces):
            if index:
                await asyncio.sleep(gap)
            writer.write(piece)
            await writer.drain()
        await reader.read()

    return serve


@pytest.mark.parametrize("version", [b"HTTP/1.0", b"HTTP/1.1"])
@pytest.mark.parametrize("first", [4, 12], ids=["partial-version", "whole-version"])
async def test_the_answers_http_version_is_reported_however_its_first_bytes_arrive(
    version: bytes, first: int
) -> None:
    answer = version + b" 200 OK\r\ncontent-length: 2\r\n\r\nok"
    async with raw_upstream(one_answer(answer[:first], answer[first:])) as up:
        wire = WireTransport()
        try:
            response, body = await exchange(wire, request("GET", f"{up.url}/"))
        finally:
            await wire.aclose()

    assert (response.extensions["http_version"], body) == (version, b"ok")


@pytest.mark.parametrize("read_first", [0, 3 * 1024 * 1024], ids=["unread", "read-then-held"])
async def test_a_body_nobody_reads_stops_being_read_from_the_upstream(read_first: int) -> None:
    """An answer held unread takes about a megabyte of the service's memory, not the whole
    body: past it, reading stops and the upstream's writes wait; also once some was read."""
    total = 64 * 1024 * 1024
    written = 0
    stalled = asyncio.Event()

    async def flood(
        up: RawUpstream, _: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        nonlocal written
        await up.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % total)
        piece = b"x" * (1024 * 1024)
        while written < total:
            writer.write(piece)
            try:
                await asyncio.wait_for(writer.drain(), 1.0)
            except TimeoutError:
                stalled.set()  # the client stopped reading: its buffers and ours are full
                await reader.read()
                return
            written += len(piece)

    async with raw_upstream(flood) as up:
        wire = WireTransport()
        try:
            response = await asyncio.wait_for(
                wire.handle_async_request(request("GET", f"{up.url}/")), BOUND
            )
            assert isinstance(response.stream, WireBody)
            taken = 0
            while taken < read_first:
                piece = await asyncio.wait_for(response.stream.next(), BOUND)
                assert piece is not None
                taken += len(piece[0])
            held = await eventually(lambda: stalled.is_set() or written >= total, BOUND)
            await response.aclose()
        finally:
            await wire.aclose()

    assert held
    assert stalled.is_set(), f"the whole {written} bytes were taken in with nobody reading"


@pytest.mark.parametrize(("size", "refused"), [(10_000, False), (10_001, True)])
async def test_an_answer_of_max_body_bytes_is_read_and_one_byte_more_is_refused_in_any_pieces(
    size: int, refused: bool
) -> None:
    pieces = b"".join(b"64\r\n" + b"b" * 100 + b"\r\n" for _ in range(size // 100))
    if size % 100:
        pieces += b"%x\r\n" % (size % 100) + b"b" * (size % 100) + b"\r\n"
    answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + pieces + b"0\r\n\r\n"
    async with raw_upstream(one_answer(answer)) as up:
        wire = WireTransport(max_body_bytes=10_000)
        try:
            if refused:
                with pytest.raises(UpstreamInvalidResponseError, match="=10000 bytes"):
                    await exchange(wire, request("GET", f"{up.url}/"))
            else:
                _, body = await exchange(wire, request("GET", f"{up.url}/"))
                assert body == b"b" * size
        finally:
            await wire.aclose()


async def test_an_answer_without_a_length_over_the_cap_is_refused_even_when_read_late() -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n"
    async with raw_upstream(one_answer(head, b"x" * 30_000, gap=0.05)) as up:
        wire = WireTransport(max_body_bytes=10_000)
        try:
            response = await asyncio.wait_for(
                wire.handle_async_request(request("GET", f"{up.url}/")), BOUND
            )
            await asyncio.sleep(0.3)  # the refusal and the close happen before anyone reads
            assert isinstance(response.stream, WireBody)
            with pytest.raises(UpstreamInvalidResponseError, match="=10000 bytes"):
                await asyncio.wait_for(response.stream.read(), BOUND)
            await response.stream.aclose()
        finally:
            await wire.aclose()


async def test_closing_a_body_twice_gives_its_connection_back_once() -> None:
    async def answers(
        up: RawUpstream, _: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            await up.read_request(reader)
            writer.write(OK)

    async with raw_upstream(answers) as up:
        wire = WireTransport(max_connections=1)
        try:
            response = await asyncio.wait_for(
                wire.handle_async_request(request("GET", f"{up.url}/")), BOUND
            )
            await response.aread()
            await response.aclose()
            await response.stream.aclose()  # type: ignore[union-attr]
            in_use = wire.stats().in_use
            held = await asyncio.wait_for(
                wire.handle_async_request(request("GET", f"{up.url}/")), BOUND
            )
            # The one connection is lent out: a third request must wait for it.
            with pytest.raises(UpstreamTimeoutError, match="No free upstream connection"):
                await wire.handle_async_request(
                    request("GET", f"{up.url}/", timeouts={"pool": 0.2})
                )
            await held.aclose()
        finally:
            await wire.aclose()

    assert in_use == 0


async def test_a_connection_closed_while_its_answer_is_held_is_not_reused() -> None:
    async def answer_then_close(
        up: RawUpstream, _: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await up.read_request(reader)
        writer.write(OK)  # keep-alive promised...
        await writer.drain()
        writer.close()  # ...and the connection closed right after

    async with raw_upstream(answer_then_close) as up:
        wire = WireTransport()
        try:
            response = await asyncio.wait_for(
                wire.handle_async_request(request("GET", f"{up.url}/")), BOUND
            )
            assert isinstance(response.stream, WireBody)
            assert await response.stream.read() == b"ok"
            await asyncio.sleep(0.3)  # the close arrives while the answer is still held
            await response.stream.aclose()
            _, body = await exchange(wire, request("GET", f"{up.url}/", timeouts={"read": 5.0}))
        finally:
            await wire.aclose()

    assert body == b"ok"
    assert up.connections == 2


async def test_a_large_body_read_late_ends_at_the_deadline() -> None:
    body = b"x" * (4 * 1024 * 1024)
    answer = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body
    async with raw_upstream(one_answer(answer)) as up:
        wire = WireTransport()
        try:
            sent = request("GET", f"{up.url}/")
            sent.extensions["deadline"] = 0.3
            response = await asyncio.wait_for(wire.handle_async_request(sent), BOUND)
            await asyncio.sleep(0.6)  # past the deadline, with reading paused meanwhile
            assert isinstance(response.stream, WireBody)
            with pytest.raises(UpstreamTimeoutError, match="UPSTREAM_DEADLINE_SECONDS=0.3 s"):
                await asyncio.wait_for(response.stream.read(), BOUND)
            await response.stream.aclose()
        finally:
            await wire.aclose()


async def test_a_head_that_never_ends_is_refused_past_max_head_bytes() -> None:
    async def endless_head(
        up: RawUpstream, _: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await up.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for index in range(MAX_HEAD_BYTES // 1000 + 10):
            writer.write(b"x-%d: %s\r\n" % (index, b"v" * 990))
            await writer.drain()
        await reader.read()

    async with raw_upstream(endless_head) as up:
        wire = WireTransport()
        try:
            with pytest.raises(UpstreamInvalidResponseError) as refused:
                await exchange(wire, request("GET", f"{up.url}/"))
        finally:
            await wire.aclose()

    assert (
        refused.value.detail == f"Upstream answer's headers are larger than {MAX_HEAD_BYTES} bytes"
    )


async def test_an_early_hints_answer_does_not_count_against_the_final_heads_limit() -> None:
    hints = b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n"
    head = head_of(MAX_HEAD_BYTES)
    # The first reads end exactly at MAX_HEAD_BYTES bytes, inside the final head.
    cut = MAX_HEAD_BYTES - len(hints)
    async with raw_upstream(one_answer(hints + head[:cut], head[cut:] + b"ok")) as up:
        wire = WireTransport()
        try:
            response, body = await exchange(wire, request("GET", f"{up.url}/"))
        finally:
            await wire.aclose()

    assert (response.status_code, body) == (200, b"ok")


async def test_a_connection_lost_before_its_request_is_written_refuses_it_as_unsent() -> None:
    """The connection can be lost in the loop turn between its checkout and the write, which
    no upstream can arrange on purpose: the request is then refused as never sent, so the
    client may send it again."""
    connection = _Connection(("http", "upstream.test", 80), asyncio.get_running_loop())
    connection.connection_lost(None)

    with pytest.raises(UpstreamConnectionError) as refused:
        connection.send(b"GET / HTTP/1.1\r\n\r\n", None, None, False)

    assert refused.value.detail == "Upstream connection failed: closed before the request was sent"
    assert (refused.value.before_answer, refused.value.written) == (True, False)


async def test_an_answer_that_arrived_within_the_deadline_may_be_read_after_it() -> None:
    async with raw_upstream(one_answer(OK)) as up:
        wire = WireTransport()
        try:
            sent = request("GET", f"{up.url}/")
            sent.extensions["deadline"] = 0.3
            response = await asyncio.wait_for(wire.handle_async_request(sent), BOUND)
            await asyncio.sleep(0.5)  # read past the deadline: the answer was whole before it
            assert isinstance(response.stream, WireBody)
            body = await asyncio.wait_for(response.stream.read(), BOUND)
            await response.stream.aclose()
        finally:
            await wire.aclose()

    assert body == b"ok"


async def test_an_answer_released_after_the_pool_closed_closes_its_connection() -> None:
    async def answers(
        up: RawUpstream, _: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            await up.read_request(reader)
            writer.write(OK)

    async with raw_upstream(answers) as up:
        wire = WireTransport()
        response = await asyncio.wait_for(
            wire.handle_async_request(request("GET", f"{up.url}/")), BOUND
        )
        assert isinstance(response.stream, WireBody)
        assert await response.stream.read() == b"ok"  # read whole, and still held
        await wire.aclose()  # the service shutting down meanwhile
        await response.stream.aclose()
        closed = await eventually(lambda: up.closed == 1)

    assert closed, "the connection went back to a pool that was closed"
    assert wire.stats().open == 0


async def answering_ok(
    up: RawUpstream, _: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    while True:
        await up.read_request(reader)
        writer.write(OK)


async def test_a_request_without_extensions_is_sent_with_no_limits_and_kept_on_its_answer() -> None:
    async with raw_upstream(answering_ok) as up:
        wire = WireTransport()
        try:
            sent = httpx.Request("GET", f"{up.url}/")  # no timeout, no cap, no deadline
            response = await asyncio.wait_for(wire.handle_async_request(sent), BOUND)
            body = await asyncio.wait_for(response.aread(), BOUND)
        finally:
            await wire.aclose()

    assert (response.status_code, body) == (200, b"ok")
    assert response.request is sent


async def test_a_requests_own_body_cap_wins_over_the_pools() -> None:
    async with raw_upstream(answering_ok) as up:
        wire = WireTransport()  # no cap of its own
        try:
            sent = request("GET", f"{up.url}/")
            sent.extensions["max_body_bytes"] = 1
            with pytest.raises(UpstreamInvalidResponseError, match="=1 bytes"):
                await exchange(wire, sent)
        finally:
            await wire.aclose()


async def test_an_answer_without_a_reason_phrase_has_an_empty_one() -> None:
    async with raw_upstream(one_answer(b"HTTP/1.1 204\r\n\r\n")) as up:
        wire = WireTransport()
        try:
            response, body = await exchange(wire, request("GET", f"{up.url}/"))
        finally:
            await wire.aclose()

    assert (response.status_code, response.extensions["reason_phrase"], body) == (204, b"", b"")


async def test_an_idle_connection_past_its_keepalive_is_not_reused() -> None:
    async with raw_upstream(answering_ok) as up:
        wire = WireTransport(keepalive_seconds=0.2)
        try:
            await exchange(wire, request("GET", f"{up.url}/"))
            await asyncio.sleep(0.5)
            await exchange(wire, request("GET", f"{up.url}/"))
            assert wire.stats().open == 1
        finally:
            await wire.aclose()

    assert up.connections == 2


async def test_requests_in_flight_are_counted_and_a_cancelled_connect_gives_its_place_back() -> (
    None
):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        parked = [socket.socket() for _ in range(3)]
        for sock in parked:
            sock.setblocking(False)
            sock.connect_ex(listener.getsockname())
        async with raw_upstream(answering_ok) as up:
            wire = WireTransport(max_connections=3)
            try:
                held = [
                    await asyncio.wait_for(
                        wire.handle_async_request(request("GET", f"{up.url}/")), BOUND
                    )
                    for _ in range(2)
                ]
                in_use_when_held = wire.stats().in_use
                port = listener.getsockname()[1]
                connecting = asyncio.ensure_future(
                    wire.handle_async_request(request("GET", f"http://127.0.0.1:{port}/"))
                )
                await asyncio.sleep(0.3)  # its SYN is dropped: it is still connecting
                connecting.cancel()
                await asyncio.gather(connecting, return_exceptions=True)
                after_cancel = (wire.stats().open, wire.stats().in_use)
                for response in held:
                    await response.aclose()
            finally:
                await wire.aclose()
                for sock in parked:
                    sock.close()

    assert in_use_when_held == 2
    assert after_cancel == (2, 2)  # the two held, and nothing of the cancelled one


@pytest.mark.parametrize("read_timeout", [LONG, None])
async def test_a_body_still_unfinished_when_read_after_its_deadline_ends_there(
    read_timeout: float | None,
) -> None:
    start = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf."
    async with raw_upstream(one_answer(start)) as up:
        wire = WireTransport()
        try:
            sent = httpx.Request(
                "GET",
                f"{up.url}/",
                extensions={"timeout": {"read": read_timeout}, "deadline": 0.3},
            )
            response = await asyncio.wait_for(wire.handle_async_request(sent), BOUND)
            await asyncio.sleep(0.5)
            assert isinstance(response.stream, WireBody)
            with pytest.raises(UpstreamTimeoutError, match="UPSTREAM_DEADLINE_SECONDS=0.3 s"):
                await asyncio.wait_for(response.stream.read(), BOUND)
            await response.stream.aclose()
        finally:
            await wire.aclose()
