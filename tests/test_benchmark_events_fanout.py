"""Many followers of one run's events: one reader of its state per process, fanned out to all."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from asgi_lifespan import LifespanManager
from starlette.types import ASGIApp, Message

from src.schemas.benchmarks import BenchmarkState
from src.services.benchmarker.runs import file_store as store
from src.services.benchmarker.runs.service import EVENTS_POLL_SECONDS
from tests.helpers.app import SERVICE_URL, Serve, make_settings
from tests.helpers.asgi import http_scope
from tests.helpers.benchmarks import post_benchmark
from tests.helpers.openrouter import MODELS_BODY, sse_response

pytestmark = pytest.mark.anyio

DEADLINE = 30.0
PROMPTS = b"one\ntwo\nthree\nfour\n"


class Stepper:
    """An upstream that holds every request until the test lets one through."""

    def __init__(self) -> None:
        self.steps = asyncio.Semaphore(0)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        await self.steps.acquire()
        return sse_response()


class Follower:
    """GET /benchmarks/{id}/events driven by hand: what it received, and a way to leave."""

    def __init__(self, app: ASGIApp, benchmark_id: str) -> None:
        self.status: int | None = None
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.arrived = asyncio.Event()
        self.leave = asyncio.Event()
        self._buffer = b""
        scope = http_scope("GET", f"/benchmarks/{benchmark_id}/events", {"host": "service.test"})

        async def call() -> None:
            await app(scope, self._receive, self._send)

        self.task: asyncio.Task[None] = asyncio.create_task(call())

    async def _receive(self) -> Message:
        await self.leave.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            return
        self._buffer += message.get("body", b"")
        while b"\n\n" in self._buffer:
            block, self._buffer = self._buffer.split(b"\n\n", 1)
            lines = dict(line.split(b": ", 1) for line in block.split(b"\n") if b": " in line)
            if b"event" in lines:
                self.events.append((lines[b"event"].decode(), json.loads(lines[b"data"])))
                self.arrived.set()

    def dones(self) -> list[int]:
        return [data["progress"]["done"] for name, data in self.events if name == "progress"]


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.05)


@pytest.fixture
def state_reads(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every read of a run's state file, by the moment it happened."""
    reads: list[float] = []
    read_state = store.read_state

    def counted(path: Path) -> BenchmarkState | None:
        reads.append(time.monotonic())
        return read_state(path)

    monkeypatch.setattr(store, "read_state", counted)
    return reads


async def test_followers_of_one_run_share_one_reader_and_each_gets_every_event(
    tmp_path: Path, serve: Serve, upstream: respx.MockRouter, state_reads: list[float]
) -> None:
    upstream.get("/models").respond(json=MODELS_BODY)
    stepper = Stepper()
    upstream.post("/chat/completions").mock(side_effect=stepper)
    followers_count = 20
    app = serve.app(make_settings(tmp_path))
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url=SERVICE_URL
        ) as client,
    ):
        accepted = await post_benchmark(
            client, PROMPTS, query="?background=true", form={"runs": 1, "concurrency": 1}
        )
        assert accepted.status_code == 202, accepted.text
        benchmark_id = accepted.json()["id"]
        followers = [Follower(manager.app, benchmark_id) for _ in range(followers_count)]
        await until(lambda: all(f.events for f in followers), "every follower's first event")

        # While 20 follow: one request finishes, and every follower shows it.
        window_from = time.monotonic()
        stepper.steps.release()
        await until(lambda: all(1 in f.dones() for f in followers), "every follower saw done=1")
        await asyncio.sleep(1.0)
        window = time.monotonic() - window_from
        reads = sum(1 for moment in state_reads if window_from <= moment)

        # One leaves; the others go on to the end.
        leaver, *staying = followers
        leaver.leave.set()
        await asyncio.wait_for(leaver.task, DEADLINE)
        for _ in range(3):
            stepper.steps.release()
        await asyncio.wait_for(asyncio.gather(*(f.task for f in staying)), DEADLINE)
        for follower in staying:
            follower.leave.set()

    # One read per poll for the run, not one per follower.
    assert reads <= window / EVENTS_POLL_SECONDS + 3, (reads, window)
    assert leaver.events[-1][0] == "progress"
    for follower in staying:
        assert follower.status == 200
        names = [name for name, _ in follower.events]
        assert names[0] == "progress" and names.count("summary") == 1 and names[-1] == "summary"
        summary = follower.events[-1][1]
        assert (summary["status"], summary["finished_requests"]) == ("completed", 4)
        assert follower.dones()[:2] == [0, 1]
        assert follower.dones() == sorted(set(follower.dones()))


async def test_the_reader_stops_when_the_last_follower_leaves(
    tmp_path: Path, serve: Serve, upstream: respx.MockRouter, state_reads: list[float]
) -> None:
    upstream.get("/models").respond(json=MODELS_BODY)
    stepper = Stepper()
    upstream.post("/chat/completions").mock(side_effect=stepper)
    app = serve.app(make_settings(tmp_path))
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url=SERVICE_URL
        ) as client,
    ):
        accepted = await post_benchmark(client, PROMPTS, query="?background=true", runs=1)
        benchmark_id = accepted.json()["id"]
        followers = [Follower(manager.app, benchmark_id) for _ in range(3)]
        await until(lambda: all(f.events for f in followers), "every follower's first event")
        await asyncio.sleep(3 * EVENTS_POLL_SECONDS)
        for follower in followers:
            follower.leave.set()
        await asyncio.wait_for(asyncio.gather(*(f.task for f in followers)), DEADLINE)
        left_at = time.monotonic()
        await asyncio.sleep(1.0)
        late_reads = [moment for moment in state_reads if moment > left_at]
        still = (await client.get(f"/benchmarks/{benchmark_id}")).json()["status"]
        for _ in range(4):
            stepper.steps.release()

    assert still == "running"
    assert late_reads == []
