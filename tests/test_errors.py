from __future__ import annotations

import httpx
import pytest
import respx

from tests.conftest import completion_body

pytestmark = pytest.mark.anyio

GENERATE = {"model": "openai/gpt-4o", "prompt": "hi"}


@pytest.mark.parametrize(
    ("upstream_status", "expected_status"),
    [
        (400, 400),
        (401, 502),
        (402, 402),
        (403, 403),
        (404, 404),
        (408, 504),
        (429, 429),
        (500, 502),
        (502, 502),
        (503, 502),
        (504, 504),
    ],
)
async def test_upstream_status_maps_to_our_status(
    client: httpx.AsyncClient,
    upstream: respx.MockRouter,
    upstream_status: int,
    expected_status: int,
) -> None:
    upstream.post("/chat/completions").respond(
        upstream_status, json={"error": {"code": upstream_status, "message": "upstream says no"}}
    )

    response = await client.post("/generate", json=GENERATE)

    assert response.status_code == expected_status
    body = response.json()
    assert body["error"] == "UpstreamStatusError"
    assert body["request_id"] == response.headers["x-request-id"]
    assert body["detail"]


async def test_upstream_401_says_the_service_key_is_wrong(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").respond(401, json={"error": {"code": 401, "message": "x"}})

    response = await client.post("/generate", json=GENERATE)

    assert response.status_code == 502
    assert "OPENROUTER_API_KEY" in response.json()["detail"]


async def test_upstream_timeout_maps_to_504(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    route = upstream.post("/chat/completions").mock(side_effect=httpx.ReadTimeout("slow"))

    response = await client.post("/generate", json=GENERATE)

    assert response.status_code == 504
    assert response.json()["error"] == "UpstreamTimeoutError"
    assert route.call_count == 1  # a read timeout may still be billed: never repeated


async def test_upstream_connection_refused_maps_to_502_after_retries(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    route = upstream.post("/chat/completions").mock(side_effect=httpx.ConnectError("refused"))

    response = await client.post("/generate", json=GENERATE)

    assert response.status_code == 502
    assert response.json()["error"] == "UpstreamConnectionError"
    assert route.call_count == 3


async def test_upstream_invalid_json_maps_to_502(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").respond(200, content=b'{"choices": [')

    response = await client.post("/generate", json=GENERATE)

    assert response.status_code == 502
    assert response.json()["error"] == "UpstreamInvalidResponseError"


async def test_unknown_route_answers_json_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/nope")

    assert response.status_code == 404
    assert response.json()["error"] == "HTTPError"
    assert response.json()["request_id"] == response.headers["x-request-id"]


async def test_incoming_request_id_is_kept(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").respond(json=completion_body())

    response = await client.post(
        "/generate", json=GENERATE, headers={"X-Request-ID": "trace-42.abc"}
    )

    assert response.headers["x-request-id"] == "trace-42.abc"


async def test_unsafe_incoming_request_id_is_replaced(client: httpx.AsyncClient) -> None:
    response = await client.get("/health", headers={"X-Request-ID": "bad id\twith tab"})

    assert response.headers["x-request-id"] != "bad id\twith tab"
    assert len(response.headers["x-request-id"]) == 32
