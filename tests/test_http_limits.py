"""The limits before a request reaches the app, on uvicorn in this process (the end-to-end
tests in tests/e2e/test_preauth_limits.py attack a real server process): what a client is
answered, byte for byte where it matters."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.helpers.limits import WAIT_SECONDS, App, exchange, parse, serving

pytestmark = pytest.mark.anyio


async def test_a_head_over_max_header_bytes_is_a_431_in_our_error_shape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(tmp_path, monkeypatch, App(), max_header_bytes=1024) as port:
        answer = await exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2000)

    status, headers, body = parse(answer)
    assert status == "HTTP/1.1 431 Request Header Fields Too Large"
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
        held = asyncio.create_task(exchange(port, b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n"))
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
