"""Hardening, in process: secrets echoed by the upstream, and callers who leave early.

The same behaviours are exercised over real sockets in tests/e2e; these versions are fast,
exact about what happened upstream, and run without any subprocess.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import respx
from asgi_lifespan import LifespanManager
from fastapi import Request
from starlette.types import Message

from src.api.plumbing.disconnect import cancel_on_disconnect
from src.config import Settings
from src.services.base.exceptions import ClientDisconnectedError
from tests.helpers.app import Serve, read_log
from tests.helpers.asgi import http_scope
from tests.helpers.openrouter import API_KEY, DONE, GENERATE, chunk, error_body, sse_response
from tests.helpers.sse import event_names, parse_sse

pytestmark = pytest.mark.anyio


async def test_an_upstream_error_echoing_our_key_is_redacted_in_the_response_and_log(
    settings: Settings, serve: Serve, upstream: respx.MockRouter, retry_waits: list[float]
) -> None:
    echo = f"Bad request for key {API_KEY}; Authorization: Bearer {API_KEY}"
    upstream.post("/chat/completions").respond(400, json=error_body(400, echo))

    async with serve(settings) as client:
        response = await client.post("/generate", json=GENERATE)

    assert response.status_code == 400
    assert response.json()["detail"] == (
        "Upstream returned 400: Bad request for key [REDACTED]; Authorization: Bearer [REDACTED]"
    )
    assert API_KEY not in response.text
    log = read_log(settings)
    assert API_KEY not in log
    assert "Bad request for key [REDACTED]" in log


async def test_a_mid_stream_error_echoing_our_key_is_redacted_in_the_error_event(
    settings: Settings, serve: Serve, upstream: respx.MockRouter
) -> None:
    error = error_body(502, f"provider rejected key {API_KEY}")["error"]
    upstream.post("/chat/completions").mock(
        return_value=sse_response(chunk("The "), chunk("", error=error), DONE)
    )

    async with serve(settings) as client:
        response = await client.post("/generate?stream=true", json=GENERATE)

    assert response.status_code == 200
    events = parse_sse(response.text)
    assert event_names(events) == ["token", "error"]
    assert events[-1].data["detail"] == "Upstream stream failed: provider rejected key [REDACTED]"
    assert API_KEY not in response.text
    assert API_KEY not in read_log(settings)


class Caller:
    """A request whose `receive` says "disconnect" once the caller has left."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()
        self.request = Request({"type": "http", "headers": []}, receive=self._receive)

    async def _receive(self) -> Message:
        await self.gone.wait()
        return {"type": "http.disconnect"}


async def test_cancel_on_disconnect_returns_the_result_when_the_caller_stays() -> None:
    caller = Caller()

    async def work() -> str:
        await asyncio.sleep(0)
        return "answer"

    assert await cancel_on_disconnect(caller, work()) == "answer"  # type: ignore[arg-type]


async def test_cancel_on_disconnect_cancels_the_work_when_the_caller_leaves() -> None:
    caller = Caller()
    cancelled = asyncio.Event()

    async def work() -> str:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    asyncio.get_running_loop().call_later(0.01, caller.gone.set)
    with pytest.raises(ClientDisconnectedError):
        await asyncio.wait_for(cancel_on_disconnect(caller.request, work()), 5)
    assert cancelled.is_set()


async def test_cancel_on_disconnect_lets_a_server_cancellation_through() -> None:
    """A handler cancelled by the server (shutdown) ends cancelled, not as a client error."""
    caller = Caller()
    started = asyncio.Event()

    async def work() -> None:
        started.set()
        await asyncio.sleep(3600)

    handler = asyncio.create_task(cancel_on_disconnect(caller.request, work()))
    await started.wait()
    handler.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handler


@pytest.mark.parametrize("path", ["/generate", "/generate?stream=true"])
async def test_a_caller_leaving_before_the_answer_cancels_the_upstream_request(
    settings: Settings, serve: Serve, upstream: respx.MockRouter, path: str
) -> None:
    upstream_called = asyncio.Event()
    upstream_cancelled = asyncio.Event()

    async def never_answers(request: httpx.Request) -> httpx.Response:
        upstream_called.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            upstream_cancelled.set()
            raise
        raise AssertionError("unreachable")

    upstream.post("/chat/completions").mock(side_effect=never_answers)
    app = serve.app(settings)
    caller_left = asyncio.Event()
    sent: list[Message] = []
    body = json.dumps(GENERATE).encode()
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        await caller_left.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = http_scope("POST", path, {"content-type": "application/json", "host": "service.test"})
    async with LifespanManager(app) as manager:

        async def handle() -> None:
            await manager.app(scope, receive, send)  # the manager adds the lifespan state

        handler = asyncio.create_task(handle())
        await asyncio.wait_for(upstream_called.wait(), 10)
        caller_left.set()
        await asyncio.wait_for(handler, 10)
        # The upstream learns of it when our client drops the connection.
        await asyncio.wait_for(upstream_cancelled.wait(), 10)

    start = next(message for message in sent if message["type"] == "http.response.start")
    assert start["status"] == 499  # answered to no one, but logged as what it was
    assert "status_code=499 | ClientDisconnectedError" in read_log(settings)


@pytest.mark.parametrize("path", ["/generate", "/v1/chat/completions"])
async def test_a_caller_who_leaves_mid_body_is_a_disconnect_not_an_invalid_body(
    settings: Settings, serve: Serve, upstream: respx.MockRouter, path: str
) -> None:
    route = upstream.post("/chat/completions").mock(return_value=sse_response())
    messages: list[Message] = [
        {"type": "http.request", "body": b'{"model": "openai/gpt-4o", "pro', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope = http_scope("POST", path, {"host": "service.test", "content-type": "application/json"})
    async with LifespanManager(serve.app(settings)) as manager:
        await asyncio.wait_for(manager.app(scope, receive, send), 30)

    assert sent[0]["status"] == 499
    assert route.call_count == 0
    [line] = [line for line in read_log(settings).splitlines() if path in line]
    assert "status_code=499" in line and "ClientDisconnectedError" in line
