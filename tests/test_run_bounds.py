"""How long a benchmark run may last: refused at submission when its schedule is past
MAX_RUN_SECONDS, stopped at that bound while it runs, and an ETA that follows the schedule.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from tests.helpers.app import Serve, make_settings
from tests.helpers.benchmarks import post_benchmark
from tests.helpers.errors import assert_error
from tests.helpers.openrouter import MODELS_BODY, sse_response

pytestmark = pytest.mark.anyio

DEADLINE = 30.0


class Hold:
    """An upstream that holds every chat request until the test ends (or the client leaves)."""

    def __init__(self) -> None:
        self.calls = 0
        self.opened = asyncio.Event()
        self.some_held = asyncio.Event()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        self.some_held.set()
        await self.opened.wait()
        return sse_response()


@pytest.fixture
def catalog(upstream: respx.MockRouter) -> respx.Route:
    return upstream.get("/models").respond(json=MODELS_BODY)


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not await condition():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.05)


async def view_of(client: httpx.AsyncClient, benchmark_id: str) -> dict[str, Any]:
    body: dict[str, Any] = (await client.get(f"/benchmarks/{benchmark_id}")).json()
    return body


@pytest.mark.parametrize(
    ("fields", "needles"),
    [
        ({"rate": "1e-9", "runs": 2}, ["rate=1e-09", "MAX_RUN_SECONDS=86400"]),
        ({"rate": "1e-300", "runs": 2}, ["rate=1e-300", "MAX_RUN_SECONDS=86400"]),
        # 2 prompts x 1 run: the second request is sent 100,000 s after the first.
        ({"rate": "0.00001", "runs": 1}, ["MAX_RUN_SECONDS=86400"]),
        ({"rate": "1e-9", "runs": 1, "arrival": "poisson"}, ["MAX_RUN_SECONDS=86400"]),
    ],
)
async def test_a_schedule_longer_than_max_run_seconds_is_422_naming_it(
    tmp_path: Path,
    serve: Serve,
    upstream: respx.MockRouter,
    catalog: respx.Route,
    fields: dict[str, object],
    needles: list[str],
) -> None:
    chat = upstream.post("/chat/completions").mock(return_value=sse_response())
    async with serve(make_settings(tmp_path)) as client:
        response = await post_benchmark(client, query="?background=true", form=fields)
        listed = (await client.get("/benchmarks")).json()

    body = assert_error(response, 422, "LimitExceededError")
    for needle in needles:
        assert needle in body["detail"]
    assert chat.call_count == 0
    assert listed["count"] == 0


async def test_a_duration_longer_than_max_run_seconds_is_422_naming_it(
    tmp_path: Path, serve: Serve, upstream: respx.MockRouter, catalog: respx.Route
) -> None:
    chat = upstream.post("/chat/completions").mock(return_value=sse_response())
    async with serve(make_settings(tmp_path, max_run_seconds=60)) as client:
        response = await post_benchmark(client, duration=120)

    assert_error(response, 422, "LimitExceededError", "MAX_RUN_SECONDS=60")
    assert "duration=120" in response.json()["detail"]
    assert chat.call_count == 0


async def test_a_run_that_can_never_be_admitted_is_422_even_when_no_room_is_left(
    tmp_path: Path, serve: Serve, upstream: respx.MockRouter, catalog: respx.Route
) -> None:
    hold = Hold()
    upstream.post("/chat/completions").mock(side_effect=hold)
    async with serve(make_settings(tmp_path, max_running_benchmarks=1)) as client:
        first = await post_benchmark(client, query="?background=true", runs=1)
        assert first.status_code == 202, first.text
        await asyncio.wait_for(hold.some_held.wait(), DEADLINE)
        endless = await post_benchmark(client, query="?background=true", rate="1e-9", runs=2)
        full = await post_benchmark(client, query="?background=true", runs=1)
        hold.opened.set()

    assert_error(endless, 422, "LimitExceededError", "MAX_RUN_SECONDS=86400")
    assert_error(full, 429, "CapacityError", "MAX_RUNNING_BENCHMARKS=1")


@pytest.mark.parametrize("isolation", ["inline", "process"])
async def test_a_running_run_stops_at_max_run_seconds_and_keeps_what_it_measured(
    tmp_path: Path,
    serve: Serve,
    upstream: respx.MockRouter,
    catalog: respx.Route,
    isolation: str,
) -> None:
    hold = Hold()
    upstream.post("/chat/completions").mock(side_effect=hold)
    settings = make_settings(tmp_path, max_run_seconds=1, benchmark_isolation=isolation)
    # A closed loop has no schedule to check at submission: only the running bound stops it.
    async with serve(settings) as client:
        accepted = await post_benchmark(client, query="?background=true", runs=3)
        assert accepted.status_code == 202, accepted.text
        benchmark_id = accepted.json()["id"]

        async def ended() -> bool:
            return bool((await view_of(client, benchmark_id))["status"] != "running")

        await until(ended, "the run stopped at MAX_RUN_SECONDS")
        summary = await view_of(client, benchmark_id)
        csv = await client.get(f"/benchmarks/{benchmark_id}/results.csv")
        hold.opened.set()

    assert summary["status"] == "interrupted"
    assert summary["finished_requests"] == 0
    assert summary["requests"] == 6
    assert csv.status_code == 200
    assert hold.calls == 1  # the only request ever sent was held, then cancelled


async def test_an_open_loop_runs_eta_follows_its_schedule(
    tmp_path: Path, serve: Serve, upstream: respx.MockRouter, catalog: respx.Route
) -> None:
    upstream.post("/chat/completions").mock(return_value=sse_response())
    # 2 prompts x 1 run at 0.01/s: sent at 0 s and at 100 s.
    async with serve(make_settings(tmp_path)) as client:
        accepted = await post_benchmark(client, query="?background=true", rate="0.01", runs=1)
        assert accepted.status_code == 202, accepted.text
        benchmark_id = accepted.json()["id"]

        async def first_done() -> bool:
            return bool((await view_of(client, benchmark_id))["progress"]["done"] == 1)

        await until(first_done, "the first request recorded")
        progress = (await view_of(client, benchmark_id))["progress"]
        await client.delete(f"/benchmarks/{benchmark_id}")

    # What is left of the schedule, not the time per request so far times the requests left.
    assert progress["eta_seconds"] is not None
    assert 100 - progress["elapsed_seconds"] - 5 <= progress["eta_seconds"] <= 100 + 5
