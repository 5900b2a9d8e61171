"""The Redis run store and its runners' liveness (JOBS_BACKEND=redis), against a real
redis-server: admission, cancel, rows, listing, retention, the dead-runner reaper, pushed
changes, and what the API answers when Redis is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import redis
import respx

from src.config import Settings
from src.runner import RunnerHost, runs_worker
from src.schemas.benchmarks import BenchmarkState, BenchmarkSummary
from src.services.base.exceptions import CapacityError, JobsBackendUnavailableError
from src.services.benchmarker.load.plan import BenchmarkPlan, PlanRecord
from src.services.benchmarker.results.file_utils import new_benchmark_id
from src.services.benchmarker.results.summary import RunClock, RunRecords, build_state
from src.services.benchmarker.runs import execution
from src.services.benchmarker.runs.owners import Caller
from src.services.benchmarker.runs.redis_runners import (
    QUEUE_NAME,
    SAQ_JOB_PREFIX,
    Heartbeat,
    Reaper,
    run_changes,
    saq_queue,
)
from src.services.benchmarker.runs.redis_store import (
    RUNNING,
    RedisRunStore,
    key,
)
from src.services.benchmarker.runs.store import RunCaps
from tests.helpers.app import Serve, make_settings, openrouter_client, running
from tests.helpers.benchmarks import post_benchmark
from tests.helpers.openrouter import MODELS_BODY, completion_body
from tests.helpers.processes import free_port, wait_until
from tests.helpers.results import csv_rows, plan_of, request_result
from tests.helpers.runs import summary_of
from tests.helpers.upstream_server import LoopbackUpstream


def redis_settings(tmp_path: Path, url: str, **overrides: object) -> Settings:
    return make_settings(tmp_path, jobs_backend="redis", redis_url=url, **overrides)


def new_run(plan: BenchmarkPlan, status: str = "running") -> BenchmarkState:
    benchmark_id = new_benchmark_id(datetime.now(UTC), plan.parameters.models)
    clock = RunClock(datetime.now(UTC), 0.0)
    return build_state(RunRecords(benchmark_id, status, plan, [], clock), [])  # type: ignore[arg-type]


def test_admission_is_atomic_for_concurrent_replicas(tmp_path: Path, redis_url: str) -> None:
    # Ten admissions at once, each through its own store (as on ten replicas): four fit.
    plan = plan_of(["m/x"], ["p"], concurrency=2)
    caps = RunCaps(max_running=4, max_in_flight=100)

    def admit(_: int) -> bool:
        try:
            RedisRunStore(redis_url, tmp_path).admit_job(new_run(plan), caps, PlanRecord.of(plan))
        except CapacityError:
            return False
        return True

    with ThreadPoolExecutor(10) as pool:
        admitted = list(pool.map(admit, range(10)))

    assert admitted.count(True) == 4
    assert len(redis.Redis.from_url(redis_url).hkeys(RUNNING)) == 4


def test_the_in_flight_cap_counts_every_running_run(tmp_path: Path, redis_url: str) -> None:
    store = RedisRunStore(redis_url, tmp_path)
    caps = RunCaps(max_running=10, max_in_flight=10)
    store.admit(new_run(plan_of(["m/x"], ["p"], concurrency=6)), caps)

    with pytest.raises(CapacityError, match="hold 6 requests in flight; 5 more would pass"):
        store.admit(new_run(plan_of(["m/x"], ["p"], concurrency=5)), caps)
    with pytest.raises(CapacityError, match="MAX_INFLIGHT_TOTAL=10"):
        store.check_capacity(5, caps)
    store.check_capacity(4, caps)


def test_a_final_state_frees_the_place_and_starts_the_retention(
    tmp_path: Path, redis_url: str
) -> None:
    store = RedisRunStore(redis_url, tmp_path, keep_days=2)
    caps = RunCaps(max_running=1, max_in_flight=100)
    plan = plan_of(["m/x"], ["p"])
    state = new_run(plan)
    store.admit(state, caps)
    with pytest.raises(CapacityError):
        store.admit(new_run(plan), caps)

    store.write_state(state.id, state.model_copy(update={"status": "completed"}))

    store.admit(new_run(plan), caps)
    ttl = redis.Redis.from_url(redis_url).ttl(key(state.id, "state"))
    assert 2 * 86400 - 60 < ttl <= 2 * 86400


def test_rows_written_again_are_kept_once_and_read_back(tmp_path: Path, redis_url: str) -> None:
    store = RedisRunStore(redis_url, tmp_path)
    plan = plan_of(["m/x"], ["p", "q"])
    state = new_run(plan)
    store.admit(state, RunCaps(4, 100))
    rows = [request_result(0.5, prompt="p", prompt_index=1), request_result(0.7, prompt="q")]

    store.add_rows(state.id, 0, rows[:1])
    store.add_rows(state.id, 0, rows)  # the first again, as after an answer that was lost

    text = store.rows_csv(state.id).decode()
    assert text.count("\r\n") == 3  # the header and two rows
    assert [r.latency_seconds for r in store.read_rows(state.id, plan.prompts)] == [0.5, 0.7]
    store.set_rows(state.id, rows[1:])
    assert [r.latency_seconds for r in store.read_rows(state.id, plan.prompts)] == [0.7]


def test_cancel_is_a_mark_any_replica_sets_and_the_runner_clears(
    tmp_path: Path, redis_url: str
) -> None:
    state = new_run(plan_of(["m/x"], ["p"]))
    RedisRunStore(redis_url, tmp_path).admit(state, RunCaps(4, 100))

    RedisRunStore(redis_url, tmp_path / "other").request_cancel(state.id)

    runner = RedisRunStore(redis_url, tmp_path / "runner")
    assert runner.is_cancel_requested(state.id)
    runner.clear_cancel(state.id)
    assert not runner.is_cancel_requested(state.id)


def test_a_listing_shows_a_caller_only_its_own_runs_newest_first(
    tmp_path: Path, redis_url: str
) -> None:
    store = RedisRunStore(redis_url, tmp_path)
    mine = [new_run(plan_of(["m/x"], ["p"], owner=None)) for _ in range(3)]
    for index, state in enumerate(mine):
        store.admit(
            state.model_copy(update={"owner": "me" if index != 1 else "you"}), RunCaps(9, 99)
        )

    listed = store.list_runs(10, Caller(owner="me"))

    assert [item.id for item in listed] == [mine[2].id, mine[0].id]
    assert len(store.list_runs(1, Caller(owner=None, sees_all=True))) == 1


def test_a_run_whose_runner_stopped_beating_ends_failed_with_its_rows(
    tmp_path: Path, redis_url: str
) -> None:
    settings = redis_settings(tmp_path, redis_url, runner_heartbeat_timeout_seconds=1)
    store = RedisRunStore.of(settings)
    plan = plan_of(["m/x"], ["p", "q", "r"])
    state = new_run(plan)
    store.admit_job(state, RunCaps.of(settings), PlanRecord.of(plan))
    heartbeat = Heartbeat(store, 1.0)
    assert heartbeat.claim(state.id)
    assert not Heartbeat(store, 1.0).claim(state.id)  # one runner per run
    store.add_rows(state.id, 0, [request_result(prompt="p"), request_result(prompt="q")])
    reaper = Reaper(settings)
    assert reaper.dead_runs() == []  # alive, and the reaper has only just connected

    # The runner dies: its key expires, and nobody renews it.
    assert wait_until(lambda: reaper.dead_runs() == [state.id], 5.0)
    reaper.reap(state.id)

    view = store.current_view(state.id)
    assert isinstance(view, BenchmarkSummary)
    assert view.status == "failed"
    assert "stopped showing it is alive" in (view.error or "")
    assert view.finished_requests == 2
    assert not redis.Redis.from_url(redis_url).hexists(RUNNING, state.id)


def test_a_reaper_that_just_lost_redis_waits_a_whole_timeout_before_judging(
    tmp_path: Path, redis_url: str
) -> None:
    settings = redis_settings(tmp_path, redis_url, runner_heartbeat_timeout_seconds=1)
    store = RedisRunStore.of(settings)
    plan = plan_of(["m/x"], ["p"])
    state = new_run(plan)
    store.admit_job(state, RunCaps.of(settings), PlanRecord.of(plan))
    redis.Redis.from_url(redis_url).set(key(state.id, "claimed"), b"gone")
    reaper = Reaper(settings)
    reaper.dead_runs()
    time.sleep(1.1)

    reaper._connected_since = None  # what its loop does on a Redis error
    assert reaper.dead_runs() == []
    assert wait_until(lambda: reaper.dead_runs() == [state.id], 5.0)


@pytest.mark.anyio
async def test_a_state_written_wakes_its_followers_at_once(tmp_path: Path, redis_url: str) -> None:
    settings = redis_settings(tmp_path, redis_url)
    store = RedisRunStore.of(settings)
    state = new_run(plan_of(["m/x"], ["p"]))
    store.admit(state, RunCaps(4, 100))
    ticks = run_changes(settings, state.id)
    await asyncio.wait_for(anext(ticks), 5.0)  # subscribed

    await asyncio.to_thread(store.write_state, state.id, state)

    await asyncio.wait_for(anext(ticks), 1.0)  # well before the 5 s safety tick
    await ticks.aclose()


@pytest.mark.anyio
async def test_an_unreachable_redis_is_a_503_on_new_runs_and_in_health(tmp_path: Path) -> None:
    settings = redis_settings(tmp_path, f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(JobsBackendUnavailableError):
        RedisRunStore.of(settings).check_capacity(1, RunCaps(4, 100))

    from src.main import create_app

    async with running(create_app(settings)) as client:
        answer = await post_benchmark(client)
        health = await client.get("/health")

    assert answer.status_code == 503, answer.text
    assert answer.json()["error"] == "JobsBackendUnavailableError"
    assert "Redis" in answer.json()["detail"]
    assert answer.headers["retry-after"] == "5"
    assert health.json()["jobs"] == {"backend": "redis", "redis": "unreachable"}


def test_redis_mode_keeps_runs_thirty_days_unless_told(tmp_path: Path) -> None:
    assert redis_settings(tmp_path, "redis://x").benchmarks_keep_days == 30
    assert redis_settings(tmp_path, "redis://x", benchmarks_keep_days=2).benchmarks_keep_days == 2
    assert make_settings(tmp_path).benchmarks_keep_days is None


def test_the_redis_password_is_a_secret(tmp_path: Path) -> None:
    settings = redis_settings(tmp_path, "redis://:hunter2-redis@127.0.0.1:1/0")
    assert "hunter2-redis" in settings.secrets()


@pytest.mark.anyio
async def test_a_queued_run_cancelled_before_any_runner_took_it_ends_cancelled_at_once(
    tmp_path: Path, redis_url: str, serve: Serve, upstream: respx.MockRouter
) -> None:
    upstream.get("/models").respond(json=MODELS_BODY)
    settings = redis_settings(tmp_path, redis_url)
    async with serve(settings) as client:  # no runner anywhere
        accepted = await post_benchmark(client, query="?background=true")
        benchmark_id = accepted.json()["id"]
        # Queued: what the reaper's "never queued" check looks for is there.
        assert redis.Redis.from_url(redis_url).exists(
            f"{SAQ_JOB_PREFIX}{QUEUE_NAME}:{benchmark_id}"
        )
        started = time.monotonic()
        answer = await client.delete(f"/benchmarks/{benchmark_id}")
        listed = (await client.get("/benchmarks")).json()["benchmarks"]

    assert time.monotonic() - started < 5.0
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "cancelled"
    assert answer.json()["finished_requests"] == 0
    assert [run["status"] for run in listed] == ["cancelled"]
    # A runner that takes the job from the queue later leaves it alone.
    assert not Heartbeat(RedisRunStore.of(settings), 1.0).claim(benchmark_id)


def test_a_run_admitted_but_never_queued_ends_failed(tmp_path: Path, redis_url: str) -> None:
    # The replica that admitted it died before it queued it: no runner will ever take it.
    settings = redis_settings(tmp_path, redis_url, runner_heartbeat_timeout_seconds=1)
    store = RedisRunStore.of(settings)
    plan = plan_of(["m/x"], ["p"])
    state = new_run(plan)
    store.admit_job(state, RunCaps.of(settings), PlanRecord.of(plan))
    reaper = Reaper(settings)

    assert wait_until(lambda: reaper.unqueued_runs() == [state.id], 5.0)
    reaper.reap_unqueued(state.id)

    view = store.current_view(state.id)
    assert view.status == "failed"
    assert "never queued" in (view.error or "")
    assert not redis.Redis.from_url(redis_url).hexists(RUNNING, state.id)


@pytest.mark.anyio
async def test_a_run_whose_redis_never_answers_stops_sending_and_ends_failed_naming_it(
    tmp_path: Path, upstream: respx.MockRouter, upstream_server: LoopbackUpstream
) -> None:
    async def slowly(_: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.05)
        return httpx.Response(200, json=completion_body(model="m/x"))

    route = upstream.post("/chat/completions").mock(side_effect=slowly)
    settings = redis_settings(tmp_path, f"redis://127.0.0.1:{free_port()}/0")
    client = openrouter_client(upstream_server.base_url)
    try:
        summary = await asyncio.wait_for(
            execution.run_benchmark(
                client,
                plan_of(["m/x"], [f"p{index}" for index in range(100)], concurrency=1),
                "20261127T000000Z_m_0123abcd",
                settings.benchmarks_dir,
                str,
                write_retry_seconds=1.0,
                store=RedisRunStore.of(settings),
            ),
            60.0,
        )
    finally:
        await client.aclose()

    assert summary.status == "failed"
    assert "the run store (Redis) cannot be reached" in (summary.error or "")
    assert route.call_count < 100  # it stopped sending once its rows could not be kept
    # What it measured is on the runner's own disk all the same.
    rows = csv_rows(settings.benchmarks_dir / "20261127T000000Z_m_0123abcd.csv")
    assert len(rows) == summary.finished_requests == route.call_count


def test_a_concurrency_sweep_counts_its_largest_step_under_the_cap(
    tmp_path: Path, redis_url: str
) -> None:
    store = RedisRunStore(redis_url, tmp_path)
    caps = RunCaps(max_running=10, max_in_flight=10)
    sweep = plan_of(["m/x"], ["p"], concurrency=1, sweep="concurrency", sweep_values=[1, 8])
    store.admit(new_run(sweep), caps)

    with pytest.raises(CapacityError, match="hold 8 requests in flight; 3 more would pass"):
        store.admit(new_run(plan_of(["m/x"], ["p"], concurrency=3)), caps)


@pytest.mark.anyio
async def test_an_idle_runner_waits_for_jobs_without_its_connection_timing_out(
    tmp_path: Path, redis_url: str
) -> None:
    # A wait for a job cut by the client's read timeout drops its connection; a job Redis
    # hands over at that moment would be lost. Redis must answer the wait first.
    settings = redis_settings(tmp_path, redis_url)
    queue = saq_queue(settings)
    client = openrouter_client("http://127.0.0.1:9")
    admin = redis.Redis.from_url(redis_url)
    try:
        worker = runs_worker(queue, RunnerHost(settings, client), settings)
        await worker.process()  # connected, and idle once
        before = admin.info("stats")["total_connections_received"]
        for _ in range(2):
            await worker.process()
        after = admin.info("stats")["total_connections_received"]
    finally:
        await queue.disconnect()
        await client.aclose()
        admin.close()

    assert after == before, f"{after - before} new connections: waits for jobs timed out"


def test_rows_sent_again_by_a_retry_are_refused_even_after_the_final_rows(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A write whose answer was lost (Redis paused) is sent again by the client's retry, and
    # may land late, after the run's final rows: it must add nothing.
    store = RedisRunStore(redis_url, tmp_path)
    plan = plan_of(["m/x"], ["p", "q", "r"])
    state = new_run(plan)
    store.admit(state, RunCaps(4, 100))
    rows = [request_result(0.1 * (n + 1), prompt=p) for n, p in enumerate("pqr")]
    sent: list[list[tuple[object, ...]]] = []
    pipeline = store.redis.pipeline

    def recording(*args: object, **kwargs: object) -> object:
        pipe = pipeline(*args, **kwargs)
        execute = pipe.execute

        def execute_and_keep(*a: object, **k: object) -> object:
            sent.append([args for args, _ in pipe.command_stack])
            return execute(*a, **k)

        pipe.execute = execute_and_keep
        return pipe

    monkeypatch.setattr(store.redis, "pipeline", recording)
    store.add_rows(state.id, 0, rows[:2])
    store.set_rows(state.id, rows)
    monkeypatch.undo()

    for args in sent[0]:  # the first write, arriving again last
        with contextlib.suppress(redis.ResponseError):
            store.redis.execute_command(*args)

    assert [r.latency_seconds for r in store.read_rows(state.id, plan.prompts)] == [0.1, 0.2, 0.3]


def test_a_state_record_written_late_never_replaces_the_final_one(
    tmp_path: Path, redis_url: str
) -> None:
    # A progress write sent again by a retry after the run ended must not bring it back.
    store = RedisRunStore(redis_url, tmp_path)
    state = new_run(plan_of(["m/x"], ["p"]))
    store.admit(state, RunCaps(4, 100))
    store.write_state(state.id, state.model_copy(update={"status": "completed"}))

    store.write_state(state.id, state)

    assert store.read_state(state.id).status == "completed"  # type: ignore[union-attr]
    assert [item.status for item in store.list_runs(10)] == ["completed"]


def admitted_run(settings: Settings, prompts: list[str]) -> tuple[RedisRunStore, BenchmarkState]:
    """A running run of `prompts`, admitted to the Redis store, and no runner."""
    store = RedisRunStore.of(settings)
    state = new_run(plan_of(["m/x"], prompts))
    store.admit(state, RunCaps(4, 100))
    return store, state


def run_with_two_rows(settings: Settings) -> tuple[RedisRunStore, BenchmarkState]:
    """A running run of prompts p and q whose two rows are in Redis only, on no replica's disk."""
    store, state = admitted_run(settings, ["p", "q"])
    store.add_rows(state.id, 0, [request_result(0.5, prompt="p"), request_result(0.7, prompt="q")])
    return store, state


@pytest.mark.anyio
async def test_any_replica_serves_a_runs_files_from_redis_and_says_which_is_missing(
    tmp_path: Path, redis_url: str, serve: Serve
) -> None:
    settings = redis_settings(tmp_path, redis_url)
    store, state = run_with_two_rows(settings)
    other = new_run(plan_of(["m/x"], ["p"]))  # no such run in the store

    async with serve(settings) as client:
        rows = await client.get(f"/benchmarks/{state.id}/results.csv")
        summary = await client.get(f"/benchmarks/{state.id}/summary.json")
        unknown = await client.get(f"/benchmarks/{other.id}/results.csv")

    assert rows.status_code == 200, rows.text
    assert rows.headers["content-disposition"] == f'attachment; filename="{state.id}.csv"'
    assert rows.headers["content-type"].startswith("text/csv")
    assert rows.content == store.rows_csv(state.id)
    read = list(csv.DictReader(io.StringIO(rows.text)))
    assert [(r["prompt"], r["latency_seconds"]) for r in read] == [
        ("p", "0.500000"),
        ("q", "0.700000"),
    ]
    assert summary.status_code == 404
    assert summary.json()["detail"] == (
        f"No summary.json for '{state.id}' (yet): the run has not written it."
    )
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == f"No benchmark with id '{other.id}'."


@pytest.mark.anyio
async def test_any_replica_serves_a_finished_runs_summary_from_redis(
    tmp_path: Path, redis_url: str, serve: Serve
) -> None:
    settings = redis_settings(tmp_path, redis_url)
    store, state = admitted_run(settings, ["p"])
    store.save_summary(state.id, summary_of(state))

    async with serve(settings) as client:
        answer = await client.get(f"/benchmarks/{state.id}/summary.json")

    assert answer.status_code == 200, answer.text
    assert answer.headers["content-disposition"] == f'attachment; filename="{state.id}.json"'
    assert answer.content == store.summary_json(state.id)
    assert answer.json()["id"] == state.id


@pytest.mark.anyio
async def test_any_replica_draws_a_runs_page_from_the_rows_in_redis(
    tmp_path: Path, redis_url: str, serve: Serve
) -> None:
    # As for a run that another replica's runner is sending.
    settings = redis_settings(tmp_path, redis_url)
    _, state = run_with_two_rows(settings)

    async with serve(settings) as client:
        page = await client.get(f"/runs/{state.id}")

    assert page.status_code == 200, page.text
    assert '<svg id="latency-cdf-so-far"' in page.text, "no rows drawn"
    chart = page.text.split('<svg id="latency-cdf-so-far"', 1)[1].split("</svg>", 1)[0]
    assert "m/x: 2 values" in chart
