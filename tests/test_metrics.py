"""GET /metrics after real requests through the app: counts by route, status, model and
provider, the latency histograms, retries, upstream errors, who may scrape it.

The instruments are the process's own (as a worker's are), shared by every app a test builds:
each test names models nobody else sends, or compares a scrape before and after.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import httpx
import pytest
import respx

from tests.helpers.app import Serve, make_settings
from tests.helpers.metrics import Scrape
from tests.helpers.openrouter import chunk, completion_body, error_body, sse_response, usage_chunk
from tests.helpers.processes import REPO_ROOT

pytestmark = pytest.mark.anyio

REQUESTS = "llm_gateway_requests_total"
KEY = "metrics-test-key"


def new_model() -> str:
    return f"acme/metrics-{uuid.uuid4().hex[:10]}"


async def scrape(client: httpx.AsyncClient, **headers: str) -> Scrape:
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return Scrape(response.text)


async def test_metrics_count_requests_by_route_status_model_and_provider(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    model = new_model()
    answer = {**completion_body(model=model), "provider": "Alpha"}
    upstream.post("/chat/completions").respond(json=answer)
    before = await scrape(client)

    for _ in range(3):
        response = await client.post("/generate", json={"model": model, "prompt": "hi"})
        assert response.status_code == 200
    assert (await client.get("/no-such-path")).status_code == 404
    after = await scrape(client)

    generate = {"route": "/generate", "method": "POST", "status": "200"}
    assert after.value(REQUESTS, **generate, model=model, provider="Alpha") == 3
    # Requests that reached no route share one label: the path is the caller's to choose.
    unrouted = {"route": "-", "status": "404"}
    assert after.value(REQUESTS, **unrouted) - before.value(REQUESTS, **unrouted) == 1
    duration = "llm_gateway_request_duration_seconds_count"
    assert after.value(duration, route="/generate") - before.value(duration, route="/generate") == 3
    upstream_count = "llm_gateway_upstream_latency_seconds_count"
    assert after.value(upstream_count, model=model, provider="Alpha") == 3
    # A plain answer has no first token of its own.
    assert after.value("llm_gateway_ttft_seconds_count", model=model) == 0
    # Every request is in a bucket up to +Inf.
    buckets = "llm_gateway_upstream_latency_seconds_bucket"
    assert after.value(buckets, model=model, le="+Inf") == 3


async def test_metrics_time_the_first_token_of_streams_on_both_routes(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    model = new_model()
    parts = (
        chunk("Hello", model=model, provider="Beta"),
        chunk("", "stop", model=model, provider="Beta"),
        usage_chunk(model=model),
        b"data: [DONE]\n\n",
    )
    upstream.post("/chat/completions").mock(side_effect=lambda _: sse_response(*parts))

    streamed = await client.post("/generate?stream=true", json={"model": model, "prompt": "hi"})
    relayed = await client.post(
        "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True},
    )
    assert streamed.status_code == relayed.status_code == 200
    after = await scrape(client)

    for route in ("/generate", "/v1/chat/completions"):
        assert after.value(REQUESTS, route=route, model=model, provider="Beta") == 1
    assert after.value("llm_gateway_ttft_seconds_count", model=model, provider="Beta") == 2
    assert after.value("llm_gateway_upstream_latency_seconds_count", model=model) == 2


async def test_metrics_count_retries_their_waits_and_the_upstream_error_that_ended_a_request(
    client: httpx.AsyncClient, upstream: respx.MockRouter, retry_waits: list[float]
) -> None:
    route = upstream.post("/chat/completions").respond(503, json=error_body(503, "busy"))
    before = await scrape(client)

    response = await client.post("/generate", json={"model": new_model(), "prompt": "hi"})
    after = await scrape(client)

    assert response.status_code == 502
    assert route.call_count == 3  # RETRY_ATTEMPTS in the test settings
    retries = "llm_gateway_upstream_retries_total"
    assert after.value(retries, reason="503") - before.value(retries, reason="503") == 2
    waits = "llm_gateway_upstream_retry_wait_seconds_count"
    assert after.value(waits) - before.value(waits) == len(retry_waits) == 2
    errors = "llm_gateway_upstream_errors_total"
    status_errors = {"type": "UpstreamStatusError"}
    assert after.value(errors, **status_errors) - before.value(errors, **status_errors) == 1
    # A model the upstream never answered for gets no series of its own.
    failed = {"route": "/generate", "status": "502", "model": "other"}
    assert after.value(REQUESTS, **failed) - before.value(REQUESTS, **failed) == 1


async def test_metrics_count_an_upstream_error_of_a_route_that_names_no_model(
    client: httpx.AsyncClient, upstream: respx.MockRouter, retry_waits: list[float]
) -> None:
    upstream.get("/models").respond(503, json=error_body(503, "busy"))
    errors = "llm_gateway_upstream_errors_total"
    failed = {"route": "/models", "status": "502", "model": "-", "provider": "-"}
    before = await scrape(client)

    response = await client.get("/models")
    after = await scrape(client)

    assert response.status_code == 502
    status_errors = {"type": "UpstreamStatusError"}
    assert after.value(errors, **status_errors) - before.value(errors, **status_errors) == 1
    assert after.value(REQUESTS, **failed) - before.value(REQUESTS, **failed) == 1


async def test_metrics_count_a_stream_that_fails_after_its_200_as_an_upstream_error(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    error_chunk = chunk("", "error", error={"code": 502, "message": "provider died"})
    upstream.post("/chat/completions").mock(
        side_effect=lambda _: sse_response(chunk("The "), error_chunk, b"data: [DONE]\n\n")
    )
    errors = "llm_gateway_upstream_errors_total"
    before = (await scrape(client)).value(errors, type="UpstreamStreamError")

    for path in ("/generate?stream=true", "/v1/chat/completions"):
        body = {"model": new_model(), "prompt": "hi", "stream": True}
        if path.startswith("/v1"):
            body = {"model": body["model"], "stream": True, "messages": [{"role": "user"}]}
        assert (await client.post(path, json=body)).status_code == 200

    after = (await scrape(client)).value(errors, type="UpstreamStreamError")
    assert after - before == 2


async def test_metrics_count_requests_in_flight_while_one_is_answered(
    client: httpx.AsyncClient,
) -> None:
    # The scrape itself is a request being answered.
    assert (await scrape(client)).value("llm_gateway_requests_in_flight") >= 1


async def test_metrics_need_an_inbound_key_when_keys_are_set(tmp_path: Path, serve: Serve) -> None:
    async with serve(make_settings(tmp_path, proxy_api_keys=[KEY])) as client:
        refused = await client.get("/metrics")
        assert refused.status_code == 401
        assert refused.json()["error"] == "AuthenticationError"
        scraped = await scrape(client, authorization=f"Bearer {KEY}")
    assert scraped.value(REQUESTS, route="-", status="401") >= 1


async def test_metrics_public_opens_metrics_alone_to_a_scraper_without_a_key(
    tmp_path: Path, serve: Serve
) -> None:
    settings = make_settings(tmp_path, proxy_api_keys=[KEY], metrics_public=True)
    async with serve(settings) as client:
        await scrape(client)
        assert (await client.get("/models")).status_code == 401
        # The document says which routes need no key.
        document = (await client.get("/openapi.json")).json()
    assert "security" not in document["paths"]["/metrics"]["get"]
    assert document["paths"]["/models"]["get"]["security"]


async def test_metrics_disabled_serves_no_metrics_route(tmp_path: Path, serve: Serve) -> None:
    async with serve(make_settings(tmp_path, metrics_enabled=False)) as client:
        response = await client.get("/metrics")
    assert response.status_code == 404


DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "gateway.json"
_METRIC_NAME = re.compile(r"\bllm_gateway_[a-z_]+\b")


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


async def test_dashboard_queries_name_only_metrics_the_service_exports_and_show_each(
    client: httpx.AsyncClient,
) -> None:
    exported = await scrape(client)
    queries = dashboard_queries()
    named = {name for query in queries for name in _METRIC_NAME.findall(query)}

    assert named <= exported.names, f"not exported: {named - exported.names}"
    families = {name for name in exported.names if name.startswith("llm_gateway_")}
    assert {family_of(name) for name in named} == {family_of(name) for name in families}


def family_of(series: str) -> str:
    return re.sub(r"_(total|created|bucket|count|sum)$", "", series)
