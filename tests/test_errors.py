from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest
import respx

from src.api.errors.payload import error_answer
from src.services.base.error_status import status_for
from src.services.base.exceptions import (
    AuthenticationError,
    ClientDisconnectedError,
    CrossSiteRequestError,
    InternalServerError,
    InvalidHostError,
    InvalidInputError,
    LimitExceededError,
    NotFoundError,
    PayloadTooLargeError,
    RequestHeadersTooLarge,
    RequestTimeout,
    ServiceError,
    ServiceUnavailable,
    UnknownModelError,
    UpstreamConnectionError,
    UpstreamInvalidResponseError,
    UpstreamStatusError,
    UpstreamStreamError,
    UpstreamTimeoutError,
)
from tests.helpers.app import Serve, make_settings
from tests.helpers.openrouter import GENERATE, completion_body, error_body

pytestmark = pytest.mark.anyio


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
        upstream_status, json=error_body(upstream_status, "upstream says no")
    )

    response = await client.post("/generate", json=GENERATE)

    assert response.status_code == expected_status
    body = response.json()
    assert body["error"] == "UpstreamStatusError"
    assert body["request_id"] == response.headers["x-request-id"]
    if upstream_status == 401:  # our key, not the caller's: the message names the setting
        assert body["detail"] == "The upstream rejected the service's API key (OPENROUTER_API_KEY)."
    else:
        assert body["detail"] == f"Upstream returned {upstream_status}: upstream says no"


async def test_upstream_401_says_the_service_key_is_wrong(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").respond(401, json={"error": {"code": 401, "message": "x"}})

    response = await client.post("/generate", json=GENERATE)

    assert response.status_code == 502
    assert "OPENROUTER_API_KEY" in response.json()["detail"]


async def test_upstream_timeout_maps_to_504(
    tmp_path: Path, serve: Serve, upstream: respx.MockRouter, retry_waits: list[float]
) -> None:
    # The loopback upstream holds a timed-out request until our client gives up.
    route = upstream.post("/chat/completions").mock(side_effect=httpx.ReadTimeout("slow"))

    async with serve(make_settings(tmp_path, upstream_timeout_seconds=0.5)) as client:
        response = await client.post("/generate", json=GENERATE)

    assert response.status_code == 504
    assert response.json()["error"] == "UpstreamTimeoutError"
    assert "timed out" in response.json()["detail"]
    assert route.call_count == 1  # a read timeout may still be billed: never repeated
    assert retry_waits == []


async def test_upstream_closing_without_an_answer_maps_to_502_and_is_sent_once(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    # The loopback upstream reads the request, then closes unanswered: it may have run it.
    route = upstream.post("/chat/completions").mock(side_effect=httpx.ConnectError("refused"))

    response = await client.post("/generate", json=GENERATE)

    assert response.status_code == 502
    assert response.json()["error"] == "UpstreamConnectionError"
    assert "connection failed" in response.json()["detail"]
    assert "not sent again" in response.json()["detail"]
    assert route.call_count == 1  # never again once written, whatever RETRY_ATTEMPTS says


async def test_upstream_invalid_json_maps_to_502(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").respond(200, content=b'{"choices": [')

    response = await client.post("/generate", json=GENERATE)

    assert response.status_code == 502
    assert response.json()["error"] == "UpstreamInvalidResponseError"
    assert response.json()["detail"] == "Upstream completion is not valid JSON"


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


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (AuthenticationError("x"), 401),
        (PayloadTooLargeError("x"), 413),  # an InvalidInputError, with its own status
        (LimitExceededError("x"), 422),
        (InvalidInputError("x"), 422),
        (NotFoundError("x"), 404),
        (UnknownModelError("x"), 404),
        (ClientDisconnectedError("x"), 499),
        (UpstreamTimeoutError("x"), 504),
        (UpstreamConnectionError("x"), 502),
        (UpstreamInvalidResponseError("x"), 502),
        (UpstreamStreamError("x"), 502),
        *[(UpstreamStatusError(code, "x"), code) for code in (400, 402, 403, 404, 429)],
        (UpstreamStatusError(401, "x"), 502),  # our key is wrong, not the caller's
        *[(UpstreamStatusError(code, "x"), 504) for code in (408, 504)],
        *[(UpstreamStatusError(code, "x"), 502) for code in (405, 409, 413, 422, 500, 502, 503)],
        (CrossSiteRequestError("x"), 403),
        (InvalidHostError("x"), 400),
        (RequestHeadersTooLarge("x"), 431),
        (RequestTimeout("x"), 408),
        (ServiceUnavailable("x"), 503),
        (InternalServerError("x"), 500),
        (ServiceError("a new kind nobody mapped"), 500),
    ],
)
def test_every_service_error_has_its_status(error: ServiceError, status: int) -> None:
    assert status_for(error) == status


def test_a_refusal_before_the_app_has_the_same_shape_as_any_error_answer() -> None:
    status, headers, body = error_answer(ServiceUnavailable("busy"), "rid-1")

    assert status == 503
    assert orjson.loads(body) == {
        "detail": "busy",
        "error": "ServiceUnavailable",
        "request_id": "rid-1",
    }
    assert dict(headers) == {
        b"content-type": b"application/json",
        b"content-length": b"%d" % len(body),
        b"retry-after": b"1",
    }


async def test_a_wrong_method_is_a_json_405(client: httpx.AsyncClient) -> None:
    response = await client.get("/generate")

    assert response.status_code == 405
    assert response.json()["error"] == "HTTPError"
    assert response.json()["detail"] == "Method Not Allowed"
    assert response.json()["request_id"] == response.headers["x-request-id"]
