"""The pre-auth limits past the head: a body that does not arrive in time, a connection closed to
make room while its body is awaited, an answer already under way, keep-alive deadlines, heads
measured exactly, and the counts the sweep reports (on uvicorn in this process, as in
tests/test_http_limits.py)."""

from __future__ import annotations

import asyncio
import logging
import re
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
    until,
)

pytestmark = pytest.mark.anyio

POST_HEAD = b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n"


class BodyApp(App):
    """`/read` reads the whole body, then answers its length; `/early` starts its answer
    before reading the body. What the app saw of each request is kept."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []
        self.reading = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] not in ("/read", "/early"):
            await super().__call__(scope, receive, send)
            return
        if scope["path"] == "/early":
            await send({"type": "http.response.start", "status": 200, "headers": []})
        self.reading.set()
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.seen.append("disconnect")
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.seen.append(f"body of {len(body)}")
        if scope["path"] == "/read":
            await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(len(body)).encode()})


async def test_a_body_not_finished_in_time_is_a_408_and_the_app_sees_the_client_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    app = BodyApp()
    async with serving(
        tmp_path,
        monkeypatch,
        app,
        body_timeout_seconds=0.5,
        header_timeout_seconds=30,
    ) as port:
        answer = await exchange(port, POST_HEAD + b"abc")
        await until(lambda: app.seen, "the app to see the client gone")

    status, headers, body = parse(answer)
    assert status == "HTTP/1.1 408 Request Timeout"
    assert headers["connection"] == "close"
    assert (body["error"], body["detail"]) == (
        "RequestTimeout",
        "The request body did not arrive within BODY_TIMEOUT_SECONDS=0.5 of its headers.",
    )
    assert app.seen == ["disconnect"]
    assert (
        "Closed 1 connections: no complete request body within BODY_TIMEOUT_SECONDS=0.5 of its "
        "headers" in caplog.messages
    )
    assert not any("REFUSED" in message for message in caplog.messages)  # counted, not logged


async def test_a_body_sent_in_time_reaches_the_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = BodyApp()
    async with serving(
        tmp_path,
        monkeypatch,
        app,
        body_timeout_seconds=5,
    ) as port:
        answer = await exchange(
            port, POST_HEAD.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n") + b"0123456789"
        )

    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert app.seen == ["body of 10"]


async def test_a_body_late_after_the_answer_began_closes_the_connection_without_a_408(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = BodyApp()
    async with serving(
        tmp_path,
        monkeypatch,
        app,
        body_timeout_seconds=0.5,
    ) as port:
        answer = await exchange(port, POST_HEAD.replace(b"/read", b"/early") + b"abc")

    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"408" not in answer and b"RequestTimeout" not in answer


async def test_after_an_answer_a_kept_alive_connection_has_the_header_timeout_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(
        tmp_path,
        monkeypatch,
        App(),
        header_timeout_seconds=0.5,
    ) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            first = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), WAIT_SECONDS)
            # Silent after its answer: closed at the header timeout, without an answer.
            rest = await asyncio.wait_for(reader.read(), WAIT_SECONDS)
        finally:
            writer.close()

    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    assert rest == b""


async def test_after_an_answer_a_next_head_not_finished_in_time_is_a_408(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # uvicorn's own keep-alive timeout ends with the first byte of the next request: from
    # there, only the header timeout bounds it.
    async with serving(tmp_path, monkeypatch, App(), header_timeout_seconds=0.5) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            first = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), WAIT_SECONDS)
            writer.write(b"GET / HTTP/1.1\r\n")
            rest = await asyncio.wait_for(reader.read(), WAIT_SECONDS)
        finally:
            writer.close()

    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    assert parse(rest)[0] == "HTTP/1.1 408 Request Timeout"


async def test_a_connection_past_max_connections_closes_the_one_waiting_longest_for_its_body(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    app = BodyApp()
    async with serving(
        tmp_path,
        monkeypatch,
        app,
        max_connections=2,
        header_timeout_seconds=30,
        body_timeout_seconds=30,
    ) as port:
        oldest, oldest_writer = await asyncio.open_connection("127.0.0.1", port)
        younger, younger_writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            oldest_writer.write(POST_HEAD + b"abc")
            await until(lambda: app.reading.is_set(), "the app to read the oldest body")
            app.reading.clear()
            younger_writer.write(POST_HEAD + b"abc")
            await until(lambda: app.reading.is_set(), "the app to read the younger body")
            # Both wait for their bodies; a third connection closes the oldest and is served.
            answer = await exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            closed = await asyncio.wait_for(oldest.read(), WAIT_SECONDS)
            younger_writer.write(b"0123456")
            served = await asyncio.wait_for(younger.readuntil(b"0\r\n\r\n"), WAIT_SECONDS)
        finally:
            oldest_writer.close()
            younger_writer.close()

    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")  # not a 503: the closed one's task ends
    assert closed == b""
    assert served.startswith(b"HTTP/1.1 200 OK\r\n")
    assert served.endswith(b"2\r\n10\r\n0\r\n\r\n")
    assert "disconnect" in app.seen
    assert (
        "Closed 1 connections still waiting for their headers or body, to make room for new ones: "
        "MAX_CONNECTIONS reached" in caplog.messages
    )


async def test_a_head_measured_exactly_is_let_through_when_its_read_also_carried_a_body(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One read of 1,500 bytes, of which the head is under 1,024: the body does not count.
    head = b"POST /read HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1000\r\n\r\n"
    app = BodyApp()
    async with serving(
        tmp_path,
        monkeypatch,
        app,
        max_header_bytes=1024,
    ) as port:
        answer = await exchange(port, head + b"b" * 1000)

    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert app.seen == ["body of 1000"]


async def test_a_head_too_large_in_one_read_with_its_body_is_a_431(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    head = (
        b"POST /read HTTP/1.1\r\nHost: x\r\nX-Pad: "
        + b"p" * 1100
        + b"\r\nContent-Length: 5\r\n\r\n"
    )
    app = BodyApp()
    async with serving(
        tmp_path,
        monkeypatch,
        app,
        max_header_bytes=1024,
    ) as port:
        answer = await exchange(port, head + b"12345")

    status, headers, body = parse(answer)
    assert status == "HTTP/1.1 431 Request Header Fields Too Large"
    assert "date" in headers and headers["server"] == "uvicorn"  # the server's own headers
    assert body["error"] == "RequestHeadersTooLarge"
    assert app.seen == []
    refused = [message for message in caplog.messages if message.startswith("REFUSED")]
    assert len(refused) == 1
    assert re.fullmatch(
        r"REFUSED \| 127\.0\.0\.1:\d+ \| status_code=431 \| The request line and headers are "
        r"larger than MAX_HEADER_BYTES=1024 bytes\.",
        refused[0],
    )


async def test_what_a_refused_client_still_sends_does_not_spoil_its_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(
        tmp_path,
        monkeypatch,
        App(),
        max_header_bytes=1024,
    ) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2000)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_SECONDS)
            writer.write(b"b" * 5000 + b"\r\n\r\n")  # read and dropped while it lingers
            rest = await asyncio.wait_for(reader.read(), WAIT_SECONDS)
        finally:
            writer.close()

    status, _, body = parse(head + rest)
    assert status == "HTTP/1.1 431 Request Header Fields Too Large"
    assert body["error"] == "RequestHeadersTooLarge"


async def test_timeouts_of_one_sweep_are_reported_as_one_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(
        tmp_path,
        monkeypatch,
        App(),
        header_timeout_seconds=0.5,
    ) as port:
        answers = await asyncio.gather(
            *(exchange(port, b"GET / HTTP/1.1\r\n") for _ in range(3)),
            exchange(port, b""),
        )
        # The server still serves, and still times out, after a sweep that left nothing to wait.
        after = await exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        late = await exchange(port, b"GET / HTTP/1.1\r\n")

    assert [parse(answer)[0] for answer in answers[:3]] == ["HTTP/1.1 408 Request Timeout"] * 3
    assert answers[3] == b""
    assert after.startswith(b"HTTP/1.1 200 OK\r\n")
    assert parse(late)[0] == "HTTP/1.1 408 Request Timeout"
    assert not any(message.startswith("REFUSED") for message in caplog.messages)
    counts = [
        message
        for message in caplog.messages
        if message.startswith("Closed") and "HEADER_TIMEOUT_SECONDS" in message
    ]
    assert sum(int(message.split()[1]) for message in counts) == 5
    assert len(counts) < 5


async def test_a_connection_still_waiting_after_a_sweep_is_timed_out_by_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(tmp_path, monkeypatch, App(), header_timeout_seconds=0.5) as port:
        first = asyncio.create_task(exchange(port, b"GET / HTTP/1.1\r\n"))
        await asyncio.sleep(0.3)
        second = asyncio.create_task(exchange(port, b"GET / HTTP/1.1\r\n"))
        answers = await asyncio.wait_for(asyncio.gather(first, second), WAIT_SECONDS)

    assert [parse(answer)[0] for answer in answers] == ["HTTP/1.1 408 Request Timeout"] * 2


async def test_making_room_twice_within_a_second_is_reported_by_the_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(
        tmp_path, monkeypatch, App(), max_connections=2, header_timeout_seconds=30
    ) as port:
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        try:
            # Each newcomer closes the oldest idle connection; the second within the second.
            newcomers = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
            closed = [await asyncio.wait_for(reader.read(), WAIT_SECONDS) for reader, _ in idle]
            newcomers[1][1].write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            served = await asyncio.wait_for(newcomers[1][0].read(), WAIT_SECONDS)

            def made_room() -> int:
                return sum(
                    int(message.split()[1])
                    for message in caplog.messages
                    if "to make room for new ones" in message
                )

            await until(lambda: made_room() == 2, "both closes to be reported")
        finally:
            for _, writer in [*idle, *newcomers]:
                writer.close()

    assert closed == [b"", b""]
    assert served.startswith(b"HTTP/1.1 200 OK\r\n")


@pytest.fixture(autouse=True)
def warnings_captured(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.WARNING, logger=http_limits.__name__)
    yield
    assert errors_logged(caplog) == []


async def test_a_head_sent_in_small_pieces_is_counted_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(tmp_path, monkeypatch, App(), max_header_bytes=1024) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
            for _ in range(30):  # 30 headers of 50 bytes, each its own write
                writer.write(b"X-Piece: " + b"p" * 39 + b"\r\n")
                await writer.drain()
                await asyncio.sleep(0.01)
                if writer.is_closing() or reader.at_eof():
                    break
            answer = await asyncio.wait_for(reader.read(), WAIT_SECONDS)
        except ConnectionResetError:
            answer = b""
        finally:
            writer.close()

    assert answer.startswith(b"HTTP/1.1 431 ")


async def test_a_body_larger_than_max_header_bytes_is_not_a_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = BodyApp()
    head = b"POST /read HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5000\r\n\r\n"
    async with serving(tmp_path, monkeypatch, app, max_header_bytes=1024) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(head)
            await writer.drain()
            await until(lambda: app.reading.is_set(), "the app to wait for the body")
            writer.write(b"b" * 5000)
            answer = await asyncio.wait_for(reader.read(), WAIT_SECONDS)
        finally:
            writer.close()

    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert app.seen == ["body of 5000"]


async def test_pipelined_requests_are_each_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    async with serving(tmp_path, monkeypatch, App()) as port:
        answer = await exchange(
            port, request + request + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )

    assert answer.count(b"HTTP/1.1 200 OK\r\n") == 3


async def test_a_pipelined_body_not_finished_in_time_once_its_turn_came_is_a_408(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body sent behind another request waits for its turn; from then on it is held to
    BODY_TIMEOUT_SECONDS like any other, or one byte now and then would keep the connection
    (and its place under MAX_CONNECTIONS) forever."""
    app = BodyApp()
    async with serving(
        tmp_path,
        monkeypatch,
        app,
        body_timeout_seconds=0.5,
        header_timeout_seconds=30,
    ) as port:
        try:
            answer = await exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + POST_HEAD + b"abc")
        except TimeoutError:
            answer = b"(no answer, the connection still open)"
        await until(lambda: app.seen, "the app to see the client gone")

    first, _, second = answer.partition(b"HTTP/1.1 408")
    assert first.startswith(b"HTTP/1.1 200 OK\r\n"), answer
    status, headers, body = parse(b"HTTP/1.1 408" + second)
    assert status == "HTTP/1.1 408 Request Timeout"
    assert headers["connection"] == "close"
    assert body["detail"] == (
        "The request body did not arrive within BODY_TIMEOUT_SECONDS=0.5 of its headers."
    )
    assert app.seen == ["disconnect"]


async def test_a_pipelined_request_with_its_body_whole_is_not_timed_out_while_the_app_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = App()
    get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    held = b"GET /hold HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    async with serving(
        tmp_path, monkeypatch, app, body_timeout_seconds=0.3, header_timeout_seconds=30
    ) as port:
        answering = asyncio.create_task(exchange(port, get + held))
        await asyncio.wait_for(app.held.wait(), WAIT_SECONDS)
        await asyncio.sleep(1.0)  # past BODY_TIMEOUT_SECONDS: nothing of it is awaited
        app.release.set()
        answer = await answering

    assert answer.count(b"HTTP/1.1 200 OK\r\n") == 2, answer
    assert b"408" not in answer


async def test_a_request_while_a_gone_clients_request_still_runs_is_a_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = App()  # /hold ignores its client leaving, and runs on until released
    async with serving(tmp_path, monkeypatch, app, max_connections=1) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.wait_for(app.held.wait(), WAIT_SECONDS)
        writer.close()
        await asyncio.wait_for(reader.read(), WAIT_SECONDS)
        await asyncio.sleep(0.2)  # the server has seen the connection go
        answer = await exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")

    status, _, body = parse(answer)
    assert status == "HTTP/1.1 503 Service Unavailable"
    assert body["error"] == "ServiceUnavailable"


async def test_an_answer_given_before_the_body_ended_is_not_followed_by_a_408(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(
        tmp_path, monkeypatch, App(), body_timeout_seconds=0.3, header_timeout_seconds=30
    ) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            # App answers "/" at once, without reading the body it was promised.
            writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
            answer = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), WAIT_SECONDS)
            # Past the body timeout, nothing more comes: the answer ended the wait for the body.
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.read(1), 1.0)
        finally:
            writer.close()

    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")


async def test_a_head_a_little_over_the_limit_with_its_body_in_one_read_is_a_431(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = b"POST /read HTTP/1.1\r\nHost: x\r\nX-A: a\r\nX-B: b\r\nContent-Length: 5\r\nX-Pad: "
    head = start + b"p" * (1030 - len(start) - 4) + b"\r\n\r\n"
    assert len(head) == 1030
    app = BodyApp()
    async with serving(tmp_path, monkeypatch, app, max_header_bytes=1024) as port:
        answer = await exchange(port, head + b"12345")

    assert parse(answer)[0] == "HTTP/1.1 431 Request Header Fields Too Large"
    assert app.seen == []


async def test_closes_to_make_room_within_a_second_are_reported_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(
        tmp_path, monkeypatch, App(), max_connections=1, header_timeout_seconds=30
    ) as port:
        opened = [await asyncio.open_connection("127.0.0.1", port)]
        try:
            for _ in range(3):  # each newcomer closes the one before it
                opened.append(await asyncio.open_connection("127.0.0.1", port))
                await asyncio.wait_for(opened[-2][0].read(), WAIT_SECONDS)

            def reported() -> list[int]:
                return [
                    int(message.split()[1])
                    for message in caplog.messages
                    if "to make room for new ones" in message
                ]

            await until(lambda: sum(reported()) == 3, "the three closes to be reported")
        finally:
            for _, writer in opened:
                writer.close()

    # The first at once; the next two, within the second, by the sweep in one line.
    assert reported() == [1, 2]


async def test_a_request_the_app_answers_after_the_body_timeout_is_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = App()  # /hold answers once released, whatever the body
    async with serving(tmp_path, monkeypatch, app, body_timeout_seconds=0.3) as port:
        whole = asyncio.create_task(
            exchange(
                port,
                b"POST /hold HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Content-Length: 3\r\n\r\nabc",
            )
        )
        await asyncio.wait_for(app.held.wait(), WAIT_SECONDS)
        await asyncio.sleep(1.0)  # the whole body came: the app may take its time
        app.release.set()
        answer = await asyncio.wait_for(whole, WAIT_SECONDS)

    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")


async def test_a_body_its_client_gave_up_on_is_not_counted_as_timed_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    app = BodyApp()
    async with serving(
        tmp_path, monkeypatch, app, body_timeout_seconds=0.5, header_timeout_seconds=30
    ) as port:
        _, gone = await asyncio.open_connection("127.0.0.1", port)
        gone.write(POST_HEAD + b"abc")
        await until(lambda: app.reading.is_set(), "the app to wait for the body")
        gone.close()
        await gone.wait_closed()
        await until(lambda: app.seen, "the app to see the client gone")
        answer = await exchange(port, POST_HEAD + b"abc")

    assert parse(answer)[0] == "HTTP/1.1 408 Request Timeout"
    counts = [
        int(message.split()[1]) for message in caplog.messages if "BODY_TIMEOUT_SECONDS" in message
    ]
    assert sum(counts) == 1


async def test_at_a_body_timeout_the_app_sees_the_client_gone_before_the_connection_closes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The refused connection lingers far longer than the wait for the app below.
    monkeypatch.setattr(http_limits, "LINGER_SECONDS", 3 * WAIT_SECONDS)
    app = BodyApp()
    async with serving(
        tmp_path, monkeypatch, app, body_timeout_seconds=0.3, header_timeout_seconds=30
    ) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(POST_HEAD + b"abc")
            answer = await asyncio.wait_for(reader.read(), WAIT_SECONDS)  # up to the answer's end
            await until(lambda: app.seen, "the app to see the client gone")
        finally:
            writer.close()

    assert parse(answer)[0] == "HTTP/1.1 408 Request Timeout"
    assert app.seen == ["disconnect"]


class ParkApp(App):
    """`/park` holds each request until its own release, ignoring its body and its client
    leaving, as a slow upstream call would."""

    def __init__(self) -> None:
        super().__init__()
        self.parked: list[asyncio.Event] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] != "/park":
            await super().__call__(scope, receive, send)
            return
        release = asyncio.Event()
        self.parked.append(release)
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"parked"})


async def test_a_request_closed_to_make_room_stops_counting_only_until_it_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = ParkApp()
    get = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    async with serving(
        tmp_path,
        monkeypatch,
        app,
        max_connections=1,
        header_timeout_seconds=30,
        body_timeout_seconds=30,
    ) as port:
        # Waiting for its body while its request runs: the newcomer closes it.
        parked, parked_writer = await asyncio.open_connection("127.0.0.1", port)
        parked_writer.write(b"POST /park HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        await until(lambda: len(app.parked) == 1, "the first request to run")
        newcomer, newcomer_writer = await asyncio.open_connection("127.0.0.1", port)
        closed = await asyncio.wait_for(parked.read(), WAIT_SECONDS)
        parked_writer.close()
        # Its request still runs, yet no longer counts: the newcomer is served.
        newcomer_writer.write(get)
        served = await asyncio.wait_for(newcomer.read(), WAIT_SECONDS)
        newcomer_writer.close()
        app.parked[0].set()
        # Once it has ended, a request whose client left counts until it ends, as usual.
        _, gone = await asyncio.open_connection("127.0.0.1", port)
        gone.write(b"GET /park HTTP/1.1\r\nHost: x\r\n\r\n")
        await until(lambda: len(app.parked) == 2, "the second request to run")
        gone.close()
        await gone.wait_closed()
        await asyncio.sleep(0.2)  # the server has seen the connection go
        refused = await exchange(port, get)
        app.parked[1].set()

    assert closed == b""
    assert served.startswith(b"HTTP/1.1 200 OK\r\n")
    assert parse(refused)[0] == "HTTP/1.1 503 Service Unavailable"


async def test_timeouts_a_moment_apart_are_swept_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(tmp_path, monkeypatch, App(), header_timeout_seconds=0.5) as port:
        late = []
        for _ in range(10):  # deadlines 20 ms apart, all within a sweep's batch of each other
            late.append(asyncio.create_task(exchange(port, b"GET / HTTP/1.1\r\n")))
            await asyncio.sleep(0.02)
        answers = await asyncio.wait_for(asyncio.gather(*late), WAIT_SECONDS)

    assert [parse(answer)[0] for answer in answers] == ["HTTP/1.1 408 Request Timeout"] * 10
    counts = [
        int(message.split()[1])
        for message in caplog.messages
        if "HEADER_TIMEOUT_SECONDS" in message
    ]
    assert sum(counts) == 10
    assert len(counts) <= 5  # a line per batch, not per connection


async def test_closes_to_make_room_do_not_postpone_a_body_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = BodyApp()
    async with serving(
        tmp_path,
        monkeypatch,
        app,
        max_connections=2,
        body_timeout_seconds=0.5,
        header_timeout_seconds=30,
    ) as port:
        late = asyncio.create_task(exchange(port, POST_HEAD + b"abc"))
        await until(lambda: app.reading.is_set(), "the app to wait for the body")
        opened = [await asyncio.open_connection("127.0.0.1", port)]
        try:
            # Each newcomer closes the idle one before it, for as long as the body is awaited.
            async with asyncio.timeout(WAIT_SECONDS):
                while not late.done():
                    opened.append(await asyncio.open_connection("127.0.0.1", port))
                    await opened[-2][0].read()
                    await asyncio.sleep(0.05)
        finally:
            for _, writer in opened:
                writer.close()
        answer = await late

    assert parse(answer)[0] == "HTTP/1.1 408 Request Timeout"
