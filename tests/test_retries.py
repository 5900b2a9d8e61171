from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
import respx

from src.services.base.client import RetryPolicy, retry_wait_seconds, should_retry
from src.services.base.exceptions import (
    UpstreamConnectionError,
    UpstreamInvalidResponseError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)
from src.services.base.retry_after import parse_retry_after
from tests.conftest import completion_body

pytestmark = pytest.mark.anyio

GENERATE = {"model": "openai/gpt-4o", "prompt": "hi"}
POLICY = RetryPolicy(attempts=5, multiplier=1.0, min_seconds=0.5, max_seconds=8.0)


def status(code: int, retry_after: float | None = None) -> UpstreamStatusError:
    return UpstreamStatusError(code, "x", retry_after=retry_after)


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        (status(429), True),
        (status(408), True),
        (status(502), True),
        (status(503), True),
        (status(504), True),
        (status(400), False),
        (status(401), False),
        (status(402), False),
        (status(402, retry_after=3.0), True),
        (status(403), False),
        (status(404), False),
        (status(500), False),
        (UpstreamConnectionError("refused"), True),
        (UpstreamTimeoutError("connect", during_connect=True), True),
        (UpstreamTimeoutError("read", during_connect=False), False),
        (UpstreamInvalidResponseError("bad json"), False),
        (ValueError("ours"), False),
    ],
)
def test_should_retry_only_transient_failures(error: BaseException, retry: bool) -> None:
    assert should_retry(error) is retry


def test_retry_after_seconds_is_honoured() -> None:
    assert retry_wait_seconds(status(429, retry_after=3.0), 1, POLICY) == 3.0


def test_retry_after_is_capped_by_the_max_wait() -> None:
    assert retry_wait_seconds(status(429, retry_after=120.0), 1, POLICY) == 8.0


def test_backoff_without_retry_after_grows_with_jitter_within_bounds() -> None:
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        waits = [retry_wait_seconds(status(503), attempt, POLICY) for _ in range(200)]
        assert all(0.5 <= wait <= ceiling for wait in waits)
        assert len(set(waits)) > 1  # jitter


@pytest.mark.parametrize(
    ("header", "expected"),
    [("7", 7.0), ("0.5", 0.5), ("-3", 0.0), ("", None), ("soon", None), (None, None)],
)
def test_parse_retry_after_seconds(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_parse_retry_after_http_date() -> None:
    now = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=30), usegmt=True)

    assert parse_retry_after(header, now=now) == 30.0
    assert (
        parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now=now) == 0.0
    )


async def test_429_then_success_waits_retry_after_and_succeeds(
    client: httpx.AsyncClient, upstream: respx.MockRouter, retry_waits: list[float]
) -> None:
    route = upstream.post("/chat/completions").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "2"}, json={"error": {"message": "slow"}}),
            httpx.Response(200, json=completion_body()),
        ]
    )

    response = await client.post("/generate", json=GENERATE)

    assert response.status_code == 200
    assert route.call_count == 2
    assert retry_waits == [2.0]


async def test_429_with_http_date_retry_after_is_honoured(
    client: httpx.AsyncClient, upstream: respx.MockRouter, retry_waits: list[float]
) -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=5), usegmt=True)
    upstream.post("/chat/completions").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": later}),
            httpx.Response(200, json=completion_body()),
        ]
    )

    response = await client.post("/generate", json=GENERATE)

    assert response.status_code == 200
    assert len(retry_waits) == 1 and 3.0 <= retry_waits[0] <= 5.0


async def test_429_until_attempts_run_out_answers_429_with_retry_after(
    client: httpx.AsyncClient, upstream: respx.MockRouter, retry_waits: list[float]
) -> None:
    route = upstream.post("/chat/completions").respond(
        429, headers={"Retry-After": "30"}, json={"error": {"message": "rate limited"}}
    )

    response = await client.post("/generate", json=GENERATE)

    assert response.status_code == 429
    assert response.headers["retry-after"] == "30"
    assert response.json()["error"] == "UpstreamStatusError"
    assert "rate limited" in response.json()["detail"]
    assert route.call_count == 3  # RETRY_ATTEMPTS=3 in the test settings, the first included
    assert retry_waits == [8.0, 8.0]  # capped by RETRY_MAX_SECONDS


@pytest.mark.parametrize("code", [400, 401, 403, 404, 500])
async def test_no_retry_on_permanent_statuses(
    client: httpx.AsyncClient, upstream: respx.MockRouter, retry_waits: list[float], code: int
) -> None:
    route = upstream.post("/chat/completions").respond(code, json={"error": {"message": "no"}})

    await client.post("/generate", json=GENERATE)

    assert route.call_count == 1
    assert retry_waits == []


async def test_retries_are_logged_at_warning(
    client: httpx.AsyncClient,
    upstream: respx.MockRouter,
    retry_waits: list[float],
    caplog: pytest.LogCaptureFixture,
) -> None:
    upstream.post("/chat/completions").mock(
        side_effect=[httpx.Response(503), httpx.Response(200, json=completion_body())]
    )

    with caplog.at_level("WARNING"):
        await client.post("/generate", json=GENERATE)

    retries = [r.getMessage() for r in caplog.records if r.getMessage().startswith("RETRY")]
    assert len(retries) == 1
    assert "POST chat/completions | status=503 | attempt=1/3 | wait=" in retries[0]


async def test_failed_responses_are_closed_before_the_retry(
    client: httpx.AsyncClient, upstream: respx.MockRouter, retry_waits: list[float]
) -> None:
    closed: list[bool] = []

    class TrackedStream(httpx.AsyncByteStream):
        async def __aiter__(self):  # type: ignore[no-untyped-def]
            yield b'{"error": {"message": "busy"}}'

        async def aclose(self) -> None:
            closed.append(True)

    upstream.post("/chat/completions").mock(
        side_effect=[
            httpx.Response(503, stream=TrackedStream()),
            httpx.Response(200, json=completion_body()),
        ]
    )

    response = await client.post("/generate", json=GENERATE)

    assert response.status_code == 200
    assert closed == [True]
