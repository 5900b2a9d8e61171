from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
import respx

from src.config import Settings
from tests.helpers.app import Serve, read_log
from tests.helpers.openrouter import (
    DONE,
    KEEPALIVE,
    USAGE,
    chunk,
    completion_body,
    sse_response,
    usage_chunk,
)
from tests.helpers.sse import event_names, parse_sse, streamed_text

pytestmark = pytest.mark.anyio

ANSWER = ["The ", "sky ", "is ", "blue."]
GOOD_STREAM = (
    KEEPALIVE,
    *(chunk(piece) for piece in ANSWER[:2]),
    KEEPALIVE,
    *(chunk(piece) for piece in ANSWER[2:]),
    chunk("", "stop"),
    usage_chunk(),
    DONE,
)


async def test_stream_sends_token_events_then_done(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    route = upstream.post("/chat/completions").mock(return_value=sse_response(*GOOD_STREAM))

    response = await client.post("/generate?stream=true", json={"model": "m/x", "prompt": "hi"})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    assert event_names(events) == ["token"] * 4 + ["done"]
    assert streamed_text(events) == "".join(ANSWER)
    done = events[-1].data
    assert done["tokens_used"] == USAGE["total_tokens"]
    assert done["prompt_tokens"] == 5 and done["completion_tokens"] == 4
    assert done["finish_reason"] == "stop"
    assert done["model"] == "m/x"
    assert 0 <= done["ttft_seconds"] <= done["latency_seconds"]
    sent = json.loads(route.calls.last.request.content)
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}


async def test_stream_flag_in_the_body_works_like_the_query(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").mock(return_value=sse_response(*GOOD_STREAM))

    response = await client.post("/generate", json={"model": "m/x", "prompt": "hi", "stream": True})

    assert event_names(parse_sse(response.text))[-1] == "done"


async def test_streamed_tokens_equal_the_plain_answer(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").mock(
        side_effect=[
            sse_response(*GOOD_STREAM),
            httpx.Response(200, json=completion_body("".join(ANSWER))),
        ]
    )

    streamed = await client.post("/generate?stream=true", json={"model": "m/x", "prompt": "hi"})
    plain = await client.post("/generate", json={"model": "m/x", "prompt": "hi"})

    assert streamed_text(parse_sse(streamed.text)) == plain.json()["text"]


async def test_mid_stream_error_becomes_an_error_event_and_ends_the_stream(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    error_chunk = chunk("", "error", error={"code": 502, "message": "provider died"})
    upstream.post("/chat/completions").mock(
        return_value=sse_response(chunk("The "), error_chunk, DONE)
    )

    response = await client.post("/generate?stream=true", json={"model": "m/x", "prompt": "hi"})

    assert response.status_code == 200
    events = parse_sse(response.text)
    assert event_names(events) == ["token", "error"]
    error = events[-1].data
    assert error["error"] == "UpstreamStreamError"
    assert error["detail"] == "Upstream stream failed: provider died"
    assert error["status_code"] == 502
    assert error["request_id"] == response.headers["x-request-id"]


async def test_error_before_the_first_byte_is_a_plain_json_error(
    client: httpx.AsyncClient, upstream: respx.MockRouter, retry_waits: list[float]
) -> None:
    route = upstream.post("/chat/completions").mock(
        side_effect=[
            httpx.Response(503, json={"error": {"message": "busy"}}),
            httpx.Response(400, json={"error": {"message": "m/x is not a valid model ID"}}),
        ]
    )

    response = await client.post("/generate?stream=true", json={"model": "m/x", "prompt": "hi"})

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == "UpstreamStatusError"
    assert response.json()["detail"] == "Upstream returned 400: m/x is not a valid model ID"
    assert route.call_count == 2  # the 503 before the first byte was retried
    assert len(retry_waits) == 1


async def test_stream_that_is_not_json_ends_with_an_error_event(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").mock(
        return_value=sse_response(chunk("a "), b"data: {not json\n\n")
    )

    response = await client.post("/generate?stream=true", json={"model": "m/x", "prompt": "hi"})

    events = parse_sse(response.text)
    assert event_names(events) == ["token", "error"]
    assert events[-1].data["error"] == "UpstreamInvalidResponseError"
    assert events[-1].data["detail"] == "Upstream stream chunk is not JSON"
    assert events[-1].data["status_code"] == 502


async def test_streamed_request_is_logged_once_when_the_stream_ends(
    settings: Settings, serve: Serve, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").mock(return_value=sse_response(*GOOD_STREAM))

    async with serve(settings) as service:
        await service.post("/generate?stream=true", json={"model": "m/x", "prompt": "hi"})

    lines = [line for line in read_log(settings).splitlines() if "POST /generate" in line]
    assert len(lines) == 1
    assert "OK | POST /generate | handler=generate" in lines[0] and "status_code=200" in lines[0]


async def test_connection_broken_mid_stream_ends_with_an_error_event(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    class BrokenStream(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield chunk("The ")
            raise httpx.ReadError("connection reset by peer")  # the upstream drops it here

    route = upstream.post("/chat/completions").mock(
        return_value=httpx.Response(
            200, stream=BrokenStream(), headers={"content-type": "text/event-stream"}
        )
    )

    response = await client.post("/generate?stream=true", json={"model": "m/x", "prompt": "hi"})

    events = parse_sse(response.text)
    assert event_names(events) == ["token", "error"]
    assert events[-1].data["error"] == "UpstreamConnectionError"
    assert "broke mid-answer" in events[-1].data["detail"]
    assert events[-1].data["status_code"] == 502
    assert route.call_count == 1  # after the first byte a stream is never sent again
