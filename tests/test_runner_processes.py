"""RUNNER_PROCESSES: one run's open-loop schedule split across runner processes, each sending
every k-th scheduled request at its own offset from one shared start, into one CSV and one
summary."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from src.log_sink import LOG_FILE_NAME
from src.schemas.benchmarks import BenchmarkParameters, RequestRecord
from src.services.base.exceptions import RunnerFailedError
from src.services.benchmarker.load.plan import BenchmarkJob, BenchmarkPlan
from src.services.benchmarker.runs import shards
from src.services.benchmarker.runs.runner_process import RUNNER_NAME
from src.services.benchmarker.runs.shards import concurrency_share, every_kth, shard_count
from tests.helpers.app import Serve, make_settings
from tests.helpers.benchmarks import post_benchmark
from tests.helpers.openrouter import GPT, MODELS_BODY, sse_response
from tests.helpers.results import run_rows
from tests.test_benchmark_jobs import child_names

pytestmark = pytest.mark.anyio

DEADLINE = 60.0


def parameters(**fields: Any) -> BenchmarkParameters:
    return BenchmarkParameters.model_validate({"models": [GPT], **fields})


def test_each_shard_takes_every_kth_send_and_a_share_of_the_slots() -> None:
    sends = list(range(10))

    shares = [list(every_kth(sends, index, 3)) for index in range(3)]

    assert shares == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert sorted(send for share in shares for send in share) == sends
    assert [concurrency_share(8, index, 3) for index in range(3)] == [3, 3, 2]


@pytest.mark.parametrize(
    ("processes", "fields", "shards"),
    [
        (1, {"rate": 10, "concurrency": 8}, 1),
        (4, {"concurrency": 8}, 1),  # a closed loop stays in one process
        (4, {"rate": 10, "concurrency": 8}, 4),
        (4, {"rate": 10, "concurrency": 2}, 2),  # a shard needs a slot
        (4, {"sweep": "rate", "sweep_values": "5,10", "concurrency": 8}, 4),
        (4, {"sweep": "concurrency", "sweep_values": "2,8", "rate": 10}, 2),
        (4, {"sweep": "concurrency", "sweep_values": "2,8"}, 1),
    ],
)
def test_how_many_processes_share_a_run(
    processes: int, fields: dict[str, Any], shards: int
) -> None:
    assert shard_count(processes, parameters(**fields)) == shards


@pytest.fixture
def catalog(upstream: respx.MockRouter) -> respx.Route:
    return upstream.get("/models").respond(json=MODELS_BODY)


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not await condition():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.05)


def shard_lines(log_dir: Path, benchmark_id: str) -> list[str]:
    text = (log_dir / LOG_FILE_NAME).read_text(encoding="utf-8")
    return [line for line in text.splitlines() if f"BENCHMARK SHARDS | id={benchmark_id}" in line]


async def test_a_rate_run_on_two_runner_processes_records_exactly_its_schedule(
    tmp_path: Path, serve: Serve, upstream: respx.MockRouter, catalog: respx.Route
) -> None:
    chat = upstream.post("/chat/completions").mock(side_effect=lambda _: sse_response())
    settings = make_settings(tmp_path, benchmark_isolation="process", runner_processes=2)

    async with serve(settings) as client:
        response = await post_benchmark(client, runs=3, form={"rate": 20, "concurrency": 4})

    assert response.status_code == 200, response.text
    summary = response.json()
    # 2 prompts x 3 runs: each scheduled send once, no more, no fewer.
    assert (summary["status"], summary["requests"], summary["finished_requests"]) == (
        "completed",
        6,
        6,
    )
    assert chat.call_count == 6
    rows = run_rows(settings.benchmarks_dir, summary)
    assert sorted((row["prompt_index"], row["run"]) for row in rows) == sorted(
        (str(prompt), str(run)) for prompt in (1, 2) for run in (1, 2, 3)
    )
    assert all(row["status"] == "200" and row["send_lag_seconds"] for row in rows)
    assert summary["schedule"]["target_rate"] == 20
    assert summary["schedule"]["achieved_rate"] is not None
    # One summary, one CSV, one state record for the run; the two processes sent 3 each.
    files = sorted(path.name for path in settings.benchmarks_dir.iterdir())
    run_id = summary["id"]
    assert [name for name in files if name.endswith((".csv", ".json", ".state"))] == [
        f"{run_id}.csv",
        f"{run_id}.json",
        f"{run_id}.state",
    ]
    [line] = shard_lines(settings.log_dir, summary["id"])
    assert line.endswith("| sends=3,3")


async def test_cancelling_a_run_on_two_runner_processes_keeps_the_rows_both_finished(
    tmp_path: Path, serve: Serve, upstream: respx.MockRouter, catalog: respx.Route
) -> None:
    held = 0
    abandoned = 0
    never = asyncio.Event()

    async def answer(request: httpx.Request) -> httpx.Response:
        nonlocal held, abandoned
        if "slow" in json.loads(request.content)["messages"][-1]["content"]:
            held += 1
            try:
                await never.wait()
            except asyncio.CancelledError:
                abandoned += 1
                raise
        return sse_response()

    upstream.post("/chat/completions").mock(side_effect=answer)
    settings = make_settings(tmp_path, benchmark_isolation="process", runner_processes=2)
    # By position, shard 0 sends prompts 1 and 3, shard 1 prompts 2 and 4, in every run.
    prompts = b"fast one\nfast two\nslow three\nslow four\n"

    async with serve(settings) as client:
        response = await post_benchmark(
            client,
            prompts,
            query="?background=true",
            form={"rate": 40, "concurrency": 8, "runs": 2},
        )
        assert response.status_code == 202, response.text
        location = response.headers["location"]

        async def all_sent() -> bool:
            done = (await client.get(location)).json()["progress"]["done"]
            return bool(done == 4 and held == 4)

        await until(all_sent, "the fast requests recorded, the slow ones held")
        cancel = await client.delete(location)
        assert cancel.status_code in (200, 202), cancel.text

        async def ended() -> bool:
            return bool((await client.get(location)).json()["status"] != "running")

        await until(ended, "the run ended")
        summary = (await client.get(location)).json()

    assert summary["status"] == "cancelled"
    rows = run_rows(settings.benchmarks_dir, summary)
    # Both processes' finished rows are kept; the held requests were abandoned, not recorded.
    assert sorted((row["prompt_index"], row["run"]) for row in rows) == [
        ("1", "1"),
        ("1", "2"),
        ("2", "1"),
        ("2", "2"),
    ]
    assert summary["finished_requests"] == 4
    assert abandoned == 4


async def test_a_run_whose_other_runners_never_connect_fails_naming_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shards, "CONNECT_SECONDS", 0.2)
    folder = tempfile.mkdtemp(prefix="bench-")
    hub = shards.ShardHub(os.path.join(folder, "lead"), 3, "run-id")
    await hub.open()
    plan = BenchmarkPlan(parameters(rate=10, concurrency=3), ["p"])
    sent: list[RequestRecord] = []

    async def execute(_job: BenchmarkJob, _scheduled: float | None) -> RequestRecord:
        raise AssertionError("nothing may be sent")

    try:
        go = shards.Go(start=0.0, rate=10, concurrency=3)
        with pytest.raises(RunnerFailedError, match="2 of the run's 3 runner processes did not"):
            await hub.open_loop(plan, go, execute, sent.append)
    finally:
        await hub.close()
        shutil.rmtree(folder)
    assert sent == []


# A runner process as the launcher starts it, except that a runner that is not the lead stays
# (deaf to SIGTERM) after its share is sent, until the file named by LINGER_FLAG exists.
LINGERING_RUNNER = """
import json, os, signal, subprocess, sys, time
data = sys.stdin.buffer.read()
if not data:
    sys.exit(0)
runner = [sys.executable, "-m", "src.services.benchmarker.runs.runner_process"]
if json.loads(data).get("shard", 0) == 0:
    read, write = os.pipe()
    os.write(write, data)
    os.close(write)
    os.dup2(read, 0)
    os.execv(sys.executable, runner)  # the lead, still the service's child
signal.signal(signal.SIGTERM, signal.SIG_IGN)
code = subprocess.run(runner, input=data).returncode
deadline = time.monotonic() + 60
while not os.path.exists(os.environ["LINGER_FLAG"]) and time.monotonic() < deadline:
    time.sleep(0.05)
sys.exit(code)
"""


async def test_a_run_holds_its_place_until_every_runner_process_has_exited(
    tmp_path: Path,
    serve: Serve,
    upstream: respx.MockRouter,
    catalog: respx.Route,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    upstream.post("/chat/completions").mock(side_effect=lambda _: sse_response())
    flag = tmp_path / "let-go"
    monkeypatch.setenv("LINGER_FLAG", str(flag))
    spawn = asyncio.create_subprocess_exec

    async def lingering(*_args: str, **kwargs: Any) -> asyncio.subprocess.Process:
        env = {**kwargs.pop("env"), "LINGER_FLAG": str(flag)}
        return await spawn(sys.executable, "-c", LINGERING_RUNNER, env=env, **kwargs)

    monkeypatch.setattr(asyncio, "create_subprocess_exec", lingering)
    settings = make_settings(
        tmp_path, benchmark_isolation="process", runner_processes=2, max_running_benchmarks=1
    )
    try:
        async with serve(settings) as client:
            form = {"rate": 20, "concurrency": 2, "runs": 1}
            first = await post_benchmark(client, query="?background=true", form=form)
            assert first.status_code == 202, first.text
            location = first.headers["location"]

            async def completed() -> bool:
                return bool((await client.get(location)).json()["status"] == "completed")

            await until(completed, "the first run's summary")

            async def lead_gone() -> bool:
                return RUNNER_NAME not in child_names()

            await until(lead_gone, "the lead runner exited")
            # The lead has saved the summary and exited; the other runner has not.
            refused = await post_benchmark(client, form=form)
            flag.touch()

            async def admitted() -> bool:
                return (await post_benchmark(client, form=form)).status_code == 200

            await until(admitted, "a new run admitted once the last runner exited")
    finally:
        flag.touch()

    assert refused.status_code == 429, refused.text
    assert "MAX_RUNNING_BENCHMARKS=1" in refused.json()["detail"]


async def test_each_step_of_a_rate_sweep_is_split_across_the_runner_processes(
    tmp_path: Path, serve: Serve, upstream: respx.MockRouter, catalog: respx.Route
) -> None:
    upstream.post("/chat/completions").mock(side_effect=lambda _: sse_response())
    settings = make_settings(tmp_path, benchmark_isolation="process", runner_processes=2)

    async with serve(settings) as client:
        response = await post_benchmark(
            client,
            runs=2,
            form={"sweep": "rate", "sweep_values": "20,40", "concurrency": 2, "warmup": 1},
        )

    assert response.status_code == 200, response.text
    summary = response.json()
    assert [(step["rate"], step["models"][0]["count"]) for step in summary["steps"]] == [
        (20.0, 4),
        (40.0, 4),
    ]
    rows = run_rows(settings.benchmarks_dir, summary)
    # The warm-up (the lead's alone) has no step; each step's rows are its whole schedule.
    assert sorted((row["step"], row["prompt_index"], row["run"]) for row in rows) == sorted(
        [("", "1", "0")]
        + [(step, str(prompt), str(run)) for step in "12" for prompt in (1, 2) for run in (1, 2)]
    )
    lines = shard_lines(settings.log_dir, summary["id"])
    assert [line.rsplit("| ", 1)[1] for line in lines] == ["sends=2,2", "sends=2,2"]
