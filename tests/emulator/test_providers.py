import time
from typing import Any

import httpx
import orjson
import pytest

from src.services.emulator import MODELS, MODELS_BY_ID, EmulatorConfig, serve_embedded_emulator
from src.services.emulator.providers import provider_speed
from src.services.emulator.scenarios import Scenario, ScenarioError, parse_scenario

from .helpers import AUTH, CHAT, chat_body, parse_sse

pytestmark = pytest.mark.anyio

SMALL = MODELS_BY_ID["emulator/small"]


async def _providers_of(
    client: httpx.AsyncClient, count: int, model: str = "emulator/small", **extra: Any
) -> list[str]:
    served = []
    for index in range(count):
        response = await client.post(
            CHAT, json=chat_body(f"request {index}", model=model, max_tokens=2, **extra)
        )
        assert response.status_code == 200, response.text
        served.append(response.json()["provider"])
    return served


def test_every_model_has_two_or_three_providers_with_their_own_figures() -> None:
    for model in MODELS:
        names = [provider.name for provider in model.providers]
        assert 2 <= len(names) <= 3, model.id
        assert len(set(names)) == len(names)
        # The first serves at the model's listed price, so `GET /models` stays true.
        assert model.providers[0].prompt_price == model.prompt_price
        assert model.providers[0].completion_price == model.completion_price
    speeds = {(p.ttft_factor, p.throughput_factor) for p in SMALL.providers}
    prices = {(p.prompt_price, p.completion_price) for p in SMALL.providers}
    quantizations = {p.quantization for p in SMALL.providers}
    assert len(speeds) == len(prices) == len(quantizations) == 3


def test_provider_speed_scales_the_base_latency_exactly() -> None:
    config = EmulatorConfig(ttft_seconds=0.4, tokens_per_second=50.0)
    large = MODELS_BY_ID["emulator/large"]
    beta = next(p for p in large.providers if p.name == "Beta")

    speed = provider_speed(config, large, beta)

    assert speed.ttft_seconds == 0.4 * 2.5 * 1.5
    assert speed.tokens_per_second == 50.0 / 2.5 * 0.8


async def test_answers_and_every_chunk_name_the_provider_and_generation_id(
    client: httpx.AsyncClient,
) -> None:
    pinned = {"only": ["Gamma"]}
    plain = (await client.post(CHAT, json=chat_body(provider=pinned))).json()
    streamed = await client.post(CHAT, json=chat_body(stream=True, provider=pinned))

    assert plain["provider"] == "Gamma"
    assert plain["id"].startswith("gen-")
    chunks = parse_sse(streamed.text).chunks
    assert len(chunks) > 3
    assert {chunk["provider"] for chunk in chunks} == {"Gamma"}
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert chunks[0]["id"].startswith("gen-") and chunks[0]["id"] != plain["id"]


async def test_usage_cost_uses_the_serving_providers_price(client: httpx.AsyncClient) -> None:
    beta = next(p for p in SMALL.providers if p.name == "Beta")

    body = (await client.post(CHAT, json=chat_body(provider={"only": ["beta"]}))).json()

    usage = body["usage"]
    assert usage["cost"] == beta.cost(usage["prompt_tokens"], usage["completion_tokens"])
    assert usage["cost"] != SMALL.cost(usage["prompt_tokens"], usage["completion_tokens"])


async def test_without_preferences_requests_rotate_over_the_providers(
    client: httpx.AsyncClient,
) -> None:
    assert await _providers_of(client, 6) == ["Alpha", "Beta", "Gamma"] * 2
    assert await _providers_of(client, 4, model="emulator/medium") == ["Alpha", "Beta"] * 2


async def test_the_same_prompt_gives_the_same_text_whichever_provider_serves(
    client: httpx.AsyncClient,
) -> None:
    answers = [(await client.post(CHAT, json=chat_body("same"))).json() for _ in range(3)]

    assert {answer["provider"] for answer in answers} == {"Alpha", "Beta", "Gamma"}
    assert len({answer["choices"][0]["message"]["content"] for answer in answers}) == 1


@pytest.mark.parametrize(
    ("preferences", "expected"),
    [
        ({"only": ["Gamma"]}, ["Gamma"] * 3),
        ({"only": ["ALPHA", "gamma"]}, ["Alpha", "Gamma", "Alpha"]),
        ({"ignore": ["alpha"]}, ["Beta", "Gamma", "Beta"]),
        ({"order": ["Gamma", "Beta"]}, ["Gamma"] * 3),
        ({"sort": "price"}, ["Beta"] * 3),
        ({"sort": "throughput"}, ["Gamma"] * 3),
        ({"sort": "latency"}, ["Gamma"] * 3),
        ({"sort": {"by": "price"}}, ["Beta"] * 3),
        ({"ignore": ["Beta"], "sort": "price"}, ["Alpha"] * 3),
        ({"allow_fallbacks": False}, ["Alpha", "Beta", "Gamma"]),
    ],
)
async def test_provider_preferences_choose_the_provider(
    client: httpx.AsyncClient, preferences: dict[str, Any], expected: list[str]
) -> None:
    assert await _providers_of(client, 3, provider=preferences) == expected


@pytest.mark.parametrize(
    "preferences",
    [
        {"only": ["Nobody"]},
        {"ignore": ["Alpha", "Beta", "Gamma"]},
        {"only": ["Alpha"], "ignore": ["Alpha"]},
        {"order": ["Nobody"], "allow_fallbacks": False},
    ],
)
async def test_nothing_left_to_route_to_is_openrouters_404(
    client: httpx.AsyncClient, preferences: dict[str, Any]
) -> None:
    response = await client.post(CHAT, json=chat_body(provider=preferences))

    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "code": 404,
            "message": "No allowed providers are available for the selected model.",
        }
    }


@pytest.mark.parametrize(
    "provider",
    [
        "Alpha",
        {"only": "Alpha"},
        {"order": [1]},
        {"allow_fallbacks": "no"},
        {"sort": "cheapest"},
    ],
)
async def test_a_malformed_provider_object_is_a_400(
    client: httpx.AsyncClient, provider: object
) -> None:
    response = await client.post(CHAT, json=chat_body(provider=provider))

    assert response.status_code == 400
    assert "provider" in response.json()["error"]["message"]


@pytest.mark.parametrize("config", [EmulatorConfig(failing_providers=frozenset({"Beta"}))])
async def test_a_failing_provider_falls_back_to_the_next_one(client: httpx.AsyncClient) -> None:
    # The rotation's Beta turn falls back to Gamma, which follows it.
    assert await _providers_of(client, 3) == ["Alpha", "Gamma", "Gamma"]
    assert await _providers_of(client, 2, provider={"order": ["Beta", "Alpha"]}) == ["Alpha"] * 2


@pytest.mark.parametrize("config", [EmulatorConfig(failing_providers=frozenset({"beta"}))])
@pytest.mark.parametrize(
    "preferences",
    [
        {"only": ["Beta"], "allow_fallbacks": False},
        {"only": ["Beta"]},
        {"order": ["Beta"], "allow_fallbacks": False},
    ],
)
async def test_a_failing_provider_without_fallbacks_is_openrouters_upstream_error(
    client: httpx.AsyncClient, preferences: dict[str, Any]
) -> None:
    response = await client.post(CHAT, json=chat_body(stream=True, provider=preferences))

    assert response.status_code == 502
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "error": {
            "code": 502,
            "message": "Provider returned error",
            "metadata": {
                "provider_name": "Beta",
                "raw": "Upstream provider is unavailable (emulated)",
            },
        }
    }


async def test_the_fail_provider_directive_fails_a_provider_for_one_request(
    client: httpx.AsyncClient,
) -> None:
    order = {"order": ["Alpha", "Beta", "Gamma"]}
    served = await client.post(
        CHAT, json=chat_body("[[emulator:fail_provider=alpha]] hi", provider=order)
    )
    both = await client.post(
        CHAT,
        json=chat_body("[[emulator:fail_provider=Alpha,fail_provider=Beta]] hi", provider=order),
    )
    refused = await client.post(
        CHAT,
        json=chat_body("hi", provider={"only": ["Alpha"], "allow_fallbacks": False}),
        headers={"X-Emulator-Scenario": "fail_provider=Alpha"},
    )
    healthy = await client.post(CHAT, json=chat_body("hi", provider=order))

    assert served.json()["provider"] == "Beta"
    assert both.json()["provider"] == "Gamma"
    assert refused.status_code == 502
    assert refused.json()["error"]["metadata"]["provider_name"] == "Alpha"
    assert healthy.json()["provider"] == "Alpha"


async def _stream_timings(
    base_url: str, provider: str, max_tokens: int
) -> tuple[float, list[float]]:
    """Seconds to the first token, then each token's arrival, as a client sees them."""
    arrivals: list[float] = []
    body = chat_body(
        f"speed of {provider}", stream=True, max_tokens=max_tokens, provider={"only": [provider]}
    )
    async with httpx.AsyncClient(base_url=base_url, headers=AUTH, timeout=30) as client:
        started = time.perf_counter()
        async with client.stream("POST", "/chat/completions", json=body) as response:
            async for line in response.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                chunk = orjson.loads(line[len("data: ") :])
                if chunk["choices"] and chunk["choices"][0]["finish_reason"] is None:
                    assert chunk["provider"] == provider
                    arrivals.append(time.perf_counter())
    assert len(arrivals) == max_tokens
    return arrivals[0] - started, arrivals


@pytest.mark.parametrize("provider", ["Alpha", "Beta", "Gamma"])
async def test_a_pinned_provider_streams_at_its_configured_speed(provider: str) -> None:
    config = EmulatorConfig(ttft_seconds=0.5, tokens_per_second=20.0)
    speed = provider_speed(config, SMALL, next(p for p in SMALL.providers if p.name == provider))
    async with serve_embedded_emulator(config) as base_url:
        ttft, arrivals = await _stream_timings(base_url, provider, max_tokens=9)

    decode = arrivals[-1] - arrivals[0]
    expected_decode = (len(arrivals) - 1) / speed.tokens_per_second
    # Sleeps never end early, so the lower bounds are tight; the upper ones allow 5% plus a
    # scheduling allowance for a loaded machine.
    assert speed.ttft_seconds * 0.99 <= ttft <= speed.ttft_seconds * 1.05 + 0.1
    assert expected_decode * 0.99 <= decode <= expected_decode * 1.05 + 0.1


def test_fail_provider_directives_add_up_and_need_a_name() -> None:
    assert parse_scenario("fail_provider=Beta, fail_provider=gamma") == Scenario(
        failing_providers=frozenset({"beta", "gamma"})
    )
    with pytest.raises(ScenarioError):
        parse_scenario("fail_provider=")
