from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx

from src.config import Settings
from tests.conftest import completion_body, read_log, serve

pytestmark = pytest.mark.anyio

ANSWER = ["The ", "sky ", "is ", "blue."]


def chunk(content: str | None = None, finish: str | None = None, **extra: Any) -> bytes:
    body: dict[str, Any] = {"id": "gen-1", "object": "chat.completion.chunk", "model": "m/x"}
    body["choices"] = [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]
    body.update(extra)
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def sse_body(*parts: bytes) -> httpx.Response:
    return httpx.Response(
        200, content=b"".join(parts), headers={"content-type": "text/event-stream"}
    )


USAGE = {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
GOOD_STREAM = (
    b": OPENROUTER PROCESSING\n\n",
    *(chunk(piece) for piece in ANSWER[:2]),
    b": OPENROUTER PROCESSING\n\n",
    *(chunk(piece) for piece in ANSWER[2:]),
    chunk("", "stop"),
    b'data: {"id":"gen-1","object":"chat.completion.chunk","model":"m/x","choices":[],'
    + b'"usage":'
    + json.dumps(USAGE).encode()
    + b"}\n\n",
    b"data: [DONE]\n\n",
)


def parse_sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((lines["event"], json.loads(lines["data"])))
    return events


async def test_stream_sends_token_events_then_done(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    route = upstream.post("/chat/completions").mock(return_value=sse_body(*GOOD_STREAM))

    response = await client.post("/generate?stream=true", json={"model": "m/x", "prompt": "hi"})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    assert [name for name, _ in events] == ["token"] * 4 + ["done"]
    assert "".join(data["text"] for name, data in events if name == "token") == "".join(ANSWER)
    done = events[-1][1]
    assert done["tokens_used"] == 9
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
    upstream.post("/chat/completions").mock(return_value=sse_body(*GOOD_STREAM))

    response = await client.post("/generate", json={"model": "m/x", "prompt": "hi", "stream": True})

    assert [name for name, _ in parse_sse(response.text)][-1] == "done"


async def test_streamed_tokens_equal_the_plain_answer(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").mock(
        side_effect=[
            sse_body(*GOOD_STREAM),
            httpx.Response(200, json=completion_body("".join(ANSWER))),
        ]
    )

    streamed = await client.post("/generate?stream=true", json={"model": "m/x", "prompt": "hi"})
    plain = await client.post("/generate", json={"model": "m/x", "prompt": "hi"})

    tokens = "".join(d["text"] for n, d in parse_sse(streamed.text) if n == "token")
    assert tokens == plain.json()["text"]


async def test_mid_stream_error_becomes_an_error_event_and_ends_the_stream(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    error_chunk = chunk("", "error", error={"code": 502, "message": "provider died"})
    upstream.post("/chat/completions").mock(
        return_value=sse_body(chunk("The "), error_chunk, b"data: [DONE]\n\n")
    )

    response = await client.post("/generate?stream=true", json={"model": "m/x", "prompt": "hi"})

    assert response.status_code == 200
    events = parse_sse(response.text)
    assert [name for name, _ in events] == ["token", "error"]
    error = events[-1][1]
    assert error["error"] == "UpstreamStreamError"
    assert "provider died" in error["detail"]
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
    assert "not a valid model ID" in response.json()["detail"]
    assert route.call_count == 2  # the 503 before the first byte was retried


async def test_stream_that_is_not_json_ends_with_an_error_event(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").mock(
        return_value=sse_body(chunk("a "), b"data: {not json\n\n")
    )

    response = await client.post("/generate?stream=true", json={"model": "m/x", "prompt": "hi"})

    events = parse_sse(response.text)
    assert [name for name, _ in events] == ["token", "error"]
    assert events[-1][1]["error"] == "UpstreamInvalidResponseError"


async def test_streamed_request_is_logged_once_when_the_stream_ends(
    settings: Settings, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").mock(return_value=sse_body(*GOOD_STREAM))

    async with serve(settings) as service:
        await service.post("/generate?stream=true", json={"model": "m/x", "prompt": "hi"})

    lines = [line for line in read_log(settings).splitlines() if "POST /generate" in line]
    assert len(lines) == 1
    assert "OK | POST /generate | handler=generate" in lines[0] and "status_code=200" in lines[0]


async def test_connection_broken_mid_stream_ends_with_an_error_event(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    class BrokenStream(httpx.AsyncByteStream):
        async def __aiter__(self):  # type: ignore[no-untyped-def]
            yield chunk("The ")
            raise httpx.ReadError("connection reset by peer")

    upstream.post("/chat/completions").mock(
        return_value=httpx.Response(
            200, stream=BrokenStream(), headers={"content-type": "text/event-stream"}
        )
    )

    response = await client.post("/generate?stream=true", json={"model": "m/x", "prompt": "hi"})

    events = parse_sse(response.text)
    assert [name for name, _ in events] == ["token", "error"]
    assert events[-1][1]["error"] == "UpstreamConnectionError"
    assert events[-1][1]["status_code"] == 502
