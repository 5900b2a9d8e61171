import time

import httpx
import pytest

from src.services.emulator import EmulatorConfig, streaming

from .helpers import CHAT, chat_body, parse_sse

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("config", [EmulatorConfig(ttft_seconds=0.03)])
async def test_configured_ttft_delays_a_plain_answer(client: httpx.AsyncClient) -> None:
    started = time.perf_counter()
    response = await client.post(CHAT, json=chat_body(max_tokens=1))
    elapsed = time.perf_counter() - started

    assert response.status_code == 200
    assert elapsed >= 0.03


async def test_ttft_scenario_delays_a_stream(client: httpx.AsyncClient) -> None:
    started = time.perf_counter()
    response = await client.post(
        CHAT,
        json=chat_body(stream=True, max_tokens=2),
        headers={"X-Emulator-Scenario": "delay=0.02"},
    )
    elapsed = time.perf_counter() - started

    stream = parse_sse(response.text)
    assert stream.events[-1] == "[DONE]"
    assert elapsed >= 0.02
    # Shorter than the keep-alive interval: only the leading comment precedes the data.
    assert [kind for kind, _ in stream.blocks[:2]] == ["comment", "data"]


async def test_long_ttft_repeats_the_processing_comment(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streaming, "KEEPALIVE_INTERVAL_SECONDS", 0.01)

    response = await client.post(
        CHAT, json=chat_body("[[emulator:ttft=0.035]]", stream=True, max_tokens=1)
    )

    stream = parse_sse(response.text)
    first_data = next(i for i, (kind, _) in enumerate(stream.blocks) if kind == "data")
    assert stream.blocks[:first_data] == [("comment", ": OPENROUTER PROCESSING")] * 4


async def test_tokens_per_second_paces_the_answer(client: httpx.AsyncClient) -> None:
    # Five tokens at 200/s: four gaps of 5 ms after the first token.
    started = time.perf_counter()
    response = await client.post(CHAT, json=chat_body("[[emulator:tps=200]]", max_tokens=5))
    elapsed = time.perf_counter() - started

    assert response.json()["usage"]["completion_tokens"] == 5
    assert elapsed >= 4 / 200


@pytest.mark.parametrize("config", [EmulatorConfig(ttft_seconds=0.02)])
async def test_larger_models_answer_more_slowly_by_their_latency_factor(
    client: httpx.AsyncClient,
) -> None:
    started = time.perf_counter()
    response = await client.post(CHAT, json={**chat_body(max_tokens=1), "model": "emulator/large"})
    elapsed = time.perf_counter() - started

    assert response.status_code == 200
    assert elapsed >= 0.02 * 2.5
