from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import cast

import httpx
import pytest
import respx

from src.config import Settings
from src.redaction import Redactor
from src.schemas.benchmarks import BenchmarkSummary, RequestRecord
from src.services.base.timing import now
from src.services.benchmarker.load.plan import BenchmarkJob, BenchmarkPlan
from src.services.benchmarker.load.run_utils import (
    RequestContext,
    execute_request,
    run_closed_loop,
    run_open_loop,
)
from src.services.benchmarker.results.csv_writer import CsvResultWriter
from src.services.benchmarker.runs import execution as runner
from src.services.openrouter.client import OpenRouterClient
from tests.helpers.app import make_settings, openrouter_client
from tests.helpers.concurrency import InFlightBarrier
from tests.helpers.openrouter import (
    HangAfter,
    chunk,
    completion_body,
    error_body,
    sse_response,
)
from tests.helpers.results import plan_of, request_result, run_rows
from tests.helpers.upstream_server import LoopbackUpstream

pytestmark = pytest.mark.anyio


def iter_jobs(models: list[str], prompts: list[str], runs: int) -> Iterator[BenchmarkJob]:
    return plan_of(models, prompts, runs).jobs()


async def run_benchmark(
    settings: Settings, client: OpenRouterClient, plan: BenchmarkPlan
) -> BenchmarkSummary:
    return await runner.run_benchmark(
        client,
        plan,
        "20261127T000000Z_m_0123abcd",
        settings.benchmarks_dir,
        Redactor(settings.secrets()),
    )


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


def done(job: BenchmarkJob) -> RequestRecord:
    return request_result(
        0.001, model=job.model, prompt_index=job.prompt_index, prompt=job.prompt, run=job.run
    )


class Tracker:
    """A fake upstream call that records how many run at once, and can hang after a while."""

    def __init__(self, hang_after: int | None = None, barrier: InFlightBarrier | None = None):
        self.in_flight = 0
        self.started: list[BenchmarkJob] = []
        self.hang_after = hang_after
        self.hanging = asyncio.Event()
        self.barrier = barrier

    async def __call__(self, job: BenchmarkJob, scheduled: float | None) -> RequestRecord:
        self.started.append(job)
        self.in_flight += 1
        try:
            if self.hang_after is not None and len(self.started) > self.hang_after:
                self.hanging.set()
                await asyncio.sleep(30)
            if self.barrier is not None:
                await self.barrier.hold()
            await asyncio.sleep(0)
        finally:
            self.in_flight -= 1
        return done(job)


@pytest.mark.parametrize(("concurrency", "jobs"), [(1, 5), (3, 12), (4, 3)])
async def test_run_jobs_keeps_at_most_concurrency_in_flight(concurrency: int, jobs: int) -> None:
    barrier = InFlightBarrier(limit=concurrency, total=jobs)
    tracker = Tracker(barrier=barrier)
    results: list[RequestRecord] = []

    await run_closed_loop(
        iter_jobs(["m"], [f"p{i}" for i in range(jobs)], 1),
        concurrency=concurrency,
        execute=tracker,
        on_record=results.append,
    )

    assert barrier.peak == min(concurrency, jobs)
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
        run_closed_loop(jobs(), concurrency=2, execute=tracker, on_record=lambda _: None)
    )
    await asyncio.wait_for(tracker.hanging.wait(), 5)

    assert produced <= 4  # never the 1000 jobs up front
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_cancelling_run_jobs_cancels_in_flight_and_starts_nothing_new() -> None:
    tracker = Tracker(hang_after=3)
    results: list[RequestRecord] = []
    task = asyncio.create_task(
        run_closed_loop(
            iter_jobs(["m"], ["p"], 50), concurrency=2, execute=tracker, on_record=results.append
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

    async def broken(job: BenchmarkJob, scheduled: float | None) -> RequestRecord:
        if job.run == 3:
            raise RuntimeError("bug")
        return await tracker(job, scheduled)

    with pytest.raises(RuntimeError, match="bug"):
        await run_closed_loop(
            iter_jobs(["m"], ["p"], 50), concurrency=2, execute=broken, on_record=lambda _: None
        )
    assert tracker.in_flight == 0


class Sends:
    """A fake upstream call for the open loop: when each job was sent and for when it was due."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, float, float]] = []  # prompt index, due, sent

    async def __call__(self, job: BenchmarkJob, scheduled: float | None) -> RequestRecord:
        assert scheduled is not None
        self.sent.append((job.prompt_index, scheduled, now()))
        await asyncio.sleep(0)
        return done(job)


def numbered_jobs() -> Iterator[BenchmarkJob]:
    for index in itertools.count(1):
        yield BenchmarkJob(model="m", prompt_index=index, prompt="p", run=1)


async def test_the_open_loop_sends_each_job_at_its_offset_never_before() -> None:
    sends = Sends()
    results: list[RequestRecord] = []
    offsets = [0.0, 0.02, 0.04, 0.06, 0.08]

    last = await run_open_loop(
        iter_jobs(["m"], [f"p{i}" for i in range(5)], 1),
        iter(offsets),
        concurrency=5,
        execute=sends,
        on_record=results.append,
    )

    assert [index for index, _, _ in sends.sent] == [1, 2, 3, 4, 5]
    first_due = sends.sent[0][1]
    assert [due - first_due for _, due, _ in sends.sent] == pytest.approx(offsets, abs=1e-9)
    assert all(sent >= due for _, due, sent in sends.sent)
    assert last is not None and offsets[-1] <= last < offsets[-1] + 30
    assert sorted(r.prompt_index for r in results) == [1, 2, 3, 4, 5]


async def test_the_open_loop_stops_sending_after_its_duration() -> None:
    sends = Sends()

    await run_open_loop(
        numbered_jobs(),
        (index / 100 for index in itertools.count()),
        concurrency=10,
        execute=sends,
        on_record=lambda _: None,
        duration=0.05,
    )

    assert [index for index, _, _ in sends.sent] == [1, 2, 3, 4, 5, 6]  # offsets 0 to 0.05


async def test_an_open_loop_without_jobs_sends_nothing() -> None:
    sends = Sends()

    last = await run_open_loop(
        iter([]), iter([0.0]), concurrency=1, execute=sends, on_record=lambda _: None
    )

    assert (last, sends.sent) == (None, [])


async def test_the_open_loop_keeps_at_most_concurrency_in_flight() -> None:
    barrier = InFlightBarrier(limit=2, total=6)
    results: list[RequestRecord] = []

    await run_open_loop(
        iter_jobs(["m"], [f"p{i}" for i in range(6)], 1),
        itertools.repeat(0.0),
        concurrency=2,
        execute=Tracker(barrier=barrier),
        on_record=results.append,
    )

    assert barrier.peak == 2
    assert len(results) == 6


async def test_an_error_in_an_open_loop_job_propagates_and_cancels_the_others() -> None:
    tracker = Tracker(hang_after=2)  # the jobs after the failing one never finish by themselves

    async def broken(job: BenchmarkJob, scheduled: float | None) -> RequestRecord:
        if job.prompt_index == 3:
            raise RuntimeError("bug")
        return await tracker(job, scheduled)

    with pytest.raises(RuntimeError, match="bug"):
        await asyncio.wait_for(
            run_open_loop(
                iter_jobs(["m"], [f"p{i}" for i in range(5)], 1),
                itertools.repeat(0.0),
                concurrency=5,
                execute=broken,
                on_record=lambda _: None,
            ),
            10,
        )
    assert len(tracker.started) == 4
    assert tracker.in_flight == 0


async def test_cancelling_the_open_loop_waits_for_its_requests_to_wind_down() -> None:
    in_flight = 0
    started = asyncio.Event()

    async def slow_to_stop(job: BenchmarkJob, scheduled: float | None) -> RequestRecord:
        nonlocal in_flight
        in_flight += 1
        started.set()
        try:
            await asyncio.sleep(30)
        finally:
            await asyncio.sleep(0.01)  # closing a connection takes a moment
            in_flight -= 1
        return done(job)

    task = asyncio.create_task(
        run_open_loop(
            iter_jobs(["m"], ["p"], 4),  # the fourth waits for a slot when cancelled
            itertools.repeat(0.0),
            concurrency=3,
            execute=slow_to_stop,
            on_record=lambda _: None,
        )
    )
    await asyncio.wait_for(started.wait(), 5)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert in_flight == 0


async def test_an_error_in_the_closed_loop_waits_for_the_other_requests_to_wind_down() -> None:
    in_flight = 0
    started = asyncio.Event()

    async def one_breaks(job: BenchmarkJob, scheduled: float | None) -> RequestRecord:
        nonlocal in_flight
        if job.run == 2:
            await asyncio.wait_for(started.wait(), 5)
            raise RuntimeError("bug")
        in_flight += 1
        started.set()
        try:
            await asyncio.sleep(30)
        finally:
            await asyncio.sleep(0.01)  # closing a connection takes a moment
            in_flight -= 1
        return done(job)

    with pytest.raises(RuntimeError, match="bug"):
        await asyncio.wait_for(
            run_closed_loop(
                iter_jobs(["m"], ["p"], 2),
                concurrency=2,
                execute=one_breaks,
                on_record=lambda _: None,
            ),
            10,
        )
    assert in_flight == 0


async def test_cancelling_the_open_loop_cancels_its_requests() -> None:
    tracker = Tracker(hang_after=2)
    # A bounded list: were every send to fail at once, an endless one due at once would keep
    # the loop busy and this test could only fail by hanging.
    task = asyncio.create_task(
        run_open_loop(
            iter_jobs(["m"], ["p"], 50),
            itertools.repeat(0.0),
            concurrency=3,
            execute=tracker,
            on_record=lambda _: None,
        )
    )
    await asyncio.wait_for(tracker.hanging.wait(), 5)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert tracker.in_flight == 0


@pytest.fixture
async def openrouter(upstream_server: LoopbackUpstream) -> AsyncIterator[OpenRouterClient]:
    client = openrouter_client(upstream_server.base_url)
    yield client
    await client.aclose()


async def test_a_stream_broken_after_its_headers_is_recorded_as_a_failure(
    upstream: respx.MockRouter, openrouter: OpenRouterClient
) -> None:
    async def broken_stream() -> AsyncIterator[bytes]:
        yield chunk("Hi")
        raise httpx.ReadError("connection reset")  # the upstream drops the connection here

    upstream.post("/chat/completions").respond(
        200, content=broken_stream(), headers={"content-type": "text/event-stream"}
    )

    result = await execute_request(
        RequestContext(openrouter, plan_of(["m/x"], ["p"], stream=True), redact=str),
        BenchmarkJob(model="m/x", prompt_index=1, prompt="p", run=1),
        None,
    )

    assert (result.ok, result.status, result.error_type) == (False, 502, "UpstreamConnectionError")
    assert result.error is not None and "broke mid-answer" in result.error


async def test_a_failed_request_is_a_complete_record_of_nothing_but_its_error(
    upstream_server: LoopbackUpstream,
    upstream: respx.MockRouter,
    retry_waits: list[float],
    caplog: pytest.LogCaptureFixture,
) -> None:
    upstream.post("/chat/completions").respond(503, json=error_body(503, "overloaded s3cr3t"))
    client = openrouter_client(upstream_server.base_url, attempts=3)
    context = RequestContext(
        client, plan_of(["m/x"], ["p"]), redact=lambda text: text.replace("s3cr3t", "***")
    )
    due = now() - 1.0  # an open-loop request sent a second late

    try:
        with caplog.at_level(logging.INFO):
            record = await execute_request(
                context, BenchmarkJob(model="m/x", prompt_index=2, prompt="p", run=3), due
            )
    finally:
        await client.aclose()

    fields = record.model_dump()
    timings = {
        name: fields.pop(name)
        for name in (
            "latency_seconds",
            "total_seconds",
            "send_lag_seconds",
            "scheduled_latency_seconds",
            "error",
        )
    }
    assert fields == {
        "text": "",
        "model": "m/x",
        "finish_reason": None,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "tokens_used": 0,
        "ttft_seconds": None,
        "attempts": 3,
        "cost": None,
        "prompt_index": 2,
        "prompt": "p",
        "run": 3,
        "turn": 1,
        "status": 502,
        "error_type": "UpstreamStatusError",
        "warmup": False,
        "itl": [],
        "cost_source": None,
        "usage_problem": None,
        "pinned_provider": None,
        "provider": None,
        "generation_id": None,
        "generation": None,
        "generation_record": None,
        "step": None,
    }
    assert "overloaded ***" in timings["error"] and "s3cr3t" not in timings["error"]
    assert timings["send_lag_seconds"] >= 1.0
    assert timings["scheduled_latency_seconds"] >= timings["send_lag_seconds"]
    assert timings["total_seconds"] >= timings["latency_seconds"] >= 0
    failure = [r.getMessage() for r in caplog.records if "BENCHMARK REQUEST FAILED" in r.msg]
    assert len(failure) == 1
    assert failure[0].startswith("BENCHMARK REQUEST FAILED | model=m/x | run=3 | ")
    assert "overloaded" in failure[0]


async def test_a_streamed_success_is_recorded_with_its_gaps_and_without_its_text(
    upstream: respx.MockRouter, openrouter: OpenRouterClient
) -> None:
    route = upstream.post("/chat/completions").mock(return_value=sse_response(model="m/x"))
    due = now()

    record = await execute_request(
        RequestContext(openrouter, plan_of(["m/x"], ["p"], stream=True), redact=str),
        BenchmarkJob(model="m/x", prompt_index=1, prompt="p", run=1),
        due,
    )

    assert (record.ok, record.status, record.text, record.error) == (True, 200, "", None)
    sent = json.loads(route.calls.last.request.content)
    assert (sent["model"], sent["messages"][-1]["content"]) == ("m/x", "p")
    assert record.completion_tokens > 0 and record.ttft_seconds is not None
    assert len(record.itl) == 2  # three pieces of content, two gaps
    assert all(0 <= gap < 5 for gap in record.itl)
    # Sent on time: no lag to speak of, and the latency counts from the due time.
    assert record.send_lag_seconds is not None and 0 <= record.send_lag_seconds < 1.0
    assert record.scheduled_latency_seconds is not None
    assert record.latency_seconds <= record.scheduled_latency_seconds < 30


async def test_a_plain_success_names_the_jobs_model_upstream_and_keeps_no_text(
    upstream: respx.MockRouter, openrouter: OpenRouterClient
) -> None:
    route = upstream.post("/chat/completions").respond(json=completion_body(model="m/x"))

    record = await execute_request(
        RequestContext(openrouter, plan_of(["m/x"], ["p"], stream=False), redact=str),
        BenchmarkJob(model="m/x", prompt_index=1, prompt="p", run=1),
        None,
    )

    sent = json.loads(route.calls.last.request.content)
    assert (sent["model"], sent["messages"][-1]["content"]) == ("m/x", "p")
    assert (record.ok, record.text, record.itl, record.send_lag_seconds) == (True, "", [], None)


async def test_a_failure_without_retries_records_one_attempt(
    upstream: respx.MockRouter, openrouter: OpenRouterClient
) -> None:
    upstream.post("/chat/completions").respond(400, json=error_body(400, "bad request"))

    record = await execute_request(
        RequestContext(openrouter, plan_of(["m/x"], ["p"], stream=False), redact=str),
        BenchmarkJob(model="m/x", prompt_index=1, prompt="p", run=1),
        None,
    )

    assert (record.ok, record.attempts) == (False, 1)


async def test_a_stream_that_ends_without_its_result_is_a_recorded_failure() -> None:
    class EndsEarly:
        def stream(self, *args: object) -> AsyncIterator[object]:
            async def items() -> AsyncIterator[object]:
                for _ in ():
                    yield None

            return items()

    record = await execute_request(
        RequestContext(
            cast(OpenRouterClient, EndsEarly()), plan_of(["m/x"], ["p"], stream=True), redact=str
        ),
        BenchmarkJob(model="m/x", prompt_index=1, prompt="p", run=1),
        None,
    )

    assert (record.status, record.error_type, record.error) == (
        502,
        "UpstreamInvalidResponseError",
        "Upstream stream ended without a final item",
    )


async def test_cancelled_benchmark_keeps_finished_rows_and_saves_an_interrupted_summary(
    tmp_path: Path, upstream: respx.MockRouter, openrouter: OpenRouterClient
) -> None:
    answer = HangAfter(3, lambda: httpx.Response(200, json=completion_body()))
    upstream.post("/chat/completions").mock(side_effect=answer)
    settings = make_settings(tmp_path)
    plan = plan_of(["openai/gpt-4o"], ["one", "two"], 5, stream=False)

    task = asyncio.create_task(run_benchmark(settings, openrouter, plan))
    await asyncio.wait_for(answer.hanging.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    [json_path] = settings.benchmarks_dir.glob("*.json")
    summary = json.loads(json_path.read_text(encoding="utf-8"))
    assert summary["status"] == "interrupted"
    assert (summary["requests"], summary["finished_requests"]) == (10, 3)
    assert summary["models"][0]["ok"] == 3
    rows = run_rows(settings.benchmarks_dir, summary)
    assert [(row["prompt"], row["run"]) for row in rows] == [
        ("one", "1"),
        ("two", "1"),
        ("one", "2"),
    ]
    assert answer.calls == 4  # nothing new started after the cancellation


async def test_a_bug_during_the_run_still_saves_a_failed_summary(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    openrouter: OpenRouterClient,
) -> None:
    async def broken(*args: object, **kwargs: object) -> RequestRecord:
        raise RuntimeError("bug")

    monkeypatch.setattr(runner, "execute_request", broken)
    settings = make_settings(tmp_path)
    plan = plan_of(["openai/gpt-4o"], ["one"], 2, stream=False)

    with pytest.raises(RuntimeError, match="bug"):
        await run_benchmark(settings, openrouter, plan)

    [json_path] = settings.benchmarks_dir.glob("*.json")
    summary = json.loads(json_path.read_text(encoding="utf-8"))
    assert (summary["status"], summary["finished_requests"]) == ("failed", 0)


class SlowDisk:
    """Holds every CSV write in its thread until released, and tells when the run saves."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.saving = asyncio.Event()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        slow_disk = self

        class SlowWriter(CsvResultWriter):
            def _write(self, rows: list[list[str]]) -> None:
                assert slow_disk.release.wait(30), "the slow disk was never released"
                super()._write(rows)

            async def close(self) -> None:
                slow_disk.saving.set()
                await super().close()

        monkeypatch.setattr(runner, "CsvResultWriter", SlowWriter)


async def test_a_second_cancellation_during_the_save_still_leaves_every_row_and_the_summary(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    upstream: respx.MockRouter,
    openrouter: OpenRouterClient,
) -> None:
    answer = HangAfter(3, lambda: httpx.Response(200, json=completion_body()))
    upstream.post("/chat/completions").mock(side_effect=answer)
    disk = SlowDisk()
    disk.install(monkeypatch)
    settings = make_settings(tmp_path)
    plan = plan_of(["openai/gpt-4o"], ["one", "two"], 5, stream=False)

    task = asyncio.create_task(run_benchmark(settings, openrouter, plan))
    try:
        await asyncio.wait_for(answer.hanging.wait(), 10)
        task.cancel()  # the caller leaves: three rows are measured, none is on disk yet
        await asyncio.wait_for(disk.saving.wait(), 10)
        task.cancel()  # and the server stops while the run is saving them
        # The run ends only once its files are saved: a runner process that returned at once
        # would lose them with its event loop.
        ended_early, _ = await asyncio.wait({task}, timeout=1.0)
        assert not ended_early, "the run returned before its files were saved"
        disk.release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        disk.release.set()

    def saved() -> bool:
        # The summary is linked into place, and no temporary file is left.
        names = [path.name for path in settings.benchmarks_dir.iterdir()]
        return any(name.endswith(".json") for name in names) and not any(
            name.endswith(".partial") for name in names
        )

    assert saved(), sorted(path.name for path in settings.benchmarks_dir.iterdir())
    [json_path] = settings.benchmarks_dir.glob("*.json")
    summary = json.loads(json_path.read_text(encoding="utf-8"))
    assert summary["status"] == "interrupted"
    assert (summary["requests"], summary["finished_requests"]) == (10, 3)
    rows = run_rows(settings.benchmarks_dir, summary)
    assert [(row["prompt"], row["run"]) for row in rows] == [
        ("one", "1"),
        ("two", "1"),
        ("one", "2"),
    ]
