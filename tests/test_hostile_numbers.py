"""Hostile numbers and shapes: non-finite and oversized values, huge inputs echoed back,
duplicate keys and headers, upstream numbers nobody can add up. Never a 5xx, never an echo
of more than an excerpt, never a failed run for one odd row."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from src.config import Settings
from src.services.base.client import RetryPolicy, retry_wait_seconds
from src.services.base.exceptions import UpstreamStatusError
from src.services.benchmarker.results.statistics import total_cost, unknown_costs
from tests.helpers.app import Serve, make_settings, read_log
from tests.helpers.benchmarks import post_benchmark
from tests.helpers.errors import assert_error, assert_no_traceback
from tests.helpers.openrouter import (
    DONE,
    GPT,
    MODELS_BODY,
    chunk,
    completion_body,
    sse_response,
    usage_chunk,
)
from tests.helpers.results import request_result, run_rows
from tests.helpers.sse import parse_sse

pytestmark = pytest.mark.anyio

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Why is the sky blue?"}]
# An answer longer than this is echoing the input.
SHORT_ANSWER_BYTES = 4096


def strict_json(text: str) -> Any:
    """JSON as RFC 8259 has it: NaN and Infinity are not JSON, whatever Python's json accepts."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in a JSON answer")

    return json.loads(text, parse_constant=refuse)


# --- /generate: non-finite numbers ---------------------------------------------------------------


@pytest.mark.parametrize("field", ["temperature", "top_p", "max_tokens"])
@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e309"])
async def test_non_finite_sampling_numbers_are_a_clear_422(
    client: httpx.AsyncClient, upstream: respx.MockRouter, field: str, number: str
) -> None:
    route = upstream.post("/chat/completions").respond(json=completion_body())
    raw = f'{{"model": "{GPT}", "prompt": "hi", "{field}": {number}}}'

    response = await client.post(
        "/generate", content=raw, headers={"content-type": "application/json"}
    )

    assert response.status_code == 422, response.text[:300]
    [error] = strict_json(response.text)["detail"]
    assert tuple(error["loc"]) == ("body", field)
    assert "finite" in error["msg"] or "integer" in error["msg"], error
    assert_no_traceback(response)
    assert route.call_count == 0


# --- 422s never echo more than an excerpt --------------------------------------------------------


async def test_a_huge_unknown_field_is_422_with_only_an_excerpt_of_it(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    route = upstream.post("/chat/completions").respond(json=completion_body())
    items = b"0," * 4_000_000
    raw = b'{"model": "m/x", "prompt": "hi", "junk": [' + items + b"0]}"

    response = await client.post(
        "/generate", content=raw, headers={"content-type": "application/json"}
    )

    assert response.status_code == 422, response.text[:300]
    assert len(response.content) < SHORT_ANSWER_BYTES, len(response.content)
    [error] = strict_json(response.text)["detail"]
    assert (tuple(error["loc"]), error["type"]) == (("body", "junk"), "extra_forbidden")
    assert isinstance(error["input"], str) and error["input"].startswith("[0,0,0")
    assert route.call_count == 0


async def test_a_huge_body_with_a_nan_is_422_naming_both_problems(
    client: httpx.AsyncClient,
) -> None:
    items = b"0," * 1_000_000
    raw = b'{"model": "m/x", "prompt": "hi", "top_p": NaN, "junk": [' + items + b"0]}"

    response = await client.post(
        "/generate", content=raw, headers={"content-type": "application/json"}
    )

    assert response.status_code == 422, response.text[:300]
    assert len(response.content) < SHORT_ANSWER_BYTES, len(response.content)
    errors = strict_json(response.text)["detail"]
    assert {error["loc"][-1] for error in errors} == {"top_p", "junk"}


async def test_a_huge_form_value_is_422_with_only_an_excerpt_of_it(
    client: httpx.AsyncClient,
) -> None:
    response = await post_benchmark(client, runs="9" * 200_000)

    assert response.status_code == 422, response.text[:300]
    assert len(response.content) < SHORT_ANSWER_BYTES, len(response.content)
    [error] = strict_json(response.text)["detail"]
    assert error["loc"][-1] == "runs"


async def test_a_huge_string_is_422_with_only_an_excerpt_of_it(
    client: httpx.AsyncClient,
) -> None:
    raw = json.dumps({"model": "m/x", "prompt": "hi", "temperature": "x" * 1_000_000})

    response = await client.post(
        "/generate", content=raw, headers={"content-type": "application/json"}
    )

    assert response.status_code == 422
    assert len(response.content) < SHORT_ANSWER_BYTES, len(response.content)
    [error] = strict_json(response.text)["detail"]
    assert error["input"].startswith("xxxx")


# --- Retry-After in the past ---------------------------------------------------------------------


def test_a_retry_after_of_zero_still_waits_the_backoff_floor() -> None:
    policy = RetryPolicy(attempts=5, multiplier=1.0, min_seconds=0.5, max_seconds=8.0)
    error = UpstreamStatusError(429, "x", retry_after=0.0)

    assert retry_wait_seconds(error, 3, policy) >= 0.5


async def test_a_retry_after_date_in_the_past_waits_at_least_retry_min_seconds(
    client: httpx.AsyncClient, upstream: respx.MockRouter, retry_waits: list[float]
) -> None:
    past = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    route = upstream.post("/chat/completions").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": past}, json={"error": {"code": 429}}),
            httpx.Response(429, headers={"Retry-After": past}, json={"error": {"code": 429}}),
            httpx.Response(200, json=completion_body()),
        ]
    )

    response = await client.post("/generate", json={"model": GPT, "prompt": "hi"})

    assert response.status_code == 200
    assert route.call_count == 3
    assert len(retry_waits) == 2
    assert all(wait >= 0.5 for wait in retry_waits), retry_waits  # RETRY_MIN_SECONDS


# --- upstream numbers ----------------------------------------------------------------------------


def plain_answer(usage: dict[str, Any]) -> httpx.Response:
    body = completion_body()
    body["usage"] = usage
    return httpx.Response(200, json=body)


async def test_an_absurd_upstream_cost_marks_its_row_not_the_run(
    client: httpx.AsyncClient, upstream: respx.MockRouter, settings: Settings
) -> None:
    upstream.get("/models").respond(json=MODELS_BODY)
    usages = iter(
        [
            {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9, "cost": 1e308},
            {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9, "cost": 0.5},
            {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9, "cost": 1e308},
            {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9, "cost": 0.25},
        ]
    )
    upstream.post("/chat/completions").mock(side_effect=lambda _: plain_answer(next(usages)))

    response = await post_benchmark(client, runs=2, stream="false")

    body = response.json()
    assert response.status_code == 200, response.text[:500]
    assert body["status"] == "completed"
    assert (body["models"][0]["ok"], body["models"][0]["failed"]) == (4, 0)
    assert body["cost"] == pytest.approx(0.75)  # the known ones
    assert body["cost_unknown"] == 2
    rows = run_rows(settings.benchmarks_dir, body)
    odd = [row for row in rows if row["cost"] == ""]
    assert len(odd) == 2
    assert all("usage.cost" in row["error"] for row in odd), odd
    assert all(row["status"] == "200" for row in rows)


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": -5, "completion_tokens": 4, "total_tokens": 9},
        {"prompt_tokens": 10**30, "completion_tokens": 4, "total_tokens": 9},
        {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9, "cost": -1.0},
        {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9, "cost": 1e308},
    ],
)
async def test_absurd_upstream_usage_is_unknown_in_a_generation(
    client: httpx.AsyncClient, upstream: respx.MockRouter, usage: dict[str, Any]
) -> None:
    upstream.post("/chat/completions").mock(return_value=plain_answer(usage))

    response = await client.post("/generate", json={"model": GPT, "prompt": "hi"})

    assert response.status_code == 200, response.text[:300]
    body = strict_json(response.text)
    assert body["cost"] is None
    assert 0 <= body["prompt_tokens"] < 10**9


async def test_a_stream_of_nothing_but_empty_choices_is_an_invalid_answer(
    client: httpx.AsyncClient, upstream: respx.MockRouter, settings: Settings
) -> None:
    upstream.get("/models").respond(json=MODELS_BODY)
    empty = b'data: {"id": "gen-1", "model": "m/x", "choices": []}\n\n'
    upstream.post("/chat/completions").mock(return_value=sse_response(empty, empty, DONE))

    streamed = await client.post("/generate?stream=true", json={"model": GPT, "prompt": "hi"})
    body = (await post_benchmark(client, runs=1)).json()

    # As for a stream without any data: nothing was sent yet, so the failure is the answer.
    assert_error(streamed, 502, "UpstreamInvalidResponseError", "without any choice")
    assert (body["models"][0]["ok"], body["models"][0]["failed"]) == (0, 2)
    assert body["models"][0]["errors"] == {"UpstreamInvalidResponseError": 2}


async def test_a_final_usage_chunk_with_empty_choices_after_content_is_normal(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").mock(
        return_value=sse_response(chunk("Hi", model=GPT), usage_chunk(model=GPT), DONE)
    )

    response = await client.post("/generate?stream=true", json={"model": GPT, "prompt": "hi"})

    events = parse_sse(response.text)
    assert events[-1].event == "done", response.text
    assert events[-1].data["completion_tokens"] == 4


async def test_a_null_usage_is_an_unknown_cost_not_a_free_one(
    client: httpx.AsyncClient, upstream: respx.MockRouter, settings: Settings
) -> None:
    upstream.get("/models").respond(json=MODELS_BODY)  # GPT has listed prices
    null_usage = b'data: {"id": "gen-1", "model": "m/x", "choices": [], "usage": null}\n\n'
    upstream.post("/chat/completions").mock(
        return_value=sse_response(chunk("Hi", model=GPT), chunk("", "stop"), null_usage, DONE)
    )

    body = (await post_benchmark(client, runs=1)).json()

    assert body["status"] == "completed"
    assert body["models"][0]["ok"] == 2
    assert body["cost"] is None
    assert body["cost_unknown"] == 2
    assert body["comparison"][0]["cost"] is None
    rows = run_rows(settings.benchmarks_dir, body)
    assert [(row["cost"], row["cost_source"]) for row in rows] == [("", ""), ("", "")]


def test_total_cost_adds_the_known_costs_and_counts_the_unknown_ones() -> None:
    records = [
        request_result(cost=0.5),
        request_result(cost=None),
        request_result(cost=0.25),
        request_result(error_type="UpstreamStatusError"),  # a failure costs nothing
    ]

    assert (total_cost(records), unknown_costs(records)) == (0.75, 1)
    assert (total_cost([request_result(cost=None)]), total_cost([])) == (None, 0.0)


# --- /v1: duplicate keys and cost multipliers ----------------------------------------------------


def raw_chat(tail: str) -> bytes:
    return (f'{{"model": "{GPT}", "messages": {json.dumps(MESSAGES)}, ' + tail + "}").encode()


@pytest.mark.parametrize(
    ("tail", "param"),
    [
        ('"max_tokens": 99999999, "max_tokens": 5', "max_tokens"),
        ('"max_tokens": 5, "reasoning": {"max_tokens": 1, "max_tokens": 99999999}', "reasoning"),
        ('"stream": false, "n": 1, "n": 64', "n"),
        ('"model": "emulator/small"', "model"),
        ('"max_tokens": 99999999, "max\\u005ftokens": 5', "max_tokens"),
    ],
)
async def test_v1_refuses_duplicate_keys_before_the_upstream(
    client: httpx.AsyncClient, upstream: respx.MockRouter, tail: str, param: str
) -> None:
    route = upstream.post("/chat/completions").respond(json=completion_body())

    response = await client.post(
        CHAT, content=raw_chat(tail), headers={"content-type": "application/json"}
    )

    assert response.status_code in (400, 422), response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "duplicate" in error["message"].lower()
    assert param in error["message"]
    assert route.call_count == 0


async def test_v1_the_same_key_at_two_levels_is_not_a_duplicate(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    route = upstream.post("/chat/completions").respond(json=completion_body())

    response = await client.post(
        CHAT,
        content=raw_chat('"max_tokens": 64, "reasoning": {"max_tokens": 32}'),
        headers={"content-type": "application/json"},
    )

    assert response.status_code == 200, response.text
    assert route.call_count == 1


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 1000}, "n"),
        ({"n": 0}, "n"),
        ({"reasoning": {"max_tokens": 4097}}, "reasoning"),
        ({"max_output_tokens": 4097}, "max_output_tokens"),
    ],
)
async def test_v1_fields_that_multiply_cost_are_bounded(
    tmp_path: Path,
    serve: Serve,
    upstream: respx.MockRouter,
    extra: dict[str, Any],
    param: str,
) -> None:
    route = upstream.post("/chat/completions").respond(json=completion_body())

    async with serve(make_settings(tmp_path, max_tokens_limit=4096)) as client:
        response = await client.post(CHAT, json={"model": GPT, "messages": MESSAGES, **extra})
        within = await client.post(
            CHAT,
            json={
                "model": GPT,
                "messages": MESSAGES,
                "n": 1,
                "reasoning": {"max_tokens": 4096},
                "max_output_tokens": 4096,
            },
        )

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert param in (error["param"] or "") + error["message"]
    assert within.status_code == 200, within.text
    assert route.call_count == 1


# --- Host and Origin -----------------------------------------------------------------------------


async def test_two_host_headers_are_refused(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/health", headers=[("Host", "service.test"), ("Host", "evil.example")]
    )
    post = await client.post(
        "/generate",
        json={"model": GPT, "prompt": "hi"},
        headers=[
            ("Host", "service.test"),
            ("Host", "evil.example"),
            ("Origin", "http://evil.example"),
        ],
    )

    for answer in (response, post):
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"] == "InvalidHostError"


async def test_an_origin_of_the_other_scheme_is_cross_site(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    route = upstream.post("/chat/completions").respond(json=completion_body())

    response = await client.post(
        "/generate", json={"model": GPT, "prompt": "hi"}, headers={"Origin": "https://service.test"}
    )
    same = await client.post(
        "/generate", json={"model": GPT, "prompt": "hi"}, headers={"Origin": "http://service.test"}
    )

    assert response.status_code == 403, response.text
    assert response.json()["error"] == "CrossSiteRequestError"
    assert same.status_code == 200, same.text
    assert route.call_count == 1


# --- long ids ------------------------------------------------------------------------------------


async def test_a_huge_id_is_cut_in_the_404_and_in_the_log(
    settings: Settings, serve: Serve, upstream: respx.MockRouter
) -> None:
    upstream.get("/models").respond(json=MODELS_BODY)
    huge = "x" * 10_000

    async with serve(settings) as client:
        answers = [
            await client.get(f"/v1/models/{huge}"),
            await client.get(f"/benchmarks/{huge}"),
        ]

    for answer in answers:
        assert answer.status_code == 404, answer.text[:300]
        assert len(answer.content) < 1024, len(answer.content)
    # The service's own line per request (the test client's httpx logs its requests too).
    lines = [line for line in read_log(settings).splitlines() if "CLIENT_ERROR" in line]
    assert len(lines) == 2, lines
    assert all(len(line) < 2048 for line in lines), [len(line) for line in lines]


async def test_many_unknown_model_ids_are_named_in_a_short_404(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.get("/models").respond(json=MODELS_BODY)
    models = [f"acme/{'n' * 150}-{index}" for index in range(500)]

    response = await post_benchmark(client, models=models)

    assert response.status_code == 404, response.text[:300]
    assert len(response.content) < SHORT_ANSWER_BYTES, len(response.content)
    assert "acme/nnn" in response.json()["detail"]
    assert "490 more" in response.json()["detail"]


async def test_a_huge_upstream_error_message_is_cut(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").respond(
        json={"error": {"code": 502, "message": "provider said " + "z" * 100_000}}
    )

    response = await client.post("/generate", json={"model": GPT, "prompt": "hi"})

    assert_error(response, 502, "UpstreamStreamError", "provider said zzz")
    assert len(response.content) < SHORT_ANSWER_BYTES, len(response.content)
