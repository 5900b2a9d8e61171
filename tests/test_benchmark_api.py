from __future__ import annotations

import asyncio
import json
import re
import statistics
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import respx
from asgi_lifespan import LifespanManager
from starlette.types import Message

from src.config import Settings
from src.schemas.benchmarks import BenchmarkParameters
from src.services.base.exceptions import UnknownModelError
from src.services.benchmarker.results.csv_writer import CSV_COLUMNS
from src.services.benchmarker.runs.launcher import BenchmarkLauncher
from src.services.benchmarker.runs.owners import EVERYONE
from src.services.benchmarker.runs.service import start_benchmark
from src.services.openrouter.catalog import ModelCatalog
from tests.helpers.app import Serve, make_settings, read_log
from tests.helpers.asgi import http_scope
from tests.helpers.benchmarks import PROMPTS, post_benchmark
from tests.helpers.concurrency import InFlightBarrier
from tests.helpers.errors import assert_validation_error
from tests.helpers.html import parse
from tests.helpers.openrouter import (
    API_KEY,
    GPT,
    KEEPALIVE,
    LLAMA,
    MODELS_BODY,
    HangAfter,
    completion_body,
    error_body,
    sse_chunks,
    sse_response,
)
from tests.helpers.results import run_file, run_rows
from tests.helpers.uploads import FakeUpload

pytestmark = pytest.mark.anyio

# The mocked upstream streams the rest of an answer this long after its first token.
GENERATION_SECONDS = 0.2
FILE_NAME = re.compile(r"^\d{8}T\d{6}Z_openai-gpt-4o_[0-9a-f]{8}\.(csv|json)$")


# Rows carry 6 decimals and so do the statistics: both roundings together.
ROUNDING = 3e-6


def reference_percentile(values: list[float], q: int) -> float:
    """numpy's default ("linear") percentile, from the standard library."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def assert_statistics_of_rows(stats: dict[str, Any], rows: list[dict[str, str]]) -> None:
    """The latency and ttft statistics are those of the rows in the CSV, recomputed here."""
    latencies = [float(row["latency_seconds"]) for row in rows]
    assert stats["ok"] == len(latencies)
    expected = {
        "avg": statistics.fmean(latencies),
        "min": min(latencies),
        "max": max(latencies),
        "std_dev": statistics.stdev(latencies) if len(latencies) > 1 else 0.0,
        **{f"p{q}": reference_percentile(latencies, q) for q in (25, 50, 75, 90, 95, 99)},
    }
    assert stats["latency"] == pytest.approx(expected, abs=ROUNDING)
    ttfts = [float(row["ttft_seconds"]) for row in rows if row["ttft_seconds"]]
    if ttfts:
        expected_ttft = {
            "avg": statistics.fmean(ttfts),
            **{f"p{q}": reference_percentile(ttfts, q) for q in (50, 90, 95, 99)},
        }
        assert stats["ttft"] == pytest.approx(expected_ttft, abs=ROUNDING)


@pytest.fixture
def catalog_route(upstream: respx.MockRouter) -> respx.Route:
    return upstream.get("/models").respond(json=MODELS_BODY)


@pytest.fixture
def chat_route(upstream: respx.MockRouter, catalog_route: respx.Route) -> respx.Route:
    return upstream.post("/chat/completions").mock(side_effect=lambda _: sse_response())


async def test_benchmark_returns_statistics_and_names_its_files(
    client: httpx.AsyncClient, settings: Settings, chat_route: respx.Route
) -> None:
    response = await post_benchmark(client, runs=3)

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "completed"
    assert (body["requests"], body["finished_requests"]) == (6, 6)
    assert body["parameters"] == {
        "models": [GPT],
        "providers": [],
        "provider_sort": None,
        "prompts": 2,
        "runs": 3,
        "concurrency": 1,
        "max_tokens": 512,
        "stream": True,
        "temperature": None,
        "top_p": None,
        "rate": None,
        "arrival": "constant",
        "seed": 0,
        "warmup": 0,
        "duration": None,
        "ttft_slo": None,
        "latency_slo": None,
        "prompt_tokens": None,
        "prompt_tokens_stdev": 0.0,
        "output_tokens": None,
        "output_tokens_stdev": 0.0,
        "turns": 1,
        "tpot_slo": None,
        "sweep": None,
        "sweep_values": [],
        "label": None,
        "notes": None,
    }
    [stats] = body["models"]
    assert (stats["model"], stats["count"], stats["ok"], stats["failed"]) == (GPT, 6, 6, 0)
    rows = run_rows(settings.benchmarks_dir, body)
    assert_statistics_of_rows(stats, rows)
    for index, prompt_stats in enumerate(stats["per_prompt"], start=1):
        assert_statistics_of_rows(
            prompt_stats, [row for row in rows if row["prompt_index"] == str(index)]
        )
    assert stats["tokens_total"] == 54
    assert stats["avg_completion_tokens"] == 4.0
    assert [(p["prompt_index"], p["prompt"], p["count"]) for p in stats["per_prompt"]] == [
        (1, "Why is the sky blue?", 3),
        (2, "Say hi.", 3),
    ]
    assert body["comparison"][0]["model"] == GPT
    assert chat_route.call_count == 6

    csv_path, json_path = (
        run_file(settings.benchmarks_dir, body, "csv"),
        run_file(settings.benchmarks_dir, body, "json"),
    )
    assert csv_path.parent == json_path.parent == settings.benchmarks_dir
    assert FILE_NAME.match(csv_path.name)
    assert csv_path.stem == json_path.stem == body["id"]
    assert json.loads(json_path.read_text(encoding="utf-8")) == body
    assert tuple(rows[0]) == CSV_COLUMNS
    assert CSV_COLUMNS[:10] == (
        "model",
        "prompt_index",
        "prompt",
        "run",
        "status",
        "latency_seconds",
        "ttft_seconds",
        "prompt_tokens",
        "completion_tokens",
        "tokens_used",
    )
    assert len(rows) == 6
    assert {(row["prompt_index"], row["run"]) for row in rows} == {
        (str(p), str(r)) for p in (1, 2) for r in (1, 2, 3)
    }
    assert all(row["status"] == "200" and row["tokens_used"] == "9" for row in rows)


async def test_benchmark_streams_by_default_and_ttft_comes_before_latency(
    client: httpx.AsyncClient,
    settings: Settings,
    upstream: respx.MockRouter,
    catalog_route: respx.Route,
) -> None:
    async def slow_stream() -> AsyncIterator[bytes]:
        first, *rest = sse_chunks()
        yield first
        await asyncio.sleep(GENERATION_SECONDS)  # generation after the first token
        for chunk in rest:
            yield chunk

    route = upstream.post("/chat/completions").mock(
        side_effect=lambda _: httpx.Response(
            200, content=slow_stream(), headers={"content-type": "text/event-stream"}
        )
    )

    body = (await post_benchmark(client, prompts=b"one prompt\n", runs=1)).json()

    assert json.loads(route.calls.last.request.content)["stream"] is True
    for row in run_rows(settings.benchmarks_dir, body):
        assert 0 < float(row["ttft_seconds"]) < float(row["latency_seconds"])
        # The first token is timed when it arrives, not at the end: the rest of the answer came
        # GENERATION_SECONDS later (half of it is left as margin for a busy machine).
        gap = float(row["latency_seconds"]) - float(row["ttft_seconds"])
        assert gap >= GENERATION_SECONDS / 2
    stats = body["models"][0]
    assert stats["ttft"]["p50"] < stats["latency"]["p50"]
    assert stats["decode_tokens_per_second"] > 0
    assert body["comparison"][0]["ttft_p50"] == stats["ttft"]["p50"]


async def test_benchmark_without_stream_uses_plain_completions(
    client: httpx.AsyncClient,
    settings: Settings,
    upstream: respx.MockRouter,
    catalog_route: respx.Route,
) -> None:
    route = upstream.post("/chat/completions").respond(json=completion_body())

    body = (await post_benchmark(client, runs=1, stream="false", temperature=0.5)).json()

    sent = json.loads(route.calls.last.request.content)
    assert "stream" not in sent
    assert sent["temperature"] == 0.5
    stats = body["models"][0]
    assert stats["ttft"] == {"avg": None, "p50": None, "p90": None, "p95": None, "p99": None}
    assert stats["tokens_total"] == 42
    rows = run_rows(settings.benchmarks_dir, body)
    assert {row["ttft_seconds"] for row in rows} == {""}
    assert_statistics_of_rows(stats, rows)
    # Output tokens per second: completion tokens over each request's latency, averaged.
    latencies = [float(row["latency_seconds"]) for row in rows]
    expected_rate = statistics.fmean(9 / latency for latency in latencies)
    # The file keeps latencies to the microsecond: against a loopback upstream a latency L is a
    # fraction of a millisecond, so the half microsecond a row may lose moves 9/L visibly. The
    # rate itself is given to 6 decimals.
    off = max(9 / (latency - 0.5e-6) - 9 / latency for latency in latencies) + 0.5e-6
    assert stats["output_tokens_per_second"] == pytest.approx(expected_rate, abs=off)


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_benchmark_keeps_at_most_concurrency_requests_in_flight(
    client: httpx.AsyncClient,
    upstream: respx.MockRouter,
    catalog_route: respx.Route,
    concurrency: int,
) -> None:
    barrier = InFlightBarrier(limit=concurrency, total=12)

    async def answer(request: httpx.Request) -> httpx.Response:
        await barrier.hold()
        return sse_response()

    route = upstream.post("/chat/completions").mock(side_effect=answer)

    response = await post_benchmark(
        client, prompts=b"a\nb\nc\nd\n", runs=3, concurrency=concurrency
    )

    assert response.status_code == 200
    assert response.json()["models"][0]["ok"] == 12
    assert route.call_count == 12
    assert barrier.peak == concurrency


async def test_failed_requests_are_recorded_and_the_run_goes_on(
    client: httpx.AsyncClient,
    settings: Settings,
    upstream: respx.MockRouter,
    catalog_route: respx.Route,
) -> None:
    calls = 0

    def answer(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls in (2, 4):
            return httpx.Response(500, json=error_body(500, "provider down"))
        return sse_response()

    upstream.post("/chat/completions").mock(side_effect=answer)

    body = (await post_benchmark(client, runs=3)).json()

    stats = body["models"][0]
    assert (stats["count"], stats["ok"], stats["failed"]) == (6, 4, 2)
    assert stats["errors"] == {"UpstreamStatusError": 2}
    assert stats["latency"]["p50"] is not None
    assert (body["comparison"][0]["ok"], body["comparison"][0]["failed"]) == (4, 2)
    failed = [row for row in run_rows(settings.benchmarks_dir, body) if row["status"] != "200"]
    assert [row["status"] for row in failed] == ["502", "502"]
    assert [row["error"] for row in failed] == [
        "UpstreamStatusError: Upstream returned 500: provider down"
    ] * 2
    assert {row["latency_seconds"] for row in failed} != {""}
    assert {row["ttft_seconds"] for row in failed} == {""}
    # Statistics count the successes only.
    assert_statistics_of_rows(
        stats, [row for row in run_rows(settings.benchmarks_dir, body) if not row["error"]]
    )


async def test_a_200_stream_without_any_data_line_is_a_failed_request_not_zero_tokens(
    client: httpx.AsyncClient,
    settings: Settings,
    upstream: respx.MockRouter,
    catalog_route: respx.Route,
) -> None:
    upstream.post("/chat/completions").mock(return_value=sse_response(KEEPALIVE))

    body = (await post_benchmark(client, runs=1)).json()

    stats = body["models"][0]
    assert (stats["ok"], stats["failed"]) == (0, 2)
    assert stats["errors"] == {"UpstreamInvalidResponseError": 2}
    rows = run_rows(settings.benchmarks_dir, body)
    assert [row["error"] for row in rows] == [
        "UpstreamInvalidResponseError: Upstream stream ended without any data"
    ] * 2


async def test_a_failed_request_echoing_our_key_is_redacted_in_every_result_file(
    settings: Settings, serve: Serve, upstream: respx.MockRouter, catalog_route: respx.Route
) -> None:
    echo = f"bad key {API_KEY}; Authorization: Bearer {API_KEY}"
    upstream.post("/chat/completions").respond(400, json=error_body(400, echo))

    async with serve(settings) as client:
        response = await post_benchmark(client, runs=1)

    body = response.json()
    assert response.status_code == 200
    assert (body["models"][0]["ok"], body["models"][0]["failed"]) == (0, 2)
    rows = run_rows(settings.benchmarks_dir, body)
    assert [row["error"] for row in rows] == [
        "UpstreamStatusError: Upstream returned 400: bad key [REDACTED]; "
        "Authorization: Bearer [REDACTED]"
    ] * 2
    for text in (
        response.text,
        run_file(settings.benchmarks_dir, body, "csv").read_text(encoding="utf-8"),
        run_file(settings.benchmarks_dir, body, "json").read_text(encoding="utf-8"),
        read_log(settings),
    ):
        assert API_KEY not in text


async def test_one_run_of_one_prompt_has_zero_std_dev(
    client: httpx.AsyncClient, chat_route: respx.Route
) -> None:
    body = (await post_benchmark(client, prompts=b"only one\n", runs=1)).json()

    assert body["models"][0]["latency"]["std_dev"] == 0.0


async def test_two_models_are_interleaved_and_compared(
    client: httpx.AsyncClient, chat_route: respx.Route
) -> None:
    body = (await post_benchmark(client, models=[GPT, LLAMA, GPT], runs=2)).json()

    assert body["parameters"]["models"] == [GPT, LLAMA]
    assert [row["model"] for row in body["comparison"]] == [GPT, LLAMA]
    assert [stats["count"] for stats in body["models"]] == [4, 4]
    sent = [json.loads(call.request.content)["model"] for call in chat_route.calls]
    assert sent == [GPT, LLAMA] * 4
    assert body["id"].split("_")[1] == "openai-gpt-4o+meta-llama-3-free"


async def test_visualize_returns_an_html_report(
    client: httpx.AsyncClient, chat_route: respx.Route
) -> None:
    response = await post_benchmark(
        client, prompts=b"<script>alert(1)</script>\n", models=[GPT, LLAMA], query="?visualize=true"
    )

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = parse(response.text)
    assert [row[0] for row in page.tables["comparison"][1:]] == [GPT, LLAMA]
    assert page.tables["per-prompt"][1][2] == "<script>alert(1)</script>"
    assert "svg" in page.tags
    assert "script" not in page.tags
    svg_text = " ".join(page.svg_text)
    assert GPT in svg_text
    assert LLAMA in svg_text


async def test_two_benchmarks_at_once_write_different_files(
    client: httpx.AsyncClient, settings: Settings, chat_route: respx.Route
) -> None:
    first, second = await asyncio.gather(post_benchmark(client), post_benchmark(client))

    ids = {first.json()["id"], second.json()["id"]}
    assert len(ids) == 2
    files = {path.name for path in settings.benchmarks_dir.iterdir()}
    assert {f"{i}.{kind}" for i in ids for kind in ("csv", "json", "state")} <= files
    assert not [name for name in files if name.endswith(".partial")]


async def test_the_first_request_of_each_series_is_logged_at_info_the_others_at_debug(
    tmp_path: Path, serve: Serve, chat_route: respx.Route
) -> None:
    started = r" - (\w+) - STARTED SINGLE PROMPT IN BENCHMARK MODEL: (\S+), RUN: (\d+)$"
    quiet, verbose = make_settings(tmp_path / "info"), make_settings(tmp_path, log_level="DEBUG")
    for settings in (quiet, verbose):
        async with serve(settings) as client:
            await post_benchmark(client, models=[GPT, LLAMA], runs=2)

    # A long run's log is not a line per request: one per series says it began.
    assert sorted(re.findall(started, read_log(quiet), re.M)) == sorted(
        [("INFO", GPT, "1"), ("INFO", LLAMA, "1")]
    )
    lines = re.findall(started, read_log(verbose), re.M)
    assert sorted((model, run) for _, model, run in lines) == sorted(
        (model, run) for model in (GPT, LLAMA) for run in "1122"
    )
    assert sorted(level for level, _, _ in lines) == ["DEBUG"] * 6 + ["INFO"] * 2


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "prompts", "models", "fields", "needles"),
    [
        ({"max_runs": 2}, PROMPTS, [GPT], {"runs": 3}, ["runs=3", "MAX_RUNS=2"]),
        (
            {"max_concurrency": 4},
            PROMPTS,
            [GPT],
            {"concurrency": 5},
            ["concurrency=5", "MAX_CONCURRENCY=4"],
        ),
        ({"max_prompts": 2}, b"a\nb\nc\n", [GPT], {}, ["=3", "MAX_PROMPTS=2"]),
        (
            {"max_benchmark_requests": 7},
            PROMPTS,
            [GPT, LLAMA],
            {"runs": 2},
            ["8 requests", "MAX_BENCHMARK_REQUESTS=7"],
        ),
    ],
)
async def test_limits_are_422_naming_the_setting_and_the_value(
    tmp_path: Path,
    serve: Serve,
    chat_route: respx.Route,
    overrides: dict[str, int],
    prompts: bytes,
    models: list[str],
    fields: dict[str, int],
    needles: list[str],
) -> None:
    async with serve(make_settings(tmp_path, **overrides)) as client:
        response = await post_benchmark(client, prompts=prompts, models=models, form=fields)

    assert response.status_code == 422
    assert response.json()["error"] == "LimitExceededError"
    for needle in needles:
        assert needle in response.json()["detail"]
    assert chat_route.call_count == 0


@pytest.mark.parametrize(
    ("prompts", "needle"),
    [
        (b"", "empty"),
        (b"\n   \r\n\n", "only blank lines"),
        (b"caf\xe9 au lait\n", "not valid UTF-8"),
        (b"text\x00binary\n", "NUL"),
    ],
)
async def test_unusable_prompt_files_are_422(
    client: httpx.AsyncClient, chat_route: respx.Route, prompts: bytes, needle: str
) -> None:
    response = await post_benchmark(client, prompts=prompts)

    assert response.status_code == 422
    assert response.json()["error"] == "InvalidInputError"
    assert needle in response.json()["detail"]
    assert chat_route.call_count == 0


async def test_unknown_models_are_404_before_any_request(
    client: httpx.AsyncClient, chat_route: respx.Route
) -> None:
    response = await post_benchmark(client, models=[GPT, "nobody/nothing"])

    assert response.status_code == 404
    assert response.json()["error"] == "UnknownModelError"
    assert "nobody/nothing" in response.json()["detail"]
    assert chat_route.call_count == 0


@pytest.mark.parametrize(
    ("model", "kind", "needle"),
    [
        ("x" * 201, "string_too_long", "at most 200 characters"),
        ("openai/gpt-4o\x07", "value_error", "control or line-break character U+0007"),
        ("openai/gpt-4o\u2029", "value_error", "control or line-break character U+2029"),
        ("  ", "string_too_short", "at least 1 character"),
    ],
)
async def test_malformed_model_ids_are_422(
    client: httpx.AsyncClient, chat_route: respx.Route, model: str, kind: str, needle: str
) -> None:
    response = await post_benchmark(client, models=[model])

    assert_validation_error(response, ("body", "model", 0), kind)
    assert needle in response.json()["detail"][0]["msg"]
    assert chat_route.call_count == 0


@pytest.mark.parametrize(
    ("fields", "field"),
    [({"runs": 0}, "runs"), ({"concurrency": 0}, "concurrency"), ({"max_tokens": 0}, "max_tokens")],
)
async def test_non_positive_numbers_are_422_naming_the_field(
    client: httpx.AsyncClient, chat_route: respx.Route, fields: dict[str, int], field: str
) -> None:
    response = await post_benchmark(client, form=fields)

    assert response.status_code == 422
    assert field in {str(part) for error in response.json()["detail"] for part in error["loc"]}
    assert chat_route.call_count == 0


async def test_a_missing_prompt_file_is_422(
    client: httpx.AsyncClient, chat_route: respx.Route
) -> None:
    response = await client.post("/benchmark", data={"model": GPT}, files={"other": b"x"})

    assert response.status_code == 422
    assert chat_route.call_count == 0


@pytest.mark.parametrize("size", [200, 70 * 1024])  # read past the limit / refused by its header
async def test_an_oversized_upload_is_413(
    tmp_path: Path, serve: Serve, chat_route: respx.Route, size: int
) -> None:
    async with serve(make_settings(tmp_path, max_upload_bytes=100)) as client:
        response = await post_benchmark(client, prompts=b"x" * (size - 1) + b"\n")

    assert response.status_code == 413
    assert response.json()["error"] == "PayloadTooLargeError"
    assert "MAX_UPLOAD_BYTES=100" in response.json()["detail"]
    assert chat_route.call_count == 0


async def test_an_oversized_chunked_upload_is_413_without_a_content_length(
    tmp_path: Path, serve: Serve, chat_route: respx.Route
) -> None:
    form = httpx.Request(
        "POST",
        "http://service.test/benchmark",
        data={"model": GPT},
        files={"prompt_file": ("p.txt", b"x" * 200 * 1024, "text/plain")},
    )
    body = form.read()
    received: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 16 * 1024):
            received.append(start)
            yield body[start : start + 16 * 1024]

    async with serve(make_settings(tmp_path, max_upload_bytes=100)) as client:
        response = await client.post(
            "/benchmark",
            content=chunks(),
            headers={"content-type": form.headers["content-type"]},
        )

    assert response.status_code == 413
    assert response.json()["error"] == "PayloadTooLargeError"
    assert len(received) * 16 * 1024 < len(body)  # stopped reading early


# --- saved runs ----------------------------------------------------------------------------


async def test_saved_benchmarks_are_listed_newest_first_and_shown(
    client: httpx.AsyncClient, chat_route: respx.Route
) -> None:
    first = (await post_benchmark(client, runs=1)).json()
    second = (await post_benchmark(client, models=[LLAMA], runs=1)).json()

    listing = (await client.get("/benchmarks")).json()
    shown = await client.get(f"/benchmarks/{first['id']}")
    report = await client.get(f"/benchmarks/{second['id']}/report")

    assert listing["count"] == 2
    assert [item["id"] for item in listing["benchmarks"]] == [second["id"], first["id"]]
    assert listing["benchmarks"][0] == {
        "id": second["id"],
        "status": "completed",
        "started_at": second["started_at"],
        "finished_at": second["finished_at"],
        "models": [LLAMA],
        "providers": [],
        "label": None,
        "requests": 2,
        "finished_requests": 2,
        "cost": second["cost"],
        "comparison": second["comparison"],
        "files": second["files"],
    }
    assert (await client.get("/benchmarks?limit=1")).json()["count"] == 1
    assert shown.status_code == 200
    assert shown.json() == first
    assert report.status_code == 200
    assert report.headers["content-type"].startswith("text/html")
    assert second["id"] in report.text


@pytest.mark.parametrize(
    "benchmark_id",
    # "%2E%2E": a plain ".." is resolved by the client itself (to "/", the home page).
    ["20261126T101500Z_openai-gpt-4o_0123abcd", "%2E%2E", "..%2F..%2Fetc%2Fpasswd", "not-an-id"],
)
async def test_an_unknown_benchmark_is_404_json(
    client: httpx.AsyncClient, benchmark_id: str
) -> None:
    for path in (f"/benchmarks/{benchmark_id}", f"/benchmarks/{benchmark_id}/report"):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.json()["request_id"] == response.headers["x-request-id"]


async def test_an_empty_benchmarks_directory_lists_nothing(client: httpx.AsyncClient) -> None:
    assert (await client.get("/benchmarks")).json() == {"count": 0, "benchmarks": []}


async def test_benchmarks_need_the_inbound_key_when_one_is_set(
    tmp_path: Path, serve: Serve, chat_route: respx.Route
) -> None:
    async with serve(make_settings(tmp_path, proxy_api_keys="inbound-key-0123456789")) as client:
        posted = await post_benchmark(client)
        listed = await client.get("/benchmarks")
        allowed = await client.get(
            "/benchmarks", headers={"Authorization": "Bearer inbound-key-0123456789"}
        )

    assert (posted.status_code, listed.status_code, allowed.status_code) == (401, 401, 200)
    assert chat_route.call_count == 0


# --- interruption --------------------------------------------------------------------------


@pytest.mark.parametrize("isolation", ["inline", "process"])
async def test_a_client_disconnect_stops_the_benchmark_and_keeps_its_results(
    tmp_path: Path,
    serve: Serve,
    upstream: respx.MockRouter,
    catalog_route: respx.Route,
    isolation: str,
) -> None:
    answer = HangAfter(2, lambda: sse_response())
    upstream.post("/chat/completions").mock(side_effect=answer)
    settings = make_settings(tmp_path, benchmark_isolation=isolation)
    form = httpx.Request(
        "POST",
        "http://service.test/benchmark",
        data={"model": GPT, "runs": "10"},
        files={"prompt_file": ("p.txt", PROMPTS, "text/plain")},
    )
    body_sent = False
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": form.read(), "more_body": False}
        await answer.hanging.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = http_scope("POST", "/benchmark", dict(form.headers))
    app = serve.app(settings)
    async with LifespanManager(app) as manager:
        await asyncio.wait_for(manager.app(scope, receive, send), 30)

    assert sent[0]["status"] == 499
    [json_path] = settings.benchmarks_dir.glob("*.json")
    summary = json.loads(json_path.read_text(encoding="utf-8"))
    assert summary["status"] == "interrupted"
    assert (summary["requests"], summary["finished_requests"]) == (20, 2)
    assert len(run_rows(settings.benchmarks_dir, summary)) == 2
    assert answer.calls == 3


async def test_emulator_mode_refuses_a_real_model_before_asking_the_catalog(
    tmp_path: Path,
) -> None:
    class NoCatalog:
        async def require(self, model_ids: list[str]) -> None:  # noqa: ARG002
            raise AssertionError("the catalog must not be asked")

    class NoLauncher:
        def live(self) -> dict[str, int]:
            raise AssertionError("no room must be looked for")

    settings = make_settings(tmp_path, openrouter_api_key="")

    with pytest.raises(UnknownModelError, match="OPENROUTER_API_KEY"):
        await start_benchmark(
            settings,
            cast(BenchmarkLauncher, NoLauncher()),
            cast(ModelCatalog, NoCatalog()),
            FakeUpload(b"hi\n"),
            BenchmarkParameters(models=[GPT]),
            EVERYONE,
        )


async def test_a_benchmark_in_its_own_runner_process_records_every_row(
    tmp_path: Path, serve: Serve, chat_route: respx.Route
) -> None:
    # The default isolation: the runner is a child process with its own client, which reaches
    # the same (loopback) upstream.
    settings = make_settings(tmp_path, benchmark_isolation="process")

    async with serve(settings) as client:
        response = await post_benchmark(client, runs=3, concurrency=2)

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["requests"], body["finished_requests"]) == ("completed", 6, 6)
    assert chat_route.call_count == 6
    rows = run_rows(settings.benchmarks_dir, body)
    assert [row["status"] for row in rows] == ["200"] * 6
    log = read_log(settings)
    assert log.count("STARTED SINGLE PROMPT IN BENCHMARK MODEL") == 1  # the rest at DEBUG
    assert API_KEY not in log
