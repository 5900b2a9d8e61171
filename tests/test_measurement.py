"""What the service reports is measured at the wire: retries on the record, parsing
outside the clock, multi-line SSE data, and a Retry-After longer than the cap respected.

The upstream is a real loopback server, and the app runs with its production transport.
Retry waits take no real time: the wait is replaced by a jump of the clock the client reads.
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest
from aiohttp import web
from asgi_lifespan import LifespanManager

from src.config import Settings
from src.main import create_app
from src.services.base import client as base_client
from src.services.base import transport as wire
from src.services.openrouter import schemas as upstream_schemas
from tests.helpers.results import run_file

pytestmark = pytest.mark.anyio

UPSTREAM_DELAY = 0.15
MODEL = "emulator/small"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Upstream:
    url: str = ""
    answers: list[Handler] = field(default_factory=list)
    calls: int = 0

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return await answer(request)

    async def models(self, _: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": MODEL, "name": "Small"}]})


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    server = Upstream()
    app = web.Application()
    app.router.add_post("/api/v1/chat/completions", server.chat)
    app.router.add_get("/api/v1/models", server.models)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.url = f"http://127.0.0.1:{runner.addresses[0][1]}/api/v1"
    try:
        yield server
    finally:
        await runner.cleanup()


@pytest.fixture
def virtual_waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Retry waits advance the clock of the client and the transport instead of sleeping."""
    waits: list[float] = []
    skipped = 0.0

    def clock() -> float:
        return time.perf_counter() + skipped

    async def wait(seconds: float) -> None:
        nonlocal skipped
        waits.append(seconds)
        skipped += seconds

    monkeypatch.setattr(base_client, "now", clock)
    monkeypatch.setattr(wire, "now", clock)
    monkeypatch.setattr(base_client, "retry_sleep", wait)
    return waits


def settings_for(upstream: Upstream, tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,
        openrouter_api_key="sk-or-v1-measurement-test-key",
        openrouter_base_url=upstream.url,
        log_dir=tmp_path / "logs",
        benchmarks_dir=tmp_path / "benchmarks",
        retry_attempts=3,
        retry_max_seconds=8.0,
        benchmark_isolation="inline",
        allowed_hosts=["service.test"],
    )


async def serve(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://service.test"
        ) as client,
    ):
        yield client


@pytest.fixture
async def service(upstream: Upstream, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for client in serve(settings_for(upstream, tmp_path)):
        yield client


def completion(text: str = "Blue light scatters more.") -> bytes:
    return orjson.dumps(
        {
            "id": "gen-1",
            "model": MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
        }
    )


def rate_limited(retry_after: str) -> Handler:
    async def answer(_: web.Request) -> web.Response:
        return web.json_response(
            {"error": {"code": 429, "message": "slow down"}},
            status=429,
            headers={"Retry-After": retry_after},
        )

    return answer


def after(delay: float, body: bytes) -> Handler:
    async def answer(_: web.Request) -> web.Response:
        await asyncio.sleep(delay)
        return web.Response(body=body, content_type="application/json")

    return answer


async def test_a_request_retried_twice_reports_three_attempts_and_the_last_ones_latency(
    upstream: Upstream, service: httpx.AsyncClient, virtual_waits: list[float], tmp_path: Path
) -> None:
    upstream.answers = [rate_limited("2"), rate_limited("2"), after(UPSTREAM_DELAY, completion())]

    response = await service.post(
        "/benchmark",
        files={"prompt_file": ("p.txt", b"Why is the sky blue?\n", "text/plain")},
        data={"model": MODEL, "runs": "1", "stream": "false"},
    )

    assert response.status_code == 200, response.text
    summary = response.json()
    with open(run_file(tmp_path / "benchmarks", summary), encoding="utf-8") as file:
        [row] = list(csv.DictReader(io.StringIO(file.read())))
    assert upstream.calls == 3
    assert virtual_waits == [2.0, 2.0]
    assert row["attempts"] == "3"
    latency, total = float(row["latency_seconds"]), float(row["total_seconds"])
    # The final attempt alone: the upstream's delay, not the waits before it.
    assert UPSTREAM_DELAY * 0.9 <= latency < UPSTREAM_DELAY + 1.0
    assert total >= latency + 4.0
    stats = summary["models"][0]
    assert stats["retried"] == 1
    assert stats["latency"]["p50"] == pytest.approx(latency, abs=1e-5)
    assert stats["total"]["p50"] == pytest.approx(total, abs=1e-5)


async def test_generate_reports_attempts_and_total_seconds(
    upstream: Upstream, service: httpx.AsyncClient, virtual_waits: list[float]
) -> None:
    upstream.answers = [rate_limited("1.5"), after(UPSTREAM_DELAY, completion())]

    response = await service.post("/generate", json={"model": MODEL, "prompt": "Why?"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["attempts"] == 2
    assert UPSTREAM_DELAY * 0.9 <= body["latency_seconds"] < UPSTREAM_DELAY + 1.0
    assert body["total_seconds"] >= body["latency_seconds"] + 1.5
    assert virtual_waits == [1.5]


async def test_a_retry_after_longer_than_the_cap_ends_the_retries_with_it(
    upstream: Upstream, service: httpx.AsyncClient, virtual_waits: list[float]
) -> None:
    upstream.answers = [rate_limited("60")]

    response = await service.post("/generate", json={"model": MODEL, "prompt": "Why?"})

    assert response.status_code == 429
    assert response.headers["retry-after"] == "60"
    assert response.json()["error"] == "UpstreamStatusError"
    assert upstream.calls == 1
    assert virtual_waits == []


async def test_the_reported_latency_excludes_parsing(
    upstream: Upstream, service: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream.answers = [after(UPSTREAM_DELAY, completion())]
    parse = upstream_schemas.UpstreamCompletion.model_validate_json
    slow_parse_seconds = 0.8

    def slow(data: bytes | str) -> upstream_schemas.UpstreamCompletion:
        time.sleep(slow_parse_seconds)  # a deliberately slow parse, inside the request
        return parse(data)

    monkeypatch.setattr(upstream_schemas.UpstreamCompletion, "model_validate_json", slow)

    started = time.perf_counter()
    response = await service.post("/generate", json={"model": MODEL, "prompt": "Why?"})
    elapsed = time.perf_counter() - started

    assert response.status_code == 200, response.text
    assert elapsed >= UPSTREAM_DELAY + slow_parse_seconds
    assert UPSTREAM_DELAY * 0.9 <= response.json()["latency_seconds"] < slow_parse_seconds


async def test_multi_line_sse_data_makes_one_chunk(
    upstream: Upstream, service: httpx.AsyncClient
) -> None:
    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        # One JSON chunk spread over three data lines, CRLF line ends, split mid-line.
        await response.write(
            b': OPENROUTER PROCESSING\r\n\r\ndata: {"model": "emulator/small",\r\n'
        )
        await response.write(b'data: "choices": [{"delta": {"content": "Hel')
        await response.write(b'lo"}}]}\r\ndata: \r\n\r\n')
        usage = {
            "choices": [],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        await response.write(b"data: " + orjson.dumps(usage) + b"\n\ndata: [DONE]\n\n")
        await response.write_eof()
        return response

    upstream.answers = [stream]

    response = await service.post(
        "/generate", params={"stream": "true"}, json={"model": MODEL, "prompt": "Hi"}
    )

    assert response.status_code == 200
    events = [block for block in response.text.split("\n\n") if block]
    assert events[0] == 'event: token\ndata: {"text":"Hello"}'
    assert events[-1].startswith("event: done\n")
    assert orjson.loads(events[-1].split("data: ", 1)[1])["tokens_used"] == 2


async def test_a_stream_without_any_data_is_a_failure(
    upstream: Upstream, service: httpx.AsyncClient
) -> None:
    async def empty(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b": OPENROUTER PROCESSING\n\n")
        await response.write_eof()
        return response

    upstream.answers = [empty]

    response = await service.post(
        "/generate", params={"stream": "true"}, json={"model": MODEL, "prompt": "Hi"}
    )

    assert response.status_code == 502
    assert response.json()["error"] == "UpstreamInvalidResponseError"
