"""A bad results disk never loses data silently: a row or state write that fails is retried for
BENCHMARK_WRITE_RETRY_SECONDS, and past that the run stops sending and ends failed with the cause,
keeping every row it wrote whole. The disk cases run on a real small tmpfs (root only)."""

from __future__ import annotations

import asyncio
import csv
import errno
import os
import shutil
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from src.config import Settings
from src.services.benchmarker.results.csv_writer import CSV_COLUMNS, CsvResultWriter
from src.services.benchmarker.results.summary import RunClock, RunRecords, build_state
from src.services.benchmarker.runs import file_store as store
from tests.helpers.app import Serve, make_settings, read_log
from tests.helpers.benchmarks import post_benchmark
from tests.helpers.errors import assert_error
from tests.helpers.openrouter import MODELS_BODY, sse_response
from tests.helpers.results import plan_of
from tests.helpers.tmpfs import fill, small_tmpfs

pytestmark = pytest.mark.anyio

DEADLINE = 60.0
NO_SPACE = "no space left on BENCHMARKS_DIR"
SHORT_PROMPTS = b"Say hi.\nSay bye.\nSay yes.\n"
# Each row holds its prompt: with these a few rows fill a page of the filesystem.
LONG_PROMPTS = b"".join(f"{n} {'Tell me about the weather. ' * 50}\n".encode() for n in range(3))
# Room for every row of the runs below once the filler is gone.
RUN_DISK_SIZE = "2m"
# Requests sent whose rows never reached the disk: those in flight when the first write failed,
# and those a busy machine let start before that failure was known. Without the pause: all.
UNKEPT_AT_MOST = 10


@pytest.fixture
def catalog(upstream: respx.MockRouter) -> respx.Route:
    return upstream.get("/models").respond(json=MODELS_BODY)


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "disk") as directory:
        yield directory


@pytest.fixture
def run_mount(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "disk", RUN_DISK_SIZE) as directory:
        yield directory


class Upstream:
    """Answers every request after a short pause, counting them; `hold` keeps new ones waiting."""

    def __init__(self, pause: float = 0.01) -> None:
        self.pause = pause
        self.calls = 0
        self.open = asyncio.Event()
        self.open.set()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        await self.open.wait()
        await asyncio.sleep(self.pause)
        return sse_response()


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not await condition():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.05)


async def start(client: httpx.AsyncClient, prompts: bytes, **form: object) -> str:
    response = await post_benchmark(client, prompts, query="?background=true", form=form)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def view(client: httpx.AsyncClient, benchmark_id: str) -> dict[str, Any]:
    body: dict[str, Any] = (await client.get(f"/benchmarks/{benchmark_id}")).json()
    return body


async def ended(client: httpx.AsyncClient, benchmark_id: str) -> dict[str, Any]:
    async def done() -> bool:
        return (await view(client, benchmark_id)).get("status") not in ("running", None)

    await until(done, f"{benchmark_id} ended")
    return await view(client, benchmark_id)


async def done_at_least(client: httpx.AsyncClient, benchmark_id: str, count: int) -> None:
    async def enough() -> bool:
        body = await view(client, benchmark_id)
        assert "progress" in body, f"the run ended before {count} requests: {body['status']}"
        return int(body["progress"]["done"]) >= count

    await until(enough, f"{count} requests recorded")


def whole_rows(path: Path) -> list[dict[str, str]]:
    """The CSV's rows, each checked whole: every column, and the file ends with a row's end."""
    data = path.read_bytes()
    assert data.endswith(b"\r\n"), data[-200:]
    with open(path, newline="", encoding="utf-8") as file:
        rows = list(csv.reader(file))
    assert rows[0] == list(CSV_COLUMNS)
    for row in rows[1:]:
        assert len(row) == len(CSV_COLUMNS), row[:3]
        assert row[4] == "200", row[:6]
    return [dict(zip(CSV_COLUMNS, row, strict=True)) for row in rows[1:]]


def run_file(settings: Settings, benchmark_id: str) -> Path:
    return settings.benchmarks_dir / f"{benchmark_id}.csv"


def progress_done(body: dict[str, Any]) -> int:
    if "progress" in body:
        return int(body["progress"]["done"])
    return int(body["finished_requests"]) + int(body["warmup_requests"])


# --- a full disk at submission ---


async def test_a_full_disk_at_submission_is_a_507_and_leaves_no_file(
    mount: Path, serve: Serve, upstream: respx.MockRouter, catalog: respx.Route
) -> None:
    upstream.post("/chat/completions").mock(side_effect=Upstream())
    settings = make_settings(mount.parent, benchmarks_dir=mount / "benchmarks")
    settings.benchmarks_dir.mkdir()
    fill(mount)

    async with serve(settings) as client:
        first = await post_benchmark(client, runs=1)
        second = await post_benchmark(client, runs=1, query="?background=true")
        listed = (await client.get("/benchmarks")).json()

    for response in (first, second):
        assert_error(response, 507, "InsufficientStorageError", NO_SPACE)
    assert upstream.routes[1].call_count == 0  # nothing paid for a run that could not be kept
    assert listed["count"] == 0
    left = {path.name for path in settings.benchmarks_dir.iterdir()}
    assert left <= {store.ADMISSION_LOCK}, left
    assert "InsufficientStorageError" in read_log(settings)


# --- a disk full for a while, then freed ---


async def test_a_disk_full_for_a_few_seconds_pauses_the_run_and_loses_no_row(
    run_mount: Path, serve: Serve, upstream: respx.MockRouter, catalog: respx.Route
) -> None:
    answers = Upstream(pause=0.02)
    upstream.post("/chat/completions").mock(side_effect=answers)
    settings = make_settings(
        run_mount.parent,
        benchmarks_dir=run_mount / "benchmarks",
        benchmark_write_retry_seconds=20.0,  # longer than the pause this test makes
    )
    runs = 3 * 100

    async with serve(settings) as client:
        benchmark_id = await start(client, LONG_PROMPTS, runs=100, concurrency=2)
        await done_at_least(client, benchmark_id, 3)
        filler = fill(run_mount)
        # While the disk is full nothing new is sent: the calls stop growing before the end.
        seen = -1
        deadline = time.monotonic() + DEADLINE
        while answers.calls != seen and time.monotonic() < deadline:
            seen = answers.calls
            await asyncio.sleep(1.0)
        paused_at = answers.calls
        filler.unlink()
        finished = await ended(client, benchmark_id)

    assert paused_at < runs, "the run went on sending with nowhere to keep its results"
    assert finished["status"] == "completed", finished
    assert finished["finished_requests"] == runs
    rows = whole_rows(settings.benchmarks_dir / f"{benchmark_id}.csv")
    assert len(rows) == runs == answers.calls
    assert "retrying" in read_log(settings)


# --- a disk that stays full ---


@pytest.mark.parametrize("isolation", ["inline", "process"])
async def test_a_disk_that_stays_full_fails_the_run_with_the_cause_and_keeps_whole_rows(
    run_mount: Path,
    serve: Serve,
    upstream: respx.MockRouter,
    catalog: respx.Route,
    isolation: str,
) -> None:
    answers = Upstream()
    upstream.post("/chat/completions").mock(side_effect=answers)
    settings = make_settings(
        run_mount.parent,
        benchmarks_dir=run_mount / "benchmarks",
        benchmark_write_retry_seconds=1.0,
        benchmark_isolation=isolation,
    )
    runs = 3 * 100

    async with serve(settings) as client:
        benchmark_id = await start(client, LONG_PROMPTS, runs=100, concurrency=2)
        await done_at_least(client, benchmark_id, 3)
        fill(run_mount)
        finished = await ended(client, benchmark_id)
        listed = (await client.get("/benchmarks")).json()["benchmarks"]
        report = (await client.get(f"/benchmarks/{benchmark_id}/report")).text

    assert finished["status"] == "failed", finished
    assert NO_SPACE in finished["error"]
    assert [(item["id"], item["status"]) for item in listed] == [(benchmark_id, "failed")]
    assert NO_SPACE in report
    # The reserve it gave back made room for its summary.
    assert "finished_requests" in finished, "no summary was written"
    assert finished["finished_requests"] == len(whole_rows(run_file(settings, benchmark_id)))
    rows = whole_rows(settings.benchmarks_dir / f"{benchmark_id}.csv")
    assert len(rows) == progress_done(finished)
    # It stopped sending: only a few requests went unrecorded.
    assert answers.calls < runs
    assert answers.calls - len(rows) <= UNKEPT_AT_MOST
    log = read_log(settings)
    assert f"BENCHMARK FAILED | id={benchmark_id} | " in log and NO_SPACE in log


async def test_a_row_write_that_keeps_failing_stops_sending_and_fails_the_run(
    tmp_path: Path,
    serve: Serve,
    upstream: respx.MockRouter,
    catalog: respx.Route,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = Upstream()
    upstream.post("/chat/completions").mock(side_effect=answers)
    written = 0
    real_write = CsvResultWriter._write

    def full_after_three(self: CsvResultWriter, rows: list[list[str]]) -> None:
        nonlocal written
        if written >= 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(self, rows)
        written += len(rows)

    monkeypatch.setattr(CsvResultWriter, "_write", full_after_three)
    settings = make_settings(tmp_path, benchmark_write_retry_seconds=0.5)

    async with serve(settings) as client:
        benchmark_id = await start(client, SHORT_PROMPTS, runs=100, concurrency=2)
        finished = await ended(client, benchmark_id)

    assert finished["status"] == "failed", finished
    assert NO_SPACE in finished["error"]
    rows = whole_rows(settings.benchmarks_dir / f"{benchmark_id}.csv")
    assert len(rows) == written == progress_done(finished)
    assert answers.calls - written <= UNKEPT_AT_MOST


# --- the watcher ---


async def test_the_watcher_outlives_failing_state_writes_and_still_cancels(
    client: httpx.AsyncClient,
    upstream: respx.MockRouter,
    catalog: respx.Route,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = Upstream(pause=0.05)
    upstream.post("/chat/completions").mock(side_effect=answers)
    real_write_state = store.write_state
    failures = 0

    def failing_twice(path: Path, state: Any) -> None:
        nonlocal failures
        if state.status == "running" and state.progress.done >= 2 and failures < 2:
            failures += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write_state(path, state)

    monkeypatch.setattr(store, "write_state", failing_twice)

    benchmark_id = await start(client, SHORT_PROMPTS, runs=100, concurrency=1)
    await done_at_least(client, benchmark_id, 2)
    # Progress moves again after the failures...
    before = int((await view(client, benchmark_id))["progress"]["done"])
    await done_at_least(client, benchmark_id, before + 2)
    # ...and a DELETE still stops the run.
    response = await client.delete(f"/benchmarks/{benchmark_id}")

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    assert failures == 2


# --- the running cap ---


async def test_a_run_holds_its_place_under_the_cap_while_its_runner_lives(
    tmp_path: Path,
    serve: Serve,
    upstream: respx.MockRouter,
    catalog: respx.Route,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = Upstream()
    answers.open.clear()
    upstream.post("/chat/completions").mock(side_effect=answers)
    settings = make_settings(tmp_path, max_running_benchmarks=1)

    async with serve(settings) as client:
        benchmark_id = await start(client, b"Say hi.\n", runs=2)
        # Its state record looks abandoned (as after a stall of its disk), its runner is alive.
        monkeypatch.setattr(store, "STALE_AFTER", timedelta(0))
        refused = await post_benchmark(client, b"Say hi.\n", runs=1, query="?background=true")
        monkeypatch.undo()
        answers.open.set()
        finished = await ended(client, benchmark_id)

    assert_error(refused, 429, "CapacityError", "MAX_RUNNING_BENCHMARKS=1")
    assert finished["status"] == "completed"


# --- a deleted BENCHMARKS_DIR ---


async def test_a_deleted_benchmarks_dir_fails_the_run_with_the_cause_and_keeps_its_rows(
    tmp_path: Path, serve: Serve, upstream: respx.MockRouter, catalog: respx.Route
) -> None:
    answers = Upstream()
    upstream.post("/chat/completions").mock(side_effect=answers)
    settings = make_settings(tmp_path, max_running_benchmarks=1, benchmark_write_retry_seconds=1.0)

    async with serve(settings) as client:
        benchmark_id = await start(client, SHORT_PROMPTS, runs=100, concurrency=1)
        await done_at_least(client, benchmark_id, 3)
        answers.open.clear()
        await asyncio.sleep(0.5)  # the last answers are recorded before the folder goes
        shutil.rmtree(settings.benchmarks_dir)
        # Gone from the disk, the run still holds its place while its runner lives.
        refused = await post_benchmark(client, b"Say hi.\n", runs=1, query="?background=true")
        answers.open.set()
        finished = await ended(client, benchmark_id)
        listed = (await client.get("/benchmarks")).json()["benchmarks"]

    assert_error(refused, 429, "CapacityError", "MAX_RUNNING_BENCHMARKS=1")
    assert finished["status"] == "failed", finished
    assert "BENCHMARKS_DIR was deleted" in finished["error"]
    assert [(item["id"], item["status"]) for item in listed] == [(benchmark_id, "failed")]
    rows = whole_rows(settings.benchmarks_dir / f"{benchmark_id}.csv")
    assert len(rows) == progress_done(finished) >= 3
    assert answers.calls <= len(rows) + 2
    assert "BENCHMARKS_DIR was deleted" in read_log(settings)


# --- a runner killed with SIGKILL ---


async def test_a_killed_runner_leaves_the_summary_of_the_rows_it_kept(
    tmp_path: Path,
    serve: Serve,
    upstream: respx.MockRouter,
    catalog: respx.Route,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = Upstream()
    upstream.post("/chat/completions").mock(side_effect=answers)
    spawn = asyncio.create_subprocess_exec
    runners: list[asyncio.subprocess.Process] = []

    async def tracked(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        process = await spawn(*args, **kwargs)
        runners.append(process)
        return process

    monkeypatch.setattr(asyncio, "create_subprocess_exec", tracked)
    settings = make_settings(tmp_path, benchmark_isolation="process")

    async with serve(settings) as client:
        benchmark_id = await start(client, SHORT_PROMPTS, runs=100, concurrency=1)
        await done_at_least(client, benchmark_id, 3)
        answers.open.clear()
        await asyncio.sleep(0.5)  # the last answers are recorded before the kill
        runner = runners[0]  # the warm runner started with the service took the run
        os.kill(runner.pid, signal.SIGKILL)
        finished = await ended(client, benchmark_id)
        summary_file = await client.get(f"/benchmarks/{benchmark_id}/summary.json")
        answers.open.set()

    assert finished["status"] == "failed", finished
    assert summary_file.status_code == 200, summary_file.text
    summary = summary_file.json()
    assert summary["status"] == "failed"
    assert "killed" in summary["error"] and "SIGKILL" in summary["error"]
    rows = whole_rows(settings.benchmarks_dir / f"{benchmark_id}.csv")
    assert summary["finished_requests"] == len(rows) >= 3
    [model] = summary["models"]
    assert model["ok"] == model["count"] == len(rows)
    assert summary["files"]["csv"] == f"{benchmark_id}.csv"


# --- a read-only BENCHMARKS_DIR ---


async def test_a_read_only_benchmarks_dir_is_a_507_at_submission(
    tmp_path: Path, serve: Serve, upstream: respx.MockRouter, catalog: respx.Route
) -> None:
    upstream.post("/chat/completions").mock(side_effect=Upstream())
    with small_tmpfs(tmp_path / "disk", read_only=True) as read_only:
        settings = make_settings(tmp_path, benchmarks_dir=read_only)
        async with serve(settings) as client:
            refused = await post_benchmark(client, runs=1, query="?background=true")
        left = list(read_only.iterdir())

    assert_error(refused, 507, "InsufficientStorageError", "BENCHMARKS_DIR is not writable")
    assert upstream.routes[1].call_count == 0
    assert left == []


async def test_a_cancel_that_cannot_be_written_is_a_507_not_a_crash(
    client: httpx.AsyncClient,
    upstream: respx.MockRouter,
    catalog: respx.Route,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = Upstream()
    answers.open.clear()
    upstream.post("/chat/completions").mock(side_effect=answers)
    benchmark_id = await start(client, SHORT_PROMPTS, runs=1)
    touch = Path.touch

    def unwritable(path: Path, *args: Any, **kwargs: Any) -> None:
        if path.name.endswith(".cancel"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        touch(path, *args, **kwargs)

    monkeypatch.setattr(Path, "touch", unwritable)
    stop = await client.delete(f"/benchmarks/{benchmark_id}")
    monkeypatch.undo()
    answers.open.set()
    finished = await ended(client, benchmark_id)

    body = assert_error(stop, 507, "InsufficientStorageError", "BENCHMARKS_DIR is not writable")
    assert "/" not in body["detail"]  # no path of the server's disk
    assert finished["status"] == "completed"


# --- reserves of runs that died with their API process ---


async def test_the_disk_reserve_of_a_run_that_died_with_its_server_is_given_back(
    client: httpx.AsyncClient,
    settings: Settings,
    upstream: respx.MockRouter,
    catalog: respx.Route,
) -> None:
    upstream.post("/chat/completions").mock(side_effect=Upstream())
    directory = settings.benchmarks_dir
    directory.mkdir(parents=True)
    lost_id = "20260101T000000Z_m-x_0123abcd"
    plan = plan_of(["m/x"], ["p"])
    clock = RunClock(datetime.now(UTC), 0.0)
    lost = build_state(RunRecords(lost_id, "running", plan, [], clock), [])
    old = datetime.now(UTC) - store.STALE_AFTER - timedelta(seconds=1)
    store.write_state(directory / f"{lost_id}.state", lost.model_copy(update={"updated_at": old}))
    (directory / f"{lost_id}.reserve").write_bytes(b"\0" * 65536)

    response = await post_benchmark(client, runs=1)

    assert response.status_code == 200, response.text
    assert not (directory / f"{lost_id}.reserve").exists()
    assert (directory / f"{lost_id}.state").exists()  # its record stays, shown as interrupted
    assert not list(directory.glob("*.reserve"))  # the finished run gave its own back
