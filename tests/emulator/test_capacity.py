import asyncio
import time

import httpx
import pytest

from src.services.emulator import EmulatorConfig
from src.services.emulator.providers import Capacity

from .helpers import CHAT, chat_body, parse_sse

pytestmark = pytest.mark.anyio

GENERATION = "/api/v1/generation"
TTFT = 0.4


async def _send_at_once(
    client: httpx.AsyncClient, count: int, *, stream: bool
) -> tuple[list[int], list[float]]:
    """`count` requests at once to one provider: record latencies (ms) and client-side
    completion times (s after the first was sent), both sorted."""
    started = time.perf_counter()
    finished: list[float] = []

    async def one(index: int) -> str:
        body = chat_body(
            f"[[emulator:ttft={TTFT}]] queued {index}",
            max_tokens=1,
            stream=stream,
            provider={"only": ["Alpha"]},
        )
        response = await client.post(CHAT, json=body)
        finished.append(time.perf_counter() - started)
        assert response.status_code == 200
        if stream:
            return str(parse_sse(response.text).chunks[0]["id"])
        return str(response.json()["id"])

    ids = await asyncio.gather(*(one(index) for index in range(count)))
    latencies = []
    for generation_id in ids:
        response = await client.get(GENERATION, params={"id": generation_id})
        assert response.status_code == 200
        latencies.append(response.json()["data"]["latency"])
    return sorted(latencies), sorted(finished)


@pytest.mark.parametrize("config", [EmulatorConfig(capacity=2, generation_delay_seconds=0.0)])
@pytest.mark.parametrize("stream", [False, True])
async def test_past_the_capacity_requests_queue_and_their_ttft_includes_it(
    client: httpx.AsyncClient, stream: bool
) -> None:
    latencies, finished = await _send_at_once(client, 4, stream=stream)

    # Two start at once; the other two wait for a whole answer before they start.
    assert finished[1] >= TTFT
    assert finished[2] >= 2 * TTFT
    assert finished[3] >= 2 * TTFT
    # The wait counts in their time to first token: an unqueued one is 1 x TTFT, a queued
    # one 2 x TTFT less the gap between the first arrival and its own.
    assert latencies[0] >= TTFT * 1000 * 0.99
    assert latencies[2] >= 1.25 * TTFT * 1000
    assert latencies[3] >= 1.25 * TTFT * 1000


@pytest.mark.parametrize("config", [EmulatorConfig(capacity=1, generation_delay_seconds=0.0)])
async def test_capacity_is_per_provider(client: httpx.AsyncClient) -> None:
    ttft = 0.5  # long, so that the bound below leaves a loaded machine plenty of room

    async def timed(provider: str) -> int:
        body = chat_body(f"[[emulator:ttft={ttft}]] {provider}", provider={"only": [provider]})
        answer = (await client.post(CHAT, json=body)).json()
        record = await client.get(GENERATION, params={"id": answer["id"]})
        latency: int = record.json()["data"]["latency"]
        return latency

    alpha, beta = await asyncio.gather(timed("Alpha"), timed("Beta"))

    # Different providers do not queue behind each other; a queued one would take 2 x TTFT.
    assert ttft * 1000 <= alpha < 2 * ttft * 1000
    assert ttft * 1000 <= beta < 2 * ttft * 1000


async def test_queued_requests_start_in_arrival_order() -> None:
    capacity = Capacity(1)
    started: list[int] = []
    release = asyncio.Event()

    async def request(index: int) -> None:
        async with capacity.slot("emulator/small", "Alpha"):
            started.append(index)
            await release.wait()

    tasks = [asyncio.create_task(request(index)) for index in range(4)]
    await asyncio.sleep(0)
    for _ in range(20):  # let every task reach the queue
        await asyncio.sleep(0)
    assert started == [0]
    release.set()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)

    assert started == [0, 1, 2, 3]


async def test_a_request_cancelled_in_the_queue_does_not_leak_its_slot() -> None:
    capacity = Capacity(1)
    holder_done = asyncio.Event()

    async def holder() -> None:
        async with capacity.slot("m", "p"):
            await holder_done.wait()

    async def waiter() -> None:
        async with capacity.slot("m", "p"):
            pass

    held = asyncio.create_task(holder())
    await asyncio.sleep(0)
    queued = asyncio.create_task(waiter())
    await asyncio.sleep(0)
    queued.cancel()
    holder_done.set()
    await asyncio.wait_for(held, timeout=10)

    # The slot is free again: a new request gets it at once.
    await asyncio.wait_for(waiter(), timeout=10)
    assert queued.cancelled()


async def test_without_a_capacity_nothing_queues() -> None:
    capacity = Capacity(None)
    inside = 0
    peak = 0

    async def request() -> None:
        nonlocal inside, peak
        async with capacity.slot("m", "p"):
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.wait_for(asyncio.gather(*(request() for _ in range(50))), timeout=10)

    assert peak == 50
