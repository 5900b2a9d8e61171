"""The limits before a request reaches the app, on uvicorn in this process (the end-to-end
tests in tests/e2e/test_preauth_limits.py attack a real server process): what a client is
answered, byte for byte where it matters."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.types import Receive, Scope, Send

from src.api.gate import http_limits
from tests.helpers.limits import (
    WAIT_SECONDS,
    App,
    errors_logged,
    exchange,
    parse,
    serving,
)

pytestmark = pytest.mark.anyio

CLOSE = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


@pytest.fixture(autouse=True)
def no_errors_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    yield
    assert errors_logged(caplog) == []


async def test_a_head_over_max_header_bytes_is_a_431_in_our_error_shape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(tmp_path, monkeypatch, App(), max_header_bytes=1024) as port:
        answer = await exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2000)

    status, headers, body = parse(answer)
    assert status == "HTTP/1.1 431 Request Header Fields Too Large"
    # Header names as sent, in lowercase like uvicorn's own.
    names = [line.partition(b":")[0] for line in answer.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]]
    assert names == [
        b"date",
        b"server",
        b"content-type",
        b"content-length",
        b"x-request-id",
        b"connection",
    ]
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert body == {
        "detail": "The request line and headers are larger than MAX_HEADER_BYTES=1024 bytes.",
        "error": "RequestHeadersTooLarge",
        "request_id": headers["x-request-id"],
    }
    assert len(body["request_id"]) == 32


async def test_a_head_just_under_max_header_bytes_reaches_the_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    head = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: "
    request = head + b"a" * (1024 - len(head) - 4) + b"\r\n\r\n"
    assert len(request) == 1024

    async with serving(tmp_path, monkeypatch, App(), max_header_bytes=1024) as port:
        answer = await exchange(port, request)

    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.endswith(b"\r\n\r\n2\r\nok\r\n0\r\n\r\n")  # chunked: no length was given


async def test_a_head_not_finished_in_time_is_a_408(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(tmp_path, monkeypatch, App(), header_timeout_seconds=0.5) as port:
        answer = await exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n")

    assert (
        "Closed 1 connections: no complete request line and headers within "
        "HEADER_TIMEOUT_SECONDS=0.5" in caplog.messages
    )

    status, _, body = parse(answer)
    assert status == "HTTP/1.1 408 Request Timeout"
    assert (body["error"], body["detail"]) == (
        "RequestTimeout",
        "The request line and headers did not arrive within HEADER_TIMEOUT_SECONDS=0.5.",
    )


async def test_a_connection_that_sends_nothing_is_closed_without_an_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(tmp_path, monkeypatch, App(), header_timeout_seconds=0.5) as port:
        answer = await exchange(port, b"")

    assert answer == b""


async def test_a_request_past_max_connections_is_a_503_with_retry_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = App()
    async with serving(tmp_path, monkeypatch, app, max_connections=1) as port:
        held = asyncio.create_task(
            exchange(port, b"GET /hold HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        )
        await asyncio.wait_for(app.held.wait(), WAIT_SECONDS)
        answer = await exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        app.release.set()
        first = await asyncio.wait_for(held, WAIT_SECONDS)

    status, headers, body = parse(answer)
    assert status == "HTTP/1.1 503 Service Unavailable"
    assert headers["retry-after"] == "1"
    assert (body["error"], body["detail"]) == (
        "ServiceUnavailable",
        "The server is at MAX_CONNECTIONS=1; retry shortly.",
    )
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")


async def test_a_connection_past_max_connections_closes_the_one_waiting_longest_for_its_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(
        tmp_path, monkeypatch, App(), max_connections=2, header_timeout_seconds=30
    ) as port:
        oldest, oldest_writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.05)
        younger, younger_writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            answer = await exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            closed = await asyncio.wait_for(oldest.read(), WAIT_SECONDS)
            younger_writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            served = await asyncio.wait_for(younger.read(), WAIT_SECONDS)
        finally:
            oldest_writer.close()
            younger_writer.close()

    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert closed == b""  # closed without an answer: it had asked nothing
    assert served.startswith(b"HTTP/1.1 200 OK\r\n")  # the younger one was kept
    assert (
        "Closed 1 connections still waiting for their headers or body, to make room for new ones: "
        "MAX_CONNECTIONS reached" in caplog.messages
    )


async def test_new_connections_arriving_steadily_do_not_postpone_a_header_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(
        tmp_path, monkeypatch, App(), header_timeout_seconds=0.5, max_connections=1000
    ) as port:
        late = asyncio.create_task(exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n"))
        opened = []
        try:
            # Each newcomer's deadline is later than the late one's, and they keep coming.
            async with asyncio.timeout(WAIT_SECONDS):
                while not late.done():
                    opened.append(await asyncio.open_connection("127.0.0.1", port))
                    await asyncio.sleep(0.05)
        finally:
            for _, writer in opened:
                writer.close()
        answer = await late

    assert parse(answer)[0] == "HTTP/1.1 408 Request Timeout"


async def test_a_header_timeout_in_exponent_notation_is_logged_as_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(tmp_path, monkeypatch, App(), header_timeout_seconds=1e-5) as port:
        answer = await exchange(port, b"")

    assert answer == b""
    assert (
        "Closed 1 connections: no complete request line and headers within "
        "HEADER_TIMEOUT_SECONDS=1e-05" in caplog.messages
    )


async def test_a_kept_alive_connections_next_head_is_held_to_the_limit_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def head_of(size: int) -> bytes:
        head = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: "
        return head + b"a" * (size - len(head) - 4) + b"\r\n\r\n"

    async def second_answer(port: int, request: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            first = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), WAIT_SECONDS)
            assert first.startswith(b"HTTP/1.1 200 OK\r\n")
            writer.write(request)
            return await asyncio.wait_for(reader.read(), WAIT_SECONDS)
        finally:
            writer.close()

    async with serving(tmp_path, monkeypatch, App(), max_header_bytes=1024) as port:
        at_the_limit = await second_answer(port, head_of(1024))
        over_it = await second_answer(port, head_of(2000))

    assert at_the_limit.startswith(b"HTTP/1.1 200 OK\r\n")
    assert parse(over_it)[0] == "HTTP/1.1 431 Request Header Fields Too Large"


async def test_pipelined_requests_at_max_connections_are_each_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only one connection, so nothing is over the limit: its queued requests wait their turn.
    async with serving(tmp_path, monkeypatch, App(), max_connections=1) as port:
        answer = await exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + CLOSE)

    assert answer.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert b"503" not in answer


async def test_a_request_the_app_answers_after_the_header_timeout_is_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = App()
    async with serving(tmp_path, monkeypatch, app, header_timeout_seconds=0.3) as port:
        alone = asyncio.create_task(
            exchange(port, b"GET /hold HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        )
        await asyncio.wait_for(app.held.wait(), WAIT_SECONDS)
        await asyncio.sleep(1.0)  # the app works past the header timeout
        app.release.set()
        answer = await asyncio.wait_for(alone, WAIT_SECONDS)

    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")


async def test_a_pipelined_request_the_app_answers_slowly_is_not_cut_by_the_header_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = App()
    async with serving(tmp_path, monkeypatch, app, header_timeout_seconds=0.3) as port:
        pipelined = asyncio.create_task(
            exchange(
                port,
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /hold HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
        )
        await asyncio.wait_for(app.held.wait(), WAIT_SECONDS)
        await asyncio.sleep(1.0)  # the second request runs past the header timeout
        app.release.set()
        answer = await asyncio.wait_for(pipelined, WAIT_SECONDS)

    assert answer.count(b"HTTP/1.1 200 OK\r\n") == 2


async def test_a_connection_its_client_closed_is_not_counted_as_timed_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(tmp_path, monkeypatch, App(), header_timeout_seconds=0.5) as port:
        _, gone = await asyncio.open_connection("127.0.0.1", port)
        gone.write(b"GET / HTTP/1.1\r\n")
        gone.close()
        await gone.wait_closed()
        answer = await exchange(port, b"GET / HTTP/1.1\r\n")

    assert parse(answer)[0] == "HTTP/1.1 408 Request Timeout"
    counts = [
        int(message.split()[1])
        for message in caplog.messages
        if "HEADER_TIMEOUT_SECONDS" in message
    ]
    assert sum(counts) == 1


async def test_refused_connections_give_their_place_back_after_the_linger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_limits, "LINGER_SECONDS", 0.2)
    too_large = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2000
    async with serving(
        tmp_path,
        monkeypatch,
        App(),
        max_connections=1,
        max_header_bytes=1024,
        header_timeout_seconds=30,
    ) as port:
        left = await exchange(port, too_large)  # its client leaves as soon as it is answered
        staying, staying_writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            staying_writer.write(too_large)
            stayed = await asyncio.wait_for(staying.read(), WAIT_SECONDS)
            # While the refused connection lingers it is one of MAX_CONNECTIONS; then it is closed.
            served = b""
            async with asyncio.timeout(WAIT_SECONDS):
                while not served.startswith(b"HTTP/1.1 200 "):
                    served = await exchange(port, CLOSE)
            # With both refusals gone, one connection is the limit again: a second makes room.
            idle, idle_writer = await asyncio.open_connection("127.0.0.1", port)
            newcomer, newcomer_writer = await asyncio.open_connection("127.0.0.1", port)
            closed = await asyncio.wait_for(idle.read(), WAIT_SECONDS)
            newcomer_writer.write(CLOSE)
            kept = await asyncio.wait_for(newcomer.read(), WAIT_SECONDS)
            idle_writer.close()
            newcomer_writer.close()
        finally:
            staying_writer.close()

    assert parse(left)[0] == parse(stayed)[0] == "HTTP/1.1 431 Request Header Fields Too Large"
    assert closed == b""
    assert kept.startswith(b"HTTP/1.1 200 OK\r\n")


async def test_a_refused_head_is_not_answered_again_at_its_header_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(http_limits, "LINGER_SECONDS", 3.0)
    async with serving(
        tmp_path, monkeypatch, App(), max_header_bytes=1024, header_timeout_seconds=0.3
    ) as port:
        refused, refused_writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            refused_writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2000)
            answer = await asyncio.wait_for(refused.read(), WAIT_SECONDS)
            # Its header deadline passes while it lingers; a later one times out as usual.
            late = await exchange(port, b"GET / HTTP/1.1\r\n")
        finally:
            refused_writer.close()

    assert parse(answer)[0] == "HTTP/1.1 431 Request Header Fields Too Large"
    assert parse(late)[0] == "HTTP/1.1 408 Request Timeout"
    counts = [
        int(message.split()[1])
        for message in caplog.messages
        if "HEADER_TIMEOUT_SECONDS" in message
    ]
    assert sum(counts) == 1


def head_of(
    size: int, start: bytes = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
) -> bytes:
    """A request line and headers of exactly `size` bytes, up to and with the blank line."""
    head = start + b"X-Pad: "
    return head + b"p" * (size - len(head) - 4) + b"\r\n\r\n"


async def test_a_head_one_byte_over_max_header_bytes_is_a_431_however_it_arrives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    post = b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\n"
    async with serving(tmp_path, monkeypatch, App(), max_header_bytes=1024) as port:
        alone = await exchange(port, head_of(1025))
        with_its_body = await exchange(port, head_of(1025, post) + b"12345")
        at_the_limit = await exchange(port, head_of(1024, post) + b"12345")

    assert [answer[:12] for answer in (alone, with_its_body, at_the_limit)] == [
        b"HTTP/1.1 431",
        b"HTTP/1.1 431",
        b"HTTP/1.1 200",
    ]
    assert parse(alone)[2]["error"] == parse(with_its_body)[2]["error"] == "RequestHeadersTooLarge"


SERVERS_VARIABLE: contextvars.ContextVar[str] = contextvars.ContextVar("servers", default="unset")


async def test_the_apps_context_follows_uvicorns_reset_contextvars(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[bool, str] = {}

    class ContextApp(App):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            seen[reset] = SERVERS_VARIABLE.get()
            await super().__call__(scope, receive, send)

    token = SERVERS_VARIABLE.set("set by the server's caller")
    try:
        for reset in (False, True):
            async with serving(
                tmp_path, monkeypatch, ContextApp(), reset_contextvars=reset
            ) as port:
                assert (await exchange(port, CLOSE)).startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        SERVERS_VARIABLE.reset(token)

    # As in uvicorn: the app's task copies the server's context unless told to start afresh.
    assert seen == {False: "set by the server's caller", True: "unset"}


async def test_connections_closed_in_one_sweep_give_back_their_places(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(
        tmp_path, monkeypatch, App(), max_connections=4, header_timeout_seconds=0.5
    ) as port:
        first = asyncio.create_task(exchange(port, b""))
        await asyncio.sleep(0.1)
        # Deadlines within a sweep's batch after the first one's: closed by the same sweep.
        silent = await asyncio.wait_for(
            asyncio.gather(first, *(exchange(port, b"") for _ in range(3))), WAIT_SECONDS
        )
        opened = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
        try:
            for _, writer in opened:
                writer.write(CLOSE)
            answers = [await asyncio.wait_for(reader.read(), WAIT_SECONDS) for reader, _ in opened]
        finally:
            for _, writer in opened:
                writer.close()

    assert silent == [b""] * 4
    assert [answer[:15] for answer in answers] == [b"HTTP/1.1 200 OK"] * 4
