"""HTTP/1.1 edge cases, each against both transports through the production client.

Every case asserts what a caller sees (the body, or our error class), how many times the upstream
received the request, what the next request on the same client gets and on which connection,
and that closing the client leaves no upstream socket open.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator

import pytest

from src.config import TransportKind
from src.schemas.prompts import GenerationResult, SamplingParams
from src.services.base.exceptions import (
    UpstreamConnectionError,
    UpstreamInvalidResponseError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)
from src.services.base.timing import Timing
from src.services.base.transport import MAX_HEAD_BYTES
from src.services.openrouter.client import StreamDelta
from tests.conformance.conftest import (
    ATTEMPTS,
    MAX_BODY_BYTES,
    READ_TIMEOUT,
    Case,
    in_use,
    make_client,
)
from tests.conformance.scripted_upstream import Connection, Received, Script, ScriptedUpstream
from tests.helpers.openrouter import API_KEY, DONE, chunk

pytestmark = pytest.mark.anyio

# Far below READ_TIMEOUT: a pause the client must sit through without giving up.
PAUSE = READ_TIMEOUT / 10


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


NEXT = ok(b"next")


def first_then_next(first: Script) -> Script:
    """The upstream's first request gets `first`; every later one, the plain answer "next"."""

    async def script(connection: Connection, request: Received) -> None:
        if request.path.endswith("/next"):
            await connection.send(NEXT)
        else:
            await first(connection, request)

    return script


def writes(*pieces: bytes, pause: float = 0.0) -> Script:
    async def script(connection: Connection, _: Received) -> None:
        for number, piece in enumerate(pieces):
            if number and pause:
                await asyncio.sleep(pause)
            await connection.send(piece)

    return script


async def next_is_served(case: Case, *, on_connection: int) -> None:
    """The next request on the same client is answered, on the connection expected."""
    assert await case.get("next") == b"next"
    assert case.upstream.requests[-1].connection == on_connection


# --- the request ------------------------------------------------------------------------------


async def test_the_request_reaches_the_upstream_byte_for_byte(case: Case) -> None:
    case.upstream.script = writes(NEXT)
    assert await case.post(body=b'{"model":"m/x"}') == b"next"
    assert await case.get() == b"next"

    host = case.upstream.base_url.split("/")[2]
    common = (
        f"host: {host}\r\nuser-agent: llm-gateway/0.1\r\naccept-encoding: identity\r\n"
        f"authorization: Bearer {API_KEY}\r\n"
    ).encode()
    post, get = case.upstream.requests
    assert post.head == (
        b"POST /api/v1/chat/completions HTTP/1.1\r\n"
        + common
        + b"content-type: application/json\r\ncontent-length: 15\r\n\r\n"
    )
    assert post.body == b'{"model":"m/x"}'
    assert get.head == b"GET /api/v1/models HTTP/1.1\r\n" + common + b"\r\n"
    assert (post.connection, get.connection) == (0, 0)
    assert await case.close() == []


async def test_a_streamed_completion_in_uneven_pieces_gives_every_delta(case: Case) -> None:
    events = b"".join([*(chunk(piece) for piece in ("Hel", "lo", " there")), DONE])
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(events), events)
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    # Cut inside the chunk, inside events and inside the last chunk's framing.
    case.upstream.script = first_then_next(
        writes(head + body[:7], body[7:40], body[40:-3], body[-3:], pause=PAUSE / 2)
    )
    timing = Timing()
    items = [item async for item in case.client.stream("m/x", "hi", SamplingParams(), timing)]

    assert [item.text for item in items if isinstance(item, StreamDelta)] == [
        "Hel",
        "lo",
        " there",
    ]
    assert isinstance(items[-1], GenerationResult)
    assert timing.first_content is not None and timing.first_content <= timing.ended
    await next_is_served(case, on_connection=0)
    assert await case.close() == []


# --- informational answers -------------------------------------------------------------------


async def test_informational_answer_in_the_same_read_is_skipped(case: Case) -> None:
    case.upstream.script = first_then_next(writes(b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"final")))
    assert await case.get() == b"final"
    await next_is_served(case, on_connection=0)
    assert await case.close() == []


async def test_informational_answer_in_a_later_read_is_skipped(case: Case) -> None:
    case.upstream.script = first_then_next(
        writes(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", ok(b"final"), pause=PAUSE)
    )
    assert await case.get() == b"final"
    await next_is_served(case, on_connection=0)
    assert await case.close() == []


# --- message boundaries ----------------------------------------------------------------------


async def test_two_answers_in_one_read_wire_drops_the_extra_httpx_serves_it_next(
    case: Case,
) -> None:
    case.upstream.script = first_then_next(writes(ok(b"first") + ok(b"extra")))
    assert await case.get() == b"first"
    if case.kind == "wire":
        # Bytes nobody asked for: that connection is not trusted with the next request.
        await next_is_served(case, on_connection=1)
    else:
        # httpcore checks an idle socket for unread bytes, not h11's buffer: what arrived in
        # the same read as the first answer is taken as the answer to the next request.
        assert await case.get("next") == b"extra"
    assert await case.close() == []


async def test_unasked_answer_on_an_idle_connection_is_never_served(case: Case) -> None:
    async def answer_then_more(connection: Connection, _: Received) -> None:
        await connection.send(ok(b"first"))
        await asyncio.sleep(PAUSE)
        await connection.send(ok(b"extra"))

    case.upstream.script = first_then_next(answer_then_more)
    assert await case.get() == b"first"
    await asyncio.sleep(2 * PAUSE)
    await next_is_served(case, on_connection=1)
    assert await case.close() == []


async def test_folded_header_line_wire_refuses_it_httpx_unfolds_it(case: Case) -> None:
    # RFC 9112 5.2: obs-fold is obsolete; a client may refuse the message or unfold it.
    # llhttp (ours) refuses it, h11 (httpx's) unfolds it.
    case.upstream.script = first_then_next(
        writes(b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 2\r\n\r\nok")
    )
    if case.kind == "wire":
        with pytest.raises(UpstreamInvalidResponseError):
            await case.get()
        await next_is_served(case, on_connection=1)
    else:
        assert await case.get() == b"ok"
        await next_is_served(case, on_connection=0)
    assert case.upstream.received("models") == 1
    assert await case.close() == []


async def test_chunked_body_with_extensions_and_trailers_is_read_whole(case: Case) -> None:
    case.upstream.script = first_then_next(
        writes(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
            b'5;ext=1\r\nhello\r\n6;name="q x"\r\n world\r\n0\r\nX-Sum: 11\r\n\r\n'
        )
    )
    assert await case.get() == b"hello world"
    await next_is_served(case, on_connection=0)
    assert await case.close() == []


async def test_body_until_close_without_length_is_read_whole(case: Case) -> None:
    async def until_close(connection: Connection, _: Received) -> None:
        await connection.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")
        await connection.close()

    case.upstream.script = first_then_next(until_close)
    assert await case.get() == b"all of it"
    await next_is_served(case, on_connection=1)
    assert await case.close() == []


async def test_no_content_answer_has_no_body_and_keeps_the_connection(case: Case) -> None:
    case.upstream.script = first_then_next(writes(b"HTTP/1.1 204 No Content\r\n\r\n"))
    assert await case.get() == b""
    await next_is_served(case, on_connection=0)
    assert await case.close() == []


async def test_not_modified_with_content_length_has_no_body(case: Case) -> None:
    case.upstream.script = first_then_next(
        writes(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n")
    )
    with pytest.raises(UpstreamStatusError) as caught:
        await case.get()
    assert caught.value.status_code == 304
    assert case.upstream.received("models") == 1
    await next_is_served(case, on_connection=0)
    assert await case.close() == []


async def test_head_answer_with_content_length_has_no_body_wire_then_closes_the_connection(
    case: Case,
) -> None:
    # httptools cannot be told that a HEAD's answer has no body, so ours ends the answer at its
    # head and does not reuse the connection (the service never sends HEAD upstream); h11 knows.
    case.upstream.script = first_then_next(
        writes(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    )
    assert await case.client.read("HEAD", "models", Timing()) == b""
    assert case.upstream.requests[0].method == "HEAD"
    await next_is_served(case, on_connection=1 if case.kind == "wire" else 0)
    assert await case.close() == []


async def test_chunked_with_content_length_too_wire_refuses_it_httpx_reads_it_chunked(
    case: Case,
) -> None:
    # RFC 9112 6.3: Transfer-Encoding wins, but a message with both may be a smuggling attempt;
    # llhttp (ours) refuses it, h11 (httpx's) reads it chunked.
    case.upstream.script = first_then_next(
        writes(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n"
        )
    )
    if case.kind == "wire":
        with pytest.raises(UpstreamInvalidResponseError):
            await case.get()
        await next_is_served(case, on_connection=1)
    else:
        assert await case.get() == b"hello"
        assert await case.get("next") == b"next"
    assert case.upstream.received("models") == 1
    assert await case.close() == []


async def test_oversized_head_is_refused(case: Case) -> None:
    case.upstream.script = first_then_next(
        writes(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 1024 * 1024 + b"\r\n\r\n")
    )
    with pytest.raises(UpstreamInvalidResponseError):
        await case.get()
    assert case.upstream.received("models") == 1
    await next_is_served(case, on_connection=1)
    assert await case.close() == []


async def test_oversized_head_completed_by_its_last_read_is_refused(case: Case) -> None:
    # Just past the wire transport's limit (256 KiB, far past h11's 100 KiB), its end in a
    # separate small write: the read that crosses the limit also completes the head.
    head = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (MAX_HEAD_BYTES - 100) + b"\r\n"
    case.upstream.script = first_then_next(
        writes(head, b"X-Last: " + b"b" * 200 + b"\r\nContent-Length: 2\r\n\r\nok", pause=PAUSE)
    )
    with pytest.raises(UpstreamInvalidResponseError):
        await case.get()
    assert case.upstream.received("models") == 1
    await next_is_served(case, on_connection=1)
    assert await case.close() == []


async def test_answer_larger_than_the_cap_is_refused(case: Case) -> None:
    case.upstream.script = first_then_next(writes(ok(b"x" * (MAX_BODY_BYTES + 1))))
    with pytest.raises(UpstreamInvalidResponseError, match="MAX_UPSTREAM_RESPONSE_BYTES"):
        await case.get()
    assert case.upstream.received("models") == 1
    await next_is_served(case, on_connection=1)
    assert await case.close() == []


# --- the upstream closes ---------------------------------------------------------------------


def closes_on_post(served: Script) -> Script:
    async def script(connection: Connection, request: Received) -> None:
        if request.method == "POST":
            await connection.close()
        else:
            await served(connection, request)

    return script


async def test_close_after_reading_a_post_on_a_fresh_connection_is_an_error_sent_once(
    case: Case,
) -> None:
    case.upstream.script = closes_on_post(writes(NEXT))
    with pytest.raises(UpstreamConnectionError):
        await case.post()
    assert case.upstream.received("chat/completions") == 1
    assert case.waits == []  # no retry either
    await next_is_served(case, on_connection=1)
    assert await case.close() == []


async def test_close_after_reading_a_post_on_a_reused_connection_is_an_error_sent_once(
    case: Case,
) -> None:
    case.upstream.script = closes_on_post(writes(NEXT))
    await next_is_served(case, on_connection=0)
    with pytest.raises(UpstreamConnectionError):
        await case.post()
    assert case.upstream.received("chat/completions") == 1
    assert case.upstream.requests[-1].connection == 0
    assert case.waits == []
    await next_is_served(case, on_connection=1)
    assert await case.close() == []


async def test_idle_connection_closed_by_the_upstream_is_not_reused(case: Case) -> None:
    async def answer_then_idle_timeout(connection: Connection, _: Received) -> None:
        await connection.send(ok(b"first"))
        await connection.close()

    case.upstream.script = first_then_next(answer_then_idle_timeout)
    assert await case.get() == b"first"
    assert await case.upstream.closed(0)
    # The loop has had time to see the close before the next request goes.
    await asyncio.sleep(PAUSE)
    await next_is_served(case, on_connection=1)
    assert case.upstream.received("models") == 1
    assert await case.close() == []


async def test_idle_close_that_arrived_while_the_loop_was_busy_is_seen_before_reuse(
    case: Case,
) -> None:
    """The upstream's close is in the socket but the loop has not run since: the pool must
    look at the socket itself, as httpcore does, or the next request is written into a closed
    connection and, being possibly received, cannot be sent again."""

    async def answer_then_idle_timeout(connection: Connection, _: Received) -> None:
        await connection.send(ok(b"first"))
        await connection.close()

    case.upstream.script = first_then_next(answer_then_idle_timeout)
    assert await case.get() == b"first"
    assert await case.upstream.closed(0)
    time.sleep(PAUSE)  # blocks the loop on purpose: the close arrives, unseen by callbacks
    await next_is_served(case, on_connection=1)
    assert case.upstream.received("models") == 1
    assert await case.close() == []


async def test_connection_dropped_mid_body_is_an_error_sent_once(case: Case) -> None:
    async def drop(connection: Connection, _: Received) -> None:
        await connection.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await connection.close()

    case.upstream.script = first_then_next(drop)
    with pytest.raises(UpstreamConnectionError):
        await case.get()
    assert case.upstream.received("models") == 1
    assert case.waits == []
    await next_is_served(case, on_connection=1)
    assert await case.close() == []


# --- timing of the body ----------------------------------------------------------------------


async def test_slow_body_within_the_read_timeout_succeeds(case: Case) -> None:
    case.upstream.script = first_then_next(
        writes(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"2\r\nab\r\n",
            b"2\r\ncd\r\n",
            b"2\r\nef\r\n0\r\n\r\n",
            pause=PAUSE,
        )
    )
    assert await case.get() == b"abcdef"
    await next_is_served(case, on_connection=0)
    assert await case.close() == []


async def test_stalled_body_is_a_read_timeout_sent_once(case: Case) -> None:
    async def stall(connection: Connection, _: Received) -> None:
        await connection.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await connection.until_client_closes()

    case.upstream.script = first_then_next(stall)
    with pytest.raises(UpstreamTimeoutError):
        await case.get()
    assert case.upstream.received("models") == 1
    assert case.waits == []
    assert await case.upstream.closed_by_client(0)
    await next_is_served(case, on_connection=1)
    assert await case.close() == []


# --- the pool ---------------------------------------------------------------------------------


async def test_pool_limit_queues_the_second_request(
    transport: TransportKind, upstream: ScriptedUpstream
) -> None:
    release = asyncio.Event()

    async def held(connection: Connection, _: Received) -> None:
        await release.wait()
        await connection.send(ok(b"held"))

    upstream.script = held
    waits: list[float] = []
    client = make_client(transport, upstream.base_url, waits, max_connections=1)
    try:
        calls = [asyncio.create_task(client.read("GET", "models", Timing())) for _ in range(2)]
        await upstream.wait_for_requests(1)
        await asyncio.sleep(PAUSE)
        assert len(upstream.connections) == 1
        assert len(upstream.requests) == 1
        release.set()
        assert await asyncio.gather(*calls) == [b"held", b"held"]
        assert [request.connection for request in upstream.requests] == [0, 0]
    finally:
        await client.aclose()
    assert await upstream.all_closed() == []


# --- cancellation -------------------------------------------------------------------------------


@contextlib.contextmanager
def unaccepting_listener() -> Iterator[str]:
    """A loopback port whose accept queue is full: a new connection waits in the handshake."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        yield f"http://127.0.0.1:{port}/api/v1"
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def refused_url() -> str:
    """A loopback port nobody listens on: connecting is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/api/v1"


async def test_a_refused_connection_is_retried_then_an_error(transport: TransportKind) -> None:
    waits: list[float] = []
    client = make_client(transport, refused_url(), waits)
    try:
        with pytest.raises(UpstreamConnectionError, match="cannot reach"):
            await client.read("POST", "chat/completions", Timing(), b"{}")
        assert len(waits) == ATTEMPTS - 1  # nothing was sent: every attempt is made
        assert in_use(client) == 0
    finally:
        await client.aclose()


async def test_a_connect_timeout_is_retried_then_a_timeout(transport: TransportKind) -> None:
    waits: list[float] = []
    with unaccepting_listener() as base_url:
        client = make_client(transport, base_url, waits, connect_timeout=PAUSE)
        try:
            with pytest.raises(UpstreamTimeoutError, match="connecting"):
                await client.read("POST", "chat/completions", Timing(), b"{}")
            assert len(waits) == ATTEMPTS - 1
            assert in_use(client) == 0
        finally:
            await client.aclose()


async def test_cancelled_while_connecting_frees_the_pool(transport: TransportKind) -> None:
    waits: list[float] = []
    with unaccepting_listener() as base_url:
        client = make_client(transport, base_url, waits)
        try:
            call = asyncio.create_task(client.read("GET", "models", Timing()))
            await asyncio.sleep(PAUSE)
            assert not call.done()
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            assert in_use(client) == 0
        finally:
            await client.aclose()
    assert waits == []


async def test_cancelled_while_waiting_for_the_head_drops_the_connection(case: Case) -> None:
    call = asyncio.create_task(case.get())
    await case.upstream.wait_for_requests(1)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert case.in_use == 0
    assert await case.upstream.closed_by_client(0)
    case.upstream.script = writes(NEXT)
    await next_is_served(case, on_connection=1)
    assert case.upstream.received("models") == 1
    assert await case.close() == []


async def test_cancelled_mid_body_drops_the_connection(case: Case) -> None:
    async def first_piece_then_hold(connection: Connection, _: Received) -> None:
        await connection.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n")
        await connection.until_client_closes()

    case.upstream.script = first_then_next(first_piece_then_hold)
    first_piece = asyncio.Event()

    async def read_body() -> None:
        body = await case.client.open("GET", "models", Timing())
        try:
            while await body.next() is not None:
                first_piece.set()
        finally:
            await body.aclose()

    call = asyncio.create_task(read_body())
    async with asyncio.timeout(10):
        await first_piece.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert case.in_use == 0
    assert await case.upstream.closed_by_client(0)
    await next_is_served(case, on_connection=1)
    assert await case.close() == []
