"""The OpenAI-compatible face in process: requests relayed as sent, answers relayed as received,
errors in OpenAI's shape with the service's own statuses, and the same retries, logs and keys.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from pydantic import SecretStr

from src.config import Settings
from tests.helpers.app import Serve, make_settings, read_log
from tests.helpers.openrouter import (
    API_KEY,
    DONE,
    GPT,
    KEEPALIVE,
    MODELS_BODY,
    chunk,
    completion_body,
    error_body,
    model_entry,
    sse_response,
    usage_chunk,
)

pytestmark = pytest.mark.anyio

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Why is the sky blue?"}]
STREAM_EVENTS = (
    KEEPALIVE,
    chunk("The ", model=GPT),
    KEEPALIVE,
    chunk("sky.", model=GPT),
    chunk("", "stop", model=GPT),
    usage_chunk(model=GPT),
    DONE,
)


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": GPT, "messages": MESSAGES, **extra}


def data_lines(text: str) -> list[str]:
    """The data of each event of a stream, after checking it holds nothing but `data:` lines."""
    assert text.endswith("\n\n"), text[-50:]
    events = []
    for event in text[:-2].split("\n\n"):
        lines = event.split("\n")
        assert all(line.startswith("data: ") for line in lines), f"not only data: {event!r}"
        events.append("\n".join(line[len("data: ") :] for line in lines))
    return events


def assert_openai_error(
    response: httpx.Response, status: int, error_type: str, code: str | None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"]
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == error_type
    assert error["code"] == code
    assert error["message"].strip()
    assert "Traceback" not in response.text
    return error


# --- plain ---------------------------------------------------------------------------------------


async def test_a_completion_is_relayed_byte_for_byte_with_the_upstreams_own_fields(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    answer = completion_body(model=GPT)
    answer["provider"] = "OpenAI"
    answer["usage"]["cost"] = 0.000042
    raw = json.dumps(answer, indent=1).encode()
    upstream.post("/chat/completions").respond(200, content=raw)

    response = await client.post(CHAT, json=chat())

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"]
    assert response.content == raw
    assert response.json()["usage"]["cost"] == 0.000042


async def test_the_request_reaches_the_upstream_as_sent_with_the_services_key(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    route = upstream.post("/chat/completions").respond(json=completion_body())
    sent = json.dumps(
        chat(
            max_tokens=7,
            temperature=0.2,
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
            response_format={"type": "json_object"},
            provider={"order": ["OpenAI"]},
        )
    ).encode()

    response = await client.post(
        CHAT, content=sent, headers={"authorization": "Bearer caller-token"}
    )

    assert response.status_code == 200
    upstream_request = route.calls.last.request
    assert upstream_request.content == sent
    assert upstream_request.headers["authorization"] == f"Bearer {API_KEY}"


async def test_a_rate_limit_is_retried_then_relayed(
    client: httpx.AsyncClient, upstream: respx.MockRouter, retry_waits: list[float]
) -> None:
    route = upstream.post("/chat/completions").mock(
        side_effect=[
            httpx.Response(429, headers={"retry-after": "2"}, json=error_body(429, "slow down")),
            httpx.Response(200, json=completion_body()),
        ]
    )

    response = await client.post(CHAT, json=chat())

    assert response.status_code == 200
    assert route.call_count == 2
    assert retry_waits == [2.0]


@pytest.mark.parametrize(
    ("upstream_status", "status", "error_type"),
    [
        (400, 400, "invalid_request_error"),
        (401, 502, "server_error"),
        (402, 402, "insufficient_quota"),
        (403, 403, "permission_error"),
        (404, 404, "not_found_error"),
        (408, 504, "server_error"),
        (429, 429, "rate_limit_error"),
        (500, 502, "server_error"),
        (503, 502, "server_error"),
        (504, 504, "server_error"),
    ],
)
async def test_upstream_statuses_map_as_for_generate_in_openais_shape(
    client: httpx.AsyncClient,
    upstream: respx.MockRouter,
    upstream_status: int,
    status: int,
    error_type: str,
) -> None:
    # The model is listed: a 400 is then the upstream's refusal, not an unknown model.
    upstream.get("/models").respond(json=MODELS_BODY)
    upstream.post("/chat/completions").respond(
        upstream_status, json=error_body(upstream_status, "upstream says no")
    )

    plain = await client.post(CHAT, json=chat())
    streamed = await client.post(CHAT, json=chat(stream=True))

    for response in (plain, streamed):
        error = assert_openai_error(response, status, error_type, "UpstreamStatusError")
        if upstream_status == 401:
            assert "OPENROUTER_API_KEY" in error["message"]
        else:
            assert "upstream says no" in error["message"]
        if status == 429:
            assert response.headers["retry-after"] == "1"


async def test_an_unknown_model_is_404_not_found(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.get("/models").respond(json=MODELS_BODY)
    upstream.post("/chat/completions").respond(
        400, json=error_body(400, "acme/nope is not a valid model ID")
    )

    plain = await client.post(CHAT, json=chat(model="acme/nope"))
    streamed = await client.post(CHAT, json=chat(model="acme/nope", stream=True))

    for response in (plain, streamed):
        error = assert_openai_error(response, 404, "not_found_error", "UnknownModelError")
        assert "acme/nope" in error["message"]


async def test_a_refusal_stands_when_the_model_list_cannot_be_had(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.get("/models").respond(403, json=error_body(403, "no listing"))
    upstream.post("/chat/completions").respond(400, json=error_body(400, "bad temperature"))

    response = await client.post(CHAT, json=chat(temperature=9))

    error = assert_openai_error(response, 400, "invalid_request_error", "UpstreamStatusError")
    assert "bad temperature" in error["message"]


async def test_an_error_object_in_a_200_answer_is_a_502(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").respond(200, json=error_body(502, "provider fell over"))

    response = await client.post(CHAT, json=chat())

    error = assert_openai_error(response, 502, "server_error", "UpstreamStreamError")
    assert "provider fell over" in error["message"]


async def test_an_answer_that_is_not_json_is_a_502(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").respond(200, content=b"<html>oops</html>")

    response = await client.post(CHAT, json=chat())

    assert_openai_error(response, 502, "server_error", "UpstreamInvalidResponseError")


# --- requests we refuse ----------------------------------------------------------------------


# A request valid in every field but `stream` ("yes" would pass: pydantic reads it as true).
STREAM_MAYBE = (
    b'{"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}], '
    b'"stream": "maybe"}'
)


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "model", "missing"),
        (b'{"model": "openai/gpt-4o"}', "messages", "missing"),
        (b'{"model": "openai/gpt-4o", "messages": []}', "messages", "too_short"),
        (
            b'{"model": "openai/gpt-4o", "messages": [{"content": "hi"}]}',
            "messages.0.role",
            "missing",
        ),
        (b'{"model": "bad\\u0000id", "messages": [{"role": "user"}]}', "model", "value_error"),
        (STREAM_MAYBE, "stream", "bool_parsing"),
        (b"not json", None, "json_invalid"),
    ],
)
async def test_invalid_requests_are_422_in_openais_shape_naming_the_field(
    client: httpx.AsyncClient,
    upstream: respx.MockRouter,
    body: bytes,
    param: str | None,
    code: str,
) -> None:
    route = upstream.post("/chat/completions").respond(json=completion_body())

    response = await client.post(CHAT, content=body, headers={"content-type": "application/json"})

    error = assert_openai_error(response, 422, "invalid_request_error", code)
    if param is not None:
        assert error["param"] == param
        assert error["message"].startswith(f"{param}: ")
    assert route.call_count == 0


async def test_a_body_over_the_limit_is_413_before_anything_is_sent(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    route = upstream.post("/chat/completions").respond(json=completion_body())
    huge = "x" * (Settings.model_fields["max_json_body_bytes"].default + 1)

    response = await client.post(CHAT, json=chat(messages=[{"role": "user", "content": huge}]))

    assert_openai_error(response, 413, "invalid_request_error", "PayloadTooLargeError")
    assert route.call_count == 0


async def test_inbound_keys_guard_the_v1_routes_in_openais_shape(
    tmp_path: Path, serve: Serve, upstream: respx.MockRouter
) -> None:
    upstream.get("/models").respond(json=MODELS_BODY)
    upstream.post("/chat/completions").respond(json=completion_body())
    settings = make_settings(tmp_path, proxy_api_keys=[SecretStr("inbound-one")])

    async with serve(settings) as client:
        refused = [
            await client.get("/v1/models"),
            await client.post(CHAT, json=chat(), headers={"authorization": "Bearer wrong"}),
        ]
        allowed = await client.post(
            CHAT, json=chat(), headers={"authorization": "Bearer inbound-one"}
        )

    for response in refused:
        assert_openai_error(response, 401, "authentication_error", "AuthenticationError")
        assert response.headers["www-authenticate"] == "Bearer"
    assert allowed.status_code == 200


async def test_each_request_logs_one_line_with_its_handler(
    settings: Settings, serve: Serve, upstream: respx.MockRouter, retry_waits: list[float]
) -> None:
    upstream.post("/chat/completions").mock(
        side_effect=[
            httpx.Response(200, json=completion_body()),
            sse_response(*STREAM_EVENTS),
            httpx.Response(402, json=error_body(402, "no credits")),
        ]
    )
    async with serve(settings) as client:
        await client.post(CHAT, json=chat())
        await client.post(CHAT, json=chat(stream=True))
        await client.post(CHAT, json=chat())

    lines = [line for line in read_log(settings).splitlines() if f"POST {CHAT} |" in line]
    assert len(lines) == 3, lines
    assert all("handler=chat_completions" in line for line in lines)
    assert "INFO - OK |" in lines[0] and "INFO - OK |" in lines[1]
    assert "status_code=402" in lines[2] and "UpstreamStatusError" in lines[2]
    assert API_KEY not in read_log(settings)


# --- streams -------------------------------------------------------------------------------------


async def test_a_stream_relays_each_event_drops_keepalives_and_ends_with_done(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    route = upstream.post("/chat/completions").mock(return_value=sse_response(*STREAM_EVENTS))
    sent = chat(stream=True, stream_options={"include_usage": True})

    response = await client.post(CHAT, json=sent)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    expected = [part[len(b"data: ") : -2].decode() for part in STREAM_EVENTS if part != KEEPALIVE]
    assert data_lines(response.text) == expected
    assert json.loads(route.calls.last.request.content) == sent


async def test_a_stream_the_upstream_ends_without_done_still_ends_with_done(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").mock(return_value=sse_response(chunk("Hi", "stop")))

    response = await client.post(CHAT, json=chat(stream=True))

    assert data_lines(response.text)[-1] == "[DONE]"
    assert json.loads(data_lines(response.text)[0])["choices"][0]["delta"]["content"] == "Hi"


async def test_a_stream_of_nothing_but_done_is_relayed_as_such(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").mock(return_value=sse_response(KEEPALIVE, DONE))

    response = await client.post(CHAT, json=chat(stream=True))

    assert response.status_code == 200
    assert data_lines(response.text) == ["[DONE]"]


async def test_a_stream_without_any_event_is_a_502(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").mock(return_value=sse_response(KEEPALIVE))

    response = await client.post(CHAT, json=chat(stream=True))

    assert_openai_error(response, 502, "server_error", "UpstreamInvalidResponseError")


async def test_a_multiline_event_keeps_every_line_as_data(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").mock(
        return_value=sse_response(b'data: {"id": "a",\ndata:  "choices": []}\n\n', DONE)
    )

    response = await client.post(CHAT, json=chat(stream=True))

    assert data_lines(response.text) == ['{"id": "a",\n "choices": []}', "[DONE]"]


async def test_an_error_before_the_first_event_is_a_json_error_with_its_status(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").mock(
        return_value=sse_response(
            KEEPALIVE,
            b"data: " + json.dumps(error_body(502, "no provider")).encode() + b"\n\n",
            DONE,
        )
    )

    response = await client.post(CHAT, json=chat(stream=True))

    error = assert_openai_error(response, 502, "server_error", "UpstreamStreamError")
    assert "no provider" in error["message"]


async def test_an_error_after_the_first_event_is_openais_error_event_then_done(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    failure = {**error_body(502, "provider disconnected"), "choices": [{"finish_reason": "error"}]}
    upstream.post("/chat/completions").mock(
        return_value=sse_response(
            chunk("The ", model=GPT), b"data: " + json.dumps(failure).encode() + b"\n\n", DONE
        )
    )

    response = await client.post(CHAT, json=chat(stream=True))

    assert response.status_code == 200
    first, error_event, done = data_lines(response.text)
    assert json.loads(first)["choices"][0]["delta"]["content"] == "The "
    error = json.loads(error_event)["error"]
    assert error["type"] == "server_error" and error["code"] == "UpstreamStreamError"
    assert "provider disconnected" in error["message"]
    assert done == "[DONE]"


async def test_content_that_mentions_error_is_relayed_untouched(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    text = 'He said "error" twice: {"error": 1}'
    upstream.post("/chat/completions").mock(return_value=sse_response(chunk(text), DONE))

    response = await client.post(CHAT, json=chat(stream=True))

    first, done = data_lines(response.text)
    assert json.loads(first)["choices"][0]["delta"]["content"] == text
    assert done == "[DONE]"


# --- models --------------------------------------------------------------------------------------


async def test_v1_models_is_openais_list_from_the_same_cache_as_models(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    route = upstream.get("/models").respond(json=MODELS_BODY)

    listed = await client.get("/v1/models")
    await client.get("/models")
    await client.get("/v1/models")

    assert listed.status_code == 200
    assert route.call_count == 1
    body = listed.json()
    assert body["object"] == "list"
    assert [model["id"] for model in body["data"]] == [m["id"] for m in MODELS_BODY["data"]]
    gpt = body["data"][0]
    assert gpt["object"] == "model"
    assert gpt["owned_by"] == "openai"
    assert gpt["created"] == 1_700_000_000
    assert gpt["context_length"] == 8192
    assert gpt["pricing"] == {"prompt": "0.000001", "completion": "0.000002"}


async def test_a_model_without_prices_is_listed_with_null_pricing(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    unpriced = {**model_entry("acme/no-price"), "pricing": None}
    upstream.get("/models").respond(json={"data": [*MODELS_BODY["data"], unpriced]})

    listed = await client.get("/v1/models")
    one = await client.get("/v1/models/acme/no-price")

    assert listed.status_code == 200, listed.text
    assert [m["pricing"] for m in listed.json()["data"] if m["id"] == "acme/no-price"] == [None]
    assert one.status_code == 200 and one.json()["pricing"] is None


async def test_one_model_by_id_and_an_unknown_one(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.get("/models").respond(json=MODELS_BODY)

    found = await client.get(f"/v1/models/{GPT}")
    missing = await client.get("/v1/models/acme/nope")

    assert found.status_code == 200 and found.json()["id"] == GPT
    assert_openai_error(missing, 404, "not_found_error", "UnknownModelError")


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
@pytest.mark.parametrize("stream", [False, True])
async def test_a_token_limit_over_max_tokens_limit_is_refused_before_the_upstream(
    tmp_path: Path, serve: Serve, upstream: respx.MockRouter, field: str, stream: bool
) -> None:
    route = upstream.post("/chat/completions").respond(json=completion_body())
    body = {"model": GPT, "messages": MESSAGES, field: 4097, "stream": stream}

    async with serve(make_settings(tmp_path, max_tokens_limit=4096)) as client:
        response = await client.post(CHAT, json=body)

    error = assert_openai_error(response, 422, "invalid_request_error", "LimitExceededError")
    assert "4097 exceeds MAX_TOKENS_LIMIT=4096" in error["message"]
    assert error["param"] == field  # the field the caller sent, for the SDK to show
    assert route.call_count == 0


async def test_more_choices_than_max_choices_are_refused_naming_n_and_as_many_are_relayed(
    tmp_path: Path, serve: Serve, upstream: respx.MockRouter
) -> None:
    route = upstream.post("/chat/completions").respond(json=completion_body())

    async with serve(make_settings(tmp_path, max_choices=2)) as client:
        over = await client.post(CHAT, json=chat(n=3))
        at_the_limit = await client.post(CHAT, json=chat(n=2))

    error = assert_openai_error(over, 422, "invalid_request_error", "LimitExceededError")
    assert error["message"] == "n=3 exceeds MAX_CHOICES=2."
    assert error["param"] == "n"
    assert at_the_limit.status_code == 200, at_the_limit.text
    assert route.call_count == 1
    assert json.loads(route.calls[0].request.content)["n"] == 2


async def test_emulator_mode_refuses_a_real_model_in_openais_shape(
    tmp_path: Path, serve: Serve, upstream: respx.MockRouter
) -> None:
    async with serve(make_settings(tmp_path, openrouter_api_key="")) as client:
        plain = await client.post(CHAT, json=chat())
        streamed = await client.post(CHAT, json=chat(stream=True))

    for response in (plain, streamed):
        error = assert_openai_error(response, 404, "not_found_error", "UnknownModelError")
        assert f"Model '{GPT}' needs OpenRouter: set OPENROUTER_API_KEY" in error["message"]
    assert upstream.calls.call_count == 0
