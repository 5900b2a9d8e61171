import asyncio
import gc
import time
from typing import Any

import httpx
import pytest

from src.services.emulator import EmulatorConfig
from src.services.emulator.generations import GenerationRecord, GenerationStore

from .helpers import CHAT, chat_body, parse_sse

pytestmark = pytest.mark.anyio

GENERATION = "/api/v1/generation"
IMMEDIATE = EmulatorConfig(generation_delay_seconds=0.0)


async def _record(client: httpx.AsyncClient, generation_id: str) -> dict[str, Any]:
    response = await client.get(GENERATION, params={"id": generation_id})
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


@pytest.mark.parametrize("config", [IMMEDIATE])
async def test_a_finished_generation_has_openrouters_record(client: httpx.AsyncClient) -> None:
    answer = (
        await client.post(CHAT, json=chat_body(max_tokens=5, provider={"only": ["Gamma"]}))
    ).json()

    record = await _record(client, answer["id"])

    usage = answer["usage"]
    assert record["id"] == answer["id"]
    assert record["model"] == "emulator/small"
    assert record["provider_name"] == "Gamma"
    assert record["streamed"] is False
    assert record["cancelled"] is False
    assert record["finish_reason"] == record["native_finish_reason"] == "length"
    assert record["native_tokens_prompt"] == record["tokens_prompt"] == usage["prompt_tokens"]
    assert record["native_tokens_completion"] == record["tokens_completion"] == 5
    assert record["total_cost"] == record["usage"] == usage["cost"]
    assert isinstance(record["latency"], int) and isinstance(record["generation_time"], int)
    assert record["created_at"].endswith("+00:00")


@pytest.mark.parametrize("config", [IMMEDIATE])
async def test_a_streamed_generation_is_recorded_with_its_provider(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(CHAT, json=chat_body(stream=True))
    first = parse_sse(response.text).chunks[0]

    record = await _record(client, first["id"])

    assert record["streamed"] is True
    assert record["provider_name"] == first["provider"]
    assert record["finish_reason"] == "stop"


@pytest.mark.parametrize(
    "config", [EmulatorConfig(generation_delay_seconds=0.0, ttft_seconds=0.05)]
)
async def test_the_record_latency_is_the_time_to_the_first_token(
    client: httpx.AsyncClient,
) -> None:
    answer = (
        await client.post(CHAT, json=chat_body(max_tokens=1, provider={"only": ["Beta"]}))
    ).json()

    record = await _record(client, answer["id"])

    # Beta's TTFT is 1.5 times the configured one.
    assert record["latency"] >= 75


@pytest.mark.parametrize("config", [EmulatorConfig(generation_delay_seconds=0.2)])
async def test_a_record_appears_only_after_the_configured_delay(
    client: httpx.AsyncClient,
) -> None:
    answer = (await client.post(CHAT, json=chat_body())).json()
    params = {"id": answer["id"]}
    checked = time.monotonic()

    early = await client.get(GENERATION, params=params)
    later = early
    deadline = time.monotonic() + 10
    while later.status_code == 404 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        later = await client.get(GENERATION, params=params)

    if time.monotonic() - checked < 0.2:  # only meaningful when the first look was early
        assert early.status_code == 404
    assert later.status_code == 200
    assert later.json()["data"]["id"] == answer["id"]


async def test_the_default_delay_hides_a_fresh_generation(client: httpx.AsyncClient) -> None:
    answer = (await client.post(CHAT, json=chat_body())).json()

    response = await client.get(GENERATION, params={"id": answer["id"]})

    assert response.status_code == 404
    assert response.json() == {"error": {"code": 404, "message": "Generation not found"}}


@pytest.mark.parametrize("config", [IMMEDIATE])
async def test_unknown_or_missing_ids_and_missing_keys(client: httpx.AsyncClient) -> None:
    unknown = await client.get(GENERATION, params={"id": "gen-nope"})
    missing = await client.get(GENERATION)
    unauthenticated = await client.get(
        GENERATION, params={"id": "gen-nope"}, headers={"Authorization": ""}
    )

    assert unknown.status_code == 404
    assert missing.status_code == 400
    assert unauthenticated.status_code == 401


def _record_with(generation_id: str) -> GenerationRecord:
    return GenerationRecord(
        id=generation_id,
        model="emulator/small",
        provider_name="Alpha",
        created=0.0,
        streamed=False,
        latency=0.001,
        generation_time=0.001,
        prompt_tokens=1,
        completion_tokens=1,
        total_cost=0.0,
        finish_reason="stop",
    )


def test_the_store_keeps_only_the_newest_records() -> None:
    store = GenerationStore(delay_seconds=0.0, max_records=2)
    for name in ("gen-1", "gen-2", "gen-3"):
        store.add(_record_with(name), ended=0.0)

    assert store.get("gen-1", now=1.0) is None
    assert store.get("gen-2", now=1.0) is not None
    assert store.get("gen-3", now=1.0) is not None


def test_the_store_hides_a_record_until_its_delay_has_passed() -> None:
    store = GenerationStore(delay_seconds=2.0)
    store.add(_record_with("gen-1"), ended=10.0)

    assert store.get("gen-1", now=11.9) is None
    assert store.get("gen-1", now=12.0) is not None


def test_a_full_store_leaves_the_collector_nothing_to_walk() -> None:
    """A full collection walks every tracked object; a store of objects would be a pause
    inside the answers in flight, which the emulator promises to time exactly."""
    store = GenerationStore(delay_seconds=0.0, max_records=5_000)
    gc.collect()
    before = len(gc.get_objects())
    for number in range(5_000):
        store.add(_record_with(f"gen-{number}"), ended=0.0)
    gc.collect()

    assert len(gc.get_objects()) - before < 1_000
    assert store.get("gen-4999", now=1.0) == _record_with("gen-4999")
