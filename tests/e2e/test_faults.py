"""Upstream faults through the whole stack: retries, status mapping, and an app that stays up."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from tests.helpers.e2e import RETRY_ATTEMPTS, LogWatch, generate_body, unique
from tests.helpers.errors import assert_error
from tests.helpers.launcher import StartApp
from tests.helpers.processes import ServiceProcess, free_port

SHORT_TIMEOUT_SECONDS = 0.5


def assert_still_serving(http: httpx.Client) -> None:
    assert http.get("/health").status_code == 200
    response = http.post("/generate", json=generate_body(unique("Still there?"), max_tokens=8))
    assert response.status_code == 200, response.text
    assert response.json()["text"]


def test_429_twice_then_success_is_retried_and_logged(
    client: httpx.Client, app: ServiceProcess
) -> None:
    log = LogWatch(app, client)
    # A Retry-After within RETRY_MAX_SECONDS (0.05 s in the e2e apps) is waited for.
    prompt = unique("Busy upstream [[emulator:rate_limit_times=2,retry_after=0.01]]")

    response = client.post("/generate", json=generate_body(prompt))

    assert response.status_code == 200, response.text
    assert response.json()["text"]
    lines = log.wait_for_request("POST", "/generate")
    retries = [line for line in lines.splitlines() if " - WARNING - RETRY | " in line]
    assert len(retries) == 2, lines
    assert all("status=429" in line for line in retries)
    assert f"attempt=1/{RETRY_ATTEMPTS}" in retries[0]
    assert f"attempt=2/{RETRY_ATTEMPTS}" in retries[1]


def test_429_storm_answers_429_with_retry_after_and_json_detail(
    client: httpx.Client, app: ServiceProcess
) -> None:
    log = LogWatch(app, client)

    prompt = unique("[[emulator:rate_limit,retry_after=0.01]]")
    response = client.post("/generate", json=generate_body(prompt))

    body = assert_error(response, 429, "UpstreamStatusError", "Upstream returned 429: ")
    assert "Rate limit" in body["detail"]
    assert response.headers["retry-after"] == "1"  # never "0", which invites a retry at once
    lines = log.wait_for_request("POST", "/generate")
    assert len([line for line in lines.splitlines() if "RETRY" in line]) == RETRY_ATTEMPTS - 1
    assert_still_serving(client)


def test_a_retry_after_over_the_cap_is_not_waited_but_passed_on(
    client: httpx.Client, app: ServiceProcess
) -> None:
    log = LogWatch(app, client)
    prompt = unique("[[emulator:rate_limit,retry_after=7]]")  # over RETRY_MAX_SECONDS

    response = client.post("/generate", json=generate_body(prompt))

    assert_error(response, 429, "UpstreamStatusError", "Upstream returned 429: ")
    assert response.headers["retry-after"] == "7"
    lines = log.wait_for_request("POST", "/generate")
    assert [line for line in lines.splitlines() if "RETRY" in line] == []


# scenario, our status, our error type, what the message says, retried by us
FAULTS = [
    ("unauthorized", 502, "UpstreamStatusError", "OPENROUTER_API_KEY", False),
    ("payment_required", 402, "UpstreamStatusError", "Upstream returned 402: ", False),
    ("forbidden", 403, "UpstreamStatusError", "Upstream returned 403: ", False),
    ("server_error", 502, "UpstreamStatusError", "Upstream returned 500: ", False),
    ("bad_gateway", 502, "UpstreamStatusError", "Upstream returned 502: ", True),
    ("unavailable", 502, "UpstreamStatusError", "Upstream returned 503: ", True),
    ("gateway_timeout", 504, "UpstreamStatusError", "Upstream returned 504: ", True),
    ("request_timeout", 504, "UpstreamStatusError", "Upstream returned 408: ", True),
    ("invalid_json", 502, "UpstreamInvalidResponseError", "not valid JSON", False),
    # The answer had begun: sending again could pay twice, so it is not retried.
    ("truncated", 502, "UpstreamConnectionError", "Upstream connection broke mid-answer", False),
]


@pytest.mark.parametrize(("scenario", "status", "error", "detail", "retried"), FAULTS)
def test_upstream_fault_maps_to_our_status_and_the_app_keeps_serving(
    client: httpx.Client,
    app: ServiceProcess,
    scenario: str,
    status: int,
    error: str,
    detail: str,
    retried: bool,
) -> None:
    log = LogWatch(app, client)

    response = client.post(
        "/generate", json=generate_body(unique(f"Fault [[emulator:{scenario}]]"))
    )

    # For "unauthorized" our key is wrong, not the caller's: the message names the setting.
    assert_error(response, status, error, detail)
    lines = log.wait_for_request("POST", "/generate")
    retries = len([line for line in lines.splitlines() if " - WARNING - RETRY | " in line])
    assert retries == (RETRY_ATTEMPTS - 1 if retried else 0), lines
    assert f"status_code={status}" in lines
    assert "Traceback" not in lines  # an upstream fault is not our bug
    assert_still_serving(client)


def test_streamed_request_with_a_fault_before_the_first_byte_is_a_plain_json_error(
    client: httpx.Client,
) -> None:
    response = client.post(
        "/generate",
        params={"stream": "true"},
        json=generate_body(unique("[[emulator:payment_required]]")),
    )

    assert_error(response, 402, "UpstreamStatusError", "Upstream returned 402: ")
    assert response.headers["content-type"].startswith("application/json")


def test_upstream_timeout_answers_504_after_the_configured_time_without_a_retry(
    start_app: StartApp, connect: Callable[[ServiceProcess], httpx.Client]
) -> None:
    app = start_app("app-short-timeout", UPSTREAM_TIMEOUT_SECONDS=str(SHORT_TIMEOUT_SECONDS))
    http = connect(app)
    log = LogWatch(app, http)

    started = time.monotonic()
    response = http.post("/generate", json=generate_body(unique("[[emulator:timeout]]")))
    elapsed = time.monotonic() - started

    assert_error(response, 504, "UpstreamTimeoutError", "Upstream timed out")
    assert elapsed >= SHORT_TIMEOUT_SECONDS  # the app waited its whole timeout, no less
    # A read timeout is not retried: the upstream may still be generating (and billing).
    lines = log.wait_for_request("POST", "/generate")
    assert "RETRY" not in lines, lines
    assert "status_code=504" in lines
    assert_still_serving(http)


def test_unreachable_upstream_answers_502_and_health_stays_up(
    start_app: StartApp, connect: Callable[[ServiceProcess], httpx.Client]
) -> None:
    closed_port = free_port()  # nothing listens there once the probe socket is closed
    app = start_app("app-no-upstream", upstream=f"http://127.0.0.1:{closed_port}/api/v1")
    http = connect(app)
    log = LogWatch(app, http)

    generated = http.post("/generate", json=generate_body("Anyone there?"))
    models = http.get("/models")

    assert_error(generated, 502, "UpstreamConnectionError", "Upstream connection failed")
    assert_error(models, 502, "UpstreamConnectionError", "Upstream connection failed")
    lines = log.wait_for_request("GET", "/models")
    retries = [line for line in lines.splitlines() if "RETRY | POST" in line]
    assert len(retries) == RETRY_ATTEMPTS - 1
    assert http.get("/health").status_code == 200
