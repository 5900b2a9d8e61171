from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import respx

from src.services.base.client import RetryPolicy
from src.services.benchmarker import service
from src.services.benchmarker.run_utils import (
    BenchmarkJob,
    RequestOptions,
    RequestResult,
    execute_request,
    iter_jobs,
    run_jobs,
)
from src.services.benchmarker.service import BenchmarkPlan, run_benchmark
from src.services.openrouter.client import OpenRouterClient
from tests.conftest import UPSTREAM, completion_body, make_settings

pytestmark = pytest.mark.anyio


def test_jobs_interleave_models_run_by_run() -> None:
    jobs = [(j.run, j.prompt_index, j.model) for j in iter_jobs(["a", "b"], ["p1", "p2"], 2)]

    assert jobs == [
        (1, 1, "a"),
        (1, 1, "b"),
        (1, 2, "a"),
        (1, 2, "b"),
        (2, 1, "a"),
        (2, 1, "b"),
        (2, 2, "a"),
        (2, 2, "b"),
    ]


def done(job: BenchmarkJob) -> RequestResult:
    return RequestResult(
        model=job.model,
        prompt_index=job.prompt_index,
        prompt=job.prompt,
        run=job.run,
        status=200,
        latency_seconds=0.001,
    )


class Tracker:
    """A fake upstream call that records how many run at once."""

    def __init__(self, hang_after: int | None = None) -> None:
        self.in_flight = 0
        self.peak = 0
        self.started: list[BenchmarkJob] = []
        self.hang_after = hang_after
        self.hanging = asyncio.Event()

    async def __call__(self, job: BenchmarkJob) -> RequestResult:
        self.started.append(job)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if self.hang_after is not None and len(self.started) > self.hang_after:
                self.hanging.set()
                await asyncio.sleep(30)
            await asyncio.sleep(0.002)
        finally:
            self.in_flight -= 1
        return done(job)


@pytest.mark.parametrize(("concurrency", "jobs"), [(1, 5), (3, 12), (4, 3)])
async def test_run_jobs_keeps_at_most_concurrency_in_flight(concurrency: int, jobs: int) -> None:
    tracker = Tracker()
    results: list[RequestResult] = []

    await run_jobs(
        iter_jobs(["m"], [f"p{i}" for i in range(jobs)], 1),
        concurrency=concurrency,
        execute=tracker,
        on_result=results.append,
    )

    assert tracker.peak == min(concurrency, jobs)
    assert sorted(r.prompt_index for r in results) == list(range(1, jobs + 1))


async def test_run_jobs_pulls_jobs_lazily() -> None:
    produced = 0

    def jobs() -> Iterator[BenchmarkJob]:
        nonlocal produced
        for index in range(1, 1001):
            produced += 1
            yield BenchmarkJob(model="m", prompt_index=index, prompt="p", run=1)

    tracker = Tracker(hang_after=2)
    task = asyncio.create_task(
        run_jobs(jobs(), concurrency=2, execute=tracker, on_result=lambda _: None)
    )
    await asyncio.wait_for(tracker.hanging.wait(), 5)

    assert produced <= 4  # never the 1000 jobs up front
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_cancelling_run_jobs_cancels_in_flight_and_starts_nothing_new() -> None:
    tracker = Tracker(hang_after=3)
    results: list[RequestResult] = []
    task = asyncio.create_task(
        run_jobs(
            iter_jobs(["m"], ["p"], 50), concurrency=2, execute=tracker, on_result=results.append
        )
    )
    await asyncio.wait_for(tracker.hanging.wait(), 5)
    started = len(tracker.started)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    await asyncio.sleep(0.01)
    assert len(tracker.started) == started
    assert tracker.in_flight == 0
    assert len(results) < started


async def test_an_unexpected_error_in_a_job_propagates_and_stops_the_others() -> None:
    tracker = Tracker()

    async def broken(job: BenchmarkJob) -> RequestResult:
        if job.run == 3:
            raise RuntimeError("bug")
        return await tracker(job)

    with pytest.raises(RuntimeError, match="bug"):
        await run_jobs(
            iter_jobs(["m"], ["p"], 50), concurrency=2, execute=broken, on_result=lambda _: None
        )
    assert tracker.in_flight == 0


@pytest.fixture
async def openrouter(upstream: respx.MockRouter) -> AsyncIterator[OpenRouterClient]:
    async with httpx.AsyncClient(base_url=UPSTREAM + "/") as http:
        yield OpenRouterClient(http, RetryPolicy(attempts=1))


async def test_a_stream_broken_after_its_headers_is_recorded_as_a_failure(
    upstream: respx.MockRouter, openrouter: OpenRouterClient
) -> None:
    async def broken_stream() -> AsyncIterator[bytes]:
        yield b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n'
        raise httpx.ReadError("connection reset")

    upstream.post("/chat/completions").respond(
        200, content=broken_stream(), headers={"content-type": "text/event-stream"}
    )

    result = await execute_request(
        openrouter,
        BenchmarkJob(model="m/x", prompt_index=1, prompt="p", run=1),
        RequestOptions(max_tokens=8, stream=True),
        redact=str,
    )

    assert (result.ok, result.status, result.error_type) == (False, 502, "UpstreamConnectionError")


async def test_cancelled_benchmark_keeps_finished_rows_and_saves_an_interrupted_summary(
    tmp_path: Path, upstream: respx.MockRouter, openrouter: OpenRouterClient
) -> None:
    calls = 0
    hanging = asyncio.Event()

    async def answer(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls > 3:
            hanging.set()
            await asyncio.sleep(30)
        return httpx.Response(200, json=completion_body())

    upstream.post("/chat/completions").mock(side_effect=answer)
    settings = make_settings(tmp_path)
    plan = BenchmarkPlan(
        models=["openai/gpt-4o"],
        prompts=["one", "two"],
        runs=5,
        concurrency=1,
        request=RequestOptions(max_tokens=8, stream=False),
    )

    task = asyncio.create_task(run_benchmark(settings, openrouter, plan))
    await asyncio.wait_for(hanging.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    [json_path] = settings.benchmarks_dir.glob("*.json")
    summary = json.loads(json_path.read_text(encoding="utf-8"))
    assert summary["status"] == "interrupted"
    assert (summary["requests"], summary["finished_requests"]) == (10, 3)
    assert summary["models"][0]["ok"] == 3
    with open(summary["files"]["csv"], newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert [(row["prompt"], row["run"]) for row in rows] == [
        ("one", "1"),
        ("two", "1"),
        ("one", "2"),
    ]
    await asyncio.sleep(0.01)
    assert calls == 4  # nothing new started after the cancellation


async def test_a_bug_during_the_run_still_saves_a_failed_summary(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    openrouter: OpenRouterClient,
) -> None:
    async def broken(*args: object, **kwargs: object) -> RequestResult:
        raise RuntimeError("bug")

    monkeypatch.setattr(service, "execute_request", broken)
    settings = make_settings(tmp_path)
    plan = BenchmarkPlan(
        models=["openai/gpt-4o"],
        prompts=["one"],
        runs=2,
        concurrency=1,
        request=RequestOptions(max_tokens=8, stream=False),
    )

    with pytest.raises(RuntimeError, match="bug"):
        await run_benchmark(settings, openrouter, plan)

    [json_path] = settings.benchmarks_dir.glob("*.json")
    summary = json.loads(json_path.read_text(encoding="utf-8"))
    assert (summary["status"], summary["finished_requests"]) == ("failed", 0)
