from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
import respx

from tests.helpers.openrouter import API_KEY, UPSTREAM, completion_body

# The mocked upstream takes this long to answer, so the reported latency has a floor.
UPSTREAM_SECONDS = 0.05

pytestmark = pytest.mark.anyio


async def test_generate_returns_text_usage_and_latency(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    async def slow(_: httpx.Request) -> httpx.Response:
        await asyncio.sleep(UPSTREAM_SECONDS)
        return httpx.Response(200, json=completion_body())

    upstream.post("/chat/completions").mock(side_effect=slow)

    started = time.perf_counter()
    response = await client.post(
        "/generate", json={"model": "openai/gpt-4o", "prompt": "Why is the sky blue?"}
    )
    elapsed = time.perf_counter() - started

    assert response.status_code == 200
    body = response.json()
    assert body["text"] == "The sky is blue because of Rayleigh scattering."
    assert body["tokens_used"] == 21
    assert body["prompt_tokens"] == 12
    assert body["completion_tokens"] == 9
    assert body["model"] == "openai/gpt-4o"
    assert body["finish_reason"] == "stop"
    # The upstream round trip: at least the upstream's own time, at most the whole call's.
    # The upstream's own delay (its timer may fire a millisecond early), at most the call.
    assert UPSTREAM_SECONDS * 0.99 <= body["latency_seconds"] <= elapsed


async def test_generate_sends_a_chat_completion_with_the_key(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    route = upstream.post("/chat/completions").respond(json=completion_body())

    await client.post("/generate", json={"model": "openai/gpt-4o", "prompt": "hi"})

    sent = route.calls.last.request
    assert sent.url == f"{UPSTREAM}/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert json.loads(sent.content) == {
        "model": "openai/gpt-4o",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 512,
    }


async def test_generate_forwards_sampling_parameters_only_when_given(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    route = upstream.post("/chat/completions").respond(json=completion_body())

    await client.post(
        "/generate",
        json={"model": "m/x", "prompt": "hi", "max_tokens": 7, "temperature": 0.0, "top_p": 0.5},
    )

    sent = json.loads(route.calls.last.request.content)
    assert sent["max_tokens"] == 7
    assert sent["temperature"] == 0.0
    assert sent["top_p"] == 0.5


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "hi"}, "model"),
        ({"model": "m/x"}, "prompt"),
        ({"model": "m/x", "prompt": ""}, "prompt"),
        ({"model": "m/x", "prompt": "   \n"}, "prompt"),
        ({"model": "", "prompt": "hi"}, "model"),
        ({"model": "m/x", "prompt": "hi", "max_tokens": 0}, "max_tokens"),
        ({"model": "m/x", "prompt": "hi", "max_tokens": "many"}, "max_tokens"),
        ({"model": "m/x", "prompt": "hi", "temperature": 2.5}, "temperature"),
        ({"model": "m/x", "prompt": "hi", "temperature": -0.1}, "temperature"),
        ({"model": "m/x", "prompt": "hi", "top_p": 1.5}, "top_p"),
        ({"model": "m/x", "prompt": "hi", "unknown": 1}, "unknown"),
    ],
)
async def test_generate_rejects_bad_bodies_with_422_naming_the_field(
    client: httpx.AsyncClient, upstream: respx.MockRouter, body: dict[str, Any], field: str
) -> None:
    route = upstream.post("/chat/completions").respond(json=completion_body())

    response = await client.post("/generate", json=body)

    assert response.status_code == 422
    assert field in {str(part) for error in response.json()["detail"] for part in error["loc"]}
    assert route.call_count == 0


async def test_generate_rejects_a_non_json_body(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/generate", content=b"not json", headers={"content-type": "application/json"}
    )

    assert response.status_code == 422


async def test_generate_without_usage_reports_zero_tokens(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    body = completion_body()
    del body["usage"]
    upstream.post("/chat/completions").respond(json=body)

    response = await client.post("/generate", json={"model": "openai/gpt-4o", "prompt": "hi"})

    assert response.status_code == 200
    assert response.json()["tokens_used"] == 0


async def test_generate_maps_an_error_object_in_a_200_answer_to_502(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").respond(
        json={"error": {"code": 502, "message": "provider crashed"}, "choices": []}
    )

    response = await client.post("/generate", json={"model": "openai/gpt-4o", "prompt": "hi"})

    assert response.status_code == 502
    assert "provider crashed" in response.json()["detail"]


async def test_upstream_cookies_never_reach_the_next_callers_request(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    route = upstream.post("/chat/completions").mock(
        side_effect=[
            httpx.Response(200, json=completion_body(), headers={"set-cookie": "session=alice"}),
            httpx.Response(200, json=completion_body()),
        ]
    )

    await client.post("/generate", json={"model": "m/x", "prompt": "from alice"})
    await client.post("/generate", json={"model": "m/x", "prompt": "from bob"})

    assert "cookie" not in route.calls[1].request.headers
