from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest
import respx

from src.config import Settings
from src.services.base.client import RetryPolicy, retry_wait_seconds, should_retry
from src.services.base.exceptions import (
    UpstreamConnectionError,
    UpstreamInvalidResponseError,
    UpstreamStatusError,
    UpstreamStreamError,
    UpstreamTimeoutError,
)
from src.services.base.retry_after import parse_retry_after
from tests.helpers.app import Serve, make_settings
from tests.helpers.openrouter import GENERATE, completion_body, sse_response
from tests.helpers.sse import event_names, parse_sse

pytestmark = pytest.mark.anyio

JSON = {"content-type": "application/json"}
HUGE_BODY_BYTES = 32 * 1024 * 1024
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
        # Asked to wait longer than RETRY_MAX_SECONDS: coming back early earns another 429.
        (status(429, retry_after=8.5), False),
        (status(503, retry_after=60.0), False),
        (status(429, retry_after=8.0), True),
        (UpstreamConnectionError("refused", before_answer=True, written=False), True),
        # Written, then closed unanswered: the upstream may have run it (and billed it).
        (UpstreamConnectionError("closed before answering", before_answer=True), False),
        (
            UpstreamConnectionError("closed before answering", before_answer=True, written=True),
            False,
        ),
        # Part of an answer arrived: sending again could pay twice for one answer.
        (UpstreamConnectionError("broke mid-answer"), False),
        (UpstreamTimeoutError("connect", during_connect=True), True),
        (UpstreamTimeoutError("read", during_connect=False), False),
        (UpstreamInvalidResponseError("bad json"), False),
        (UpstreamStreamError("provider died mid-stream"), False),
        (ValueError("ours"), False),
    ],
)
def test_should_retry_only_transient_failures(error: BaseException, retry: bool) -> None:
    assert should_retry(error, POLICY) is retry


def test_retry_after_seconds_is_honoured() -> None:
    assert retry_wait_seconds(status(429, retry_after=3.0), 1, POLICY) == 3.0


def test_retry_after_is_waited_exactly_never_shortened() -> None:
    # Never cut to RETRY_MAX_SECONDS: a longer Retry-After ends the retries instead.
    assert retry_wait_seconds(status(429, retry_after=7.5), 1, POLICY) == 7.5


def test_a_zero_retry_after_waits_the_backoff_floor() -> None:
    assert retry_wait_seconds(status(429, retry_after=0.0), 3, POLICY) == POLICY.min_seconds


def test_backoff_scales_with_the_multiplier_and_never_waits_less_than_the_minimum() -> None:
    policy = RetryPolicy(attempts=9, multiplier=0.25, min_seconds=0.5, max_seconds=8.0)

    # 0.25 s, then 0.5 s: below the minimum, so exactly the minimum.
    assert {retry_wait_seconds(status(503), 1, policy) for _ in range(50)} == {0.5}
    assert {retry_wait_seconds(status(503), 2, policy) for _ in range(50)} == {0.5}
    waits = [retry_wait_seconds(status(503), 5, policy) for _ in range(200)]
    assert all(0.5 <= wait <= 4.0 for wait in waits)  # 0.25 * 2**4
    assert max(waits) > 2.0  # the ceiling grew with the attempts


def test_a_minimum_above_the_maximum_waits_the_maximum() -> None:
    policy = RetryPolicy(attempts=3, multiplier=1.0, min_seconds=10.0, max_seconds=4.0)

    assert {retry_wait_seconds(status(503), attempt, policy) for attempt in (1, 5)} == {4.0}


def test_backoff_without_retry_after_grows_with_jitter_within_bounds() -> None:
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        waits = [retry_wait_seconds(status(503), attempt, POLICY) for _ in range(200)]
        assert all(0.5 <= wait <= ceiling for wait in waits)
        assert len(set(waits)) > 1  # jitter


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("7", 7.0),
        (" 7 ", 7.0),
        ("0.5", 0.5),
        ("-3", 0.0),
        ("", None),
        ("soon", None),
        (None, None),
        ("nan", None),
        ("inf", None),
    ],
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
    # A date without a zone ("-0000") is read as UTC.
    assert parse_retry_after("Thu, 26 Nov 2026 10:00:45 -0000", now=now) == 45.0


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
        429, headers={"Retry-After": "3"}, json={"error": {"message": "rate limited"}}
    )

    response = await client.post("/generate", json=GENERATE)

    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert response.json()["error"] == "UpstreamStatusError"
    assert "rate limited" in response.json()["detail"]
    assert route.call_count == 3  # RETRY_ATTEMPTS=3 in the test settings, the first included
    assert retry_waits == [3.0, 3.0]


async def test_a_retry_after_over_the_cap_ends_the_retries_and_is_passed_on(
    client: httpx.AsyncClient, upstream: respx.MockRouter, retry_waits: list[float]
) -> None:
    route = upstream.post("/chat/completions").respond(
        429, headers={"Retry-After": "30"}, json={"error": {"message": "rate limited"}}
    )

    response = await client.post("/generate", json=GENERATE)

    assert response.status_code == 429
    assert response.headers["retry-after"] == "30"  # RETRY_MAX_SECONDS is 8 in the tests
    assert route.call_count == 1
    assert retry_waits == []


@pytest.mark.parametrize(
    ("upstream_retry_after", "ours"),
    [
        ("2.5", "3"),  # rounded up: a client told to come back early earns another 429
        ("2", "2"),
        ("0.2", "1"),  # never "0", which would invite an immediate retry
        (None, "1"),
    ],
)
async def test_our_429_rounds_the_upstream_retry_after_up(
    client: httpx.AsyncClient,
    upstream: respx.MockRouter,
    retry_waits: list[float],
    upstream_retry_after: str | None,
    ours: str,
) -> None:
    headers = {"Retry-After": upstream_retry_after} if upstream_retry_after else {}
    upstream.post("/chat/completions").respond(
        429, headers=headers, json={"error": {"message": "rate limited"}}
    )

    response = await client.post("/generate", json=GENERATE)

    assert response.status_code == 429
    assert response.headers["retry-after"] == ours
    assert response.json()["detail"] == "Upstream returned 429: rate limited"


@pytest.mark.parametrize("code", [400, 401, 402, 403, 404, 500])
async def test_no_retry_on_permanent_statuses(
    client: httpx.AsyncClient, upstream: respx.MockRouter, retry_waits: list[float], code: int
) -> None:
    route = upstream.post("/chat/completions").respond(code, json={"error": {"message": "no"}})

    response = await client.post("/generate", json=GENERATE)

    assert response.status_code >= 400
    assert "retry-after" not in response.headers
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


async def test_a_failed_response_gives_its_connection_back_before_the_retry(
    tmp_path: Path, serve: Serve, upstream: respx.MockRouter, retry_waits: list[float]
) -> None:
    # One pooled connection, and a failed answer far larger than the socket buffers: it cannot
    # arrive, and so free the connection, unless the client reads or closes it. A retry that
    # went out while the failed response still held the connection would wait forever.
    huge_failure = b'{"error": {"message": "busy"}, "padding": "' + b"x" * HUGE_BODY_BYTES + b'"}'
    route = upstream.post("/chat/completions").mock(
        side_effect=[
            httpx.Response(503, content=huge_failure, headers=JSON),
            httpx.Response(503, content=huge_failure, headers=JSON),
            sse_response(),
        ]
    )

    async with serve(make_settings(tmp_path, upstream_max_connections=1)) as client:
        # Streamed: a plain request reads every answer whole anyway.
        response = await asyncio.wait_for(
            client.post("/generate", params={"stream": "true"}, json=GENERATE), 20
        )

    assert response.status_code == 200
    assert event_names(parse_sse(response.text))[-1] == "done"
    assert route.call_count == 3
    assert len(retry_waits) == 2


def test_the_retry_policy_is_read_from_the_retry_settings(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        retry_attempts=7,
        retry_multiplier=2.0,
        retry_min_seconds=0.25,
        retry_max_seconds=9,
    )

    assert RetryPolicy.from_settings(settings) == RetryPolicy(
        attempts=7, multiplier=2.0, min_seconds=0.25, max_seconds=9.0
    )


def test_a_client_given_no_policy_retries_as_the_retry_settings_default_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("RETRY_ATTEMPTS", "RETRY_MULTIPLIER", "RETRY_MIN_SECONDS", "RETRY_MAX_SECONDS"):
        monkeypatch.delenv(name, raising=False)

    assert RetryPolicy() == RetryPolicy.from_settings(Settings(_env_file=None))
