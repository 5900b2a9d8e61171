from __future__ import annotations

import asyncio

import httpx
import pytest
import respx

from src.services.openrouter.catalog import ModelCatalog
from tests.helpers.app import openrouter_client
from tests.helpers.openrouter import API_KEY, MODELS_BODY, UPSTREAM, error_body, model_entry
from tests.helpers.upstream_server import LoopbackUpstream

pytestmark = pytest.mark.anyio


async def test_models_lists_every_upstream_model_with_pricing_and_free_flag(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    route = upstream.get("/models").respond(json=MODELS_BODY)

    response = await client.get("/models")

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 3
    assert body["models"][0] == {
        "id": "openai/gpt-4o",
        "name": "Gpt-4O",
        "context_length": 8192,
        "pricing": {"prompt": "0.000001", "completion": "0.000002"},
        "free": False,
    }
    assert [m["free"] for m in body["models"]] == [False, True, True]
    sent = route.calls.last.request
    assert sent.url == f"{UPSTREAM}/models"
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"


async def test_models_free_filter_keeps_free_suffix_and_zero_priced_models(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.get("/models").respond(json=MODELS_BODY)

    response = await client.get("/models", params={"free": "true"})

    assert response.status_code == 200
    assert [m["id"] for m in response.json()["models"]] == ["meta/llama-3:free", "acme/zero-priced"]
    assert response.json()["count"] == 2


async def test_models_are_cached_between_requests(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    route = upstream.get("/models").respond(json=MODELS_BODY)

    first = await client.get("/models")
    second = await client.get("/models")

    assert first.json() == second.json()
    assert route.call_count == 1


async def test_25_concurrent_cold_requests_make_one_upstream_call(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    called = asyncio.Event()
    release = asyncio.Event()

    async def slow_models(_: httpx.Request) -> httpx.Response:
        called.set()
        await release.wait()
        return httpx.Response(200, json=MODELS_BODY)

    route = upstream.get("/models").mock(side_effect=slow_models)

    pending = [asyncio.create_task(client.get("/models")) for _ in range(25)]
    # The call crossed a socket: by now every request (all in this process) reached the miss.
    await asyncio.wait_for(called.wait(), 10)
    release.set()
    responses = await asyncio.gather(*pending)

    assert [r.status_code for r in responses] == [200] * 25
    assert route.call_count == 1


async def test_model_cache_expires_after_ttl(
    upstream: respx.MockRouter, upstream_server: LoopbackUpstream
) -> None:
    now = [0.0]
    route = upstream.get("/models").respond(json=MODELS_BODY)
    client = openrouter_client(upstream_server.base_url)
    catalog = ModelCatalog(client, ttl_seconds=600, timer=lambda: now[0])
    try:
        await catalog.models()
        now[0] = 599.0
        await catalog.models()
        assert route.call_count == 1
        now[0] = 601.0
        await catalog.models()
        assert route.call_count == 2
    finally:
        await client.aclose()


async def test_failed_model_fetch_is_not_cached(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    route = upstream.get("/models").mock(
        side_effect=[
            httpx.Response(403, json=error_body(403, "banned")),
            httpx.Response(200, json=MODELS_BODY),
        ]
    )

    failed = await client.get("/models")
    recovered = await client.get("/models")

    assert failed.status_code == 403
    assert failed.json()["detail"] == "Upstream returned 403: banned"
    assert recovered.status_code == 200
    assert route.call_count == 2


async def test_models_with_malformed_upstream_body_is_502(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.get("/models").respond(json={"models": "nope"})

    response = await client.get("/models")

    assert response.status_code == 502
    assert response.json()["error"] == "UpstreamInvalidResponseError"
    assert response.json()["detail"] == "Upstream model list is not valid JSON"


async def test_health_names_the_upstream_host(
    client: httpx.AsyncClient, upstream_server: LoopbackUpstream
) -> None:
    response = await client.get("/health")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "upstream": f"127.0.0.1:{upstream_server.port}",
        "transport": "wire",
        "proxy": None,
        "jobs": {"backend": "files"},
    }


# id, prompt price, completion price, free
PRICINGS = [
    ("acme/both-zero", "0", "0", True),
    ("acme/both-zero-decimal", "0.0", "0.000", True),
    ("acme/prompt-free-only", "0", "0.000002", False),
    ("acme/completion-free-only", "0.000001", "0", False),
    ("acme/both-priced", "0.000001", "0.000002", False),
    ("acme/priced-but-named:free", "0.000001", "0.000002", True),
    ("acme/free-in-the-middle:free-ish", "0.000001", "0.000002", False),
    ("acme/unreadable-price", "n/a", "0", False),
]


async def test_a_model_is_free_when_named_free_or_when_both_prices_are_zero(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.get("/models").respond(
        json={
            "data": [
                model_entry(model_id, prompt, completion)
                for model_id, prompt, completion, _ in PRICINGS
            ]
        }
    )

    everything = (await client.get("/models")).json()["models"]
    free = (await client.get("/models", params={"free": "true"})).json()

    assert {model["id"]: model["free"] for model in everything} == {
        model_id: expected for model_id, _, _, expected in PRICINGS
    }
    assert [model["id"] for model in free["models"]] == [
        model_id for model_id, _, _, expected in PRICINGS if expected
    ]
    assert free["count"] == len(free["models"])
