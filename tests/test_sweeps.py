"""Sweeps: one run stepping through concurrencies or rates, each step with its own statistics,
and the knee: per model, the highest step whose requests met the SLOs."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from rich.console import Console

from src.cli import print_steps
from src.schemas.benchmarks import BenchmarkSummary, ModelStats, RequestRecord, StepStats
from src.services.benchmarker.results.report import render_report
from src.services.benchmarker.results.statistics import Slo, knee_points, lengths, request_stats
from src.services.emulator.config import EmulatorConfig
from src.services.emulator.server import serve_embedded_emulator
from tests.helpers.app import Serve, make_settings
from tests.helpers.benchmarks import post_benchmark
from tests.helpers.openrouter import MODELS_BODY, sse_response
from tests.helpers.results import request_result as result
from tests.helpers.results import run_rows

pytestmark = pytest.mark.anyio

MODEL = "emulator/medium"
CAPACITY = 2
TTFT = 0.5
# Above one answer's time (TTFT), below an answer that waited for another (2 x TTFT).
LATENCY_SLO = 0.8
# Every answer takes TTFT on its provider, whatever the model's own speed.
PROMPTS = (
    f"Count to three. [[emulator:ttft={TTFT}]]\nName a colour. [[emulator:ttft={TTFT}]]\n".encode()
)


@pytest.fixture
def chat_route(upstream: respx.MockRouter) -> respx.Route:
    upstream.get("/models").respond(json=MODELS_BODY)
    return upstream.post("/chat/completions").mock(side_effect=lambda _: sse_response())


@pytest.fixture
async def emulator_url() -> AsyncIterator[str]:
    # Every request goes to one provider (the other fails and is skipped), so the model's
    # capacity is the provider's: past CAPACITY in flight, requests queue for a whole answer.
    config = EmulatorConfig(
        capacity=CAPACITY,
        tokens_per_second=0.0,
        failing_providers=frozenset({"Beta"}),
        generation_delay_seconds=0.0,
    )
    async with serve_embedded_emulator(config) as url:
        yield url


async def sweep(emulator_url: str, tmp_path: Path, **form: object) -> dict[str, Any]:
    settings = make_settings(tmp_path, openrouter_base_url=emulator_url)
    async with Serve(emulator_url)(settings) as client:
        response = await post_benchmark(client, PROMPTS, models=(MODEL,), form=form)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_concurrency_sweeps_knee_is_the_emulators_capacity(
    emulator_url: str, tmp_path: Path
) -> None:
    summary = await sweep(
        emulator_url,
        tmp_path,
        sweep="concurrency",
        sweep_values="1,2,4",
        runs=4,
        latency_slo=LATENCY_SLO,
    )

    steps = summary["steps"]
    assert [step["concurrency"] for step in steps] == [1, 2, 4]
    assert [step["models"][0]["model"] for step in steps] == [MODEL] * 3
    assert [step["models"][0]["count"] for step in steps] == [8, 8, 8]
    latencies = [step["models"][0]["latency"]["max"] for step in steps]
    assert [step["models"][0]["goodput"] for step in steps][:2] == [1.0, 1.0], latencies
    assert steps[2]["models"][0]["goodput"] < 0.5
    [knee] = summary["knee"]
    assert (knee["model"], knee["step"], knee["concurrency"]) == (MODEL, 2, CAPACITY)
    assert knee["goodput_per_second"] > 0
    # Every row says which step sent it.
    with open(tmp_path / "benchmarks" / f"{summary['id']}.csv", newline="") as file:
        steps_of_rows = [row["step"] for row in csv.DictReader(file)]
    assert sorted(steps_of_rows) == ["1"] * 8 + ["2"] * 8 + ["3"] * 8
    # The report plots each series against the throughput each step achieved, knee ringed.
    page = render_report(BenchmarkSummary.model_validate(summary))
    assert page.count("<polyline") == 4  # latency and TTFT, p50 and p95
    assert page.count('<g class="knee">') == 1
    assert "knee (step 2)" in page
    assert "<td>yes (knee)</td>" in page
    assert "<script" not in page


async def test_auto_sweeps_a_synchronous_step_a_throughput_step_then_rates_between(
    emulator_url: str, tmp_path: Path
) -> None:
    summary = await sweep(
        emulator_url, tmp_path, sweep="auto", sweep_values="2", concurrency=4, runs=2
    )

    steps = summary["steps"]
    assert [(step["step"], step["concurrency"]) for step in steps] == [
        (1, 1),
        (2, 4),
        (3, 4),
        (4, 4),
    ]
    assert [step["rate"] is None for step in steps] == [True, True, False, False]
    synchronous, maximum = steps[0]["requests_per_second"], steps[1]["requests_per_second"]
    rates = [step["rate"] for step in steps[2:]]
    assert synchronous < rates[0] < rates[1] < maximum
    assert [step["models"][0]["count"] for step in steps] == [4] * 4
    assert summary["knee"] is None  # no SLO, no knee
    assert summary["requests"] == 16


async def test_a_rate_sweep_names_each_steps_rate(emulator_url: str, tmp_path: Path) -> None:
    summary = await sweep(
        emulator_url,
        tmp_path,
        sweep="rate",
        sweep_values="2,4",
        concurrency=8,
        runs=1,
        ttft_slo=LATENCY_SLO,
    )

    assert [(step["rate"], step["concurrency"]) for step in summary["steps"]] == [
        (2.0, 8),
        (4.0, 8),
    ]
    schedules = [step["schedule"] for step in summary["steps"]]
    assert [schedule["target_rate"] for schedule in schedules] == [2.0, 4.0]
    assert all(
        schedule["lag_p50"] <= schedule["lag_p99"] <= schedule["lag_max"] for schedule in schedules
    )
    assert all(schedule["achieved_rate"] is not None for schedule in schedules)
    [knee] = summary["knee"]
    assert knee["model"] == MODEL
    assert knee["step"] in (1, 2)


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"sweep_values": "1,2"}, "sweep_values needs a sweep"),
        ({"sweep": "concurrency"}, "needs sweep_values"),
        ({"sweep": "concurrency", "sweep_values": "1,2.5"}, "whole numbers"),
        ({"sweep": "rate", "sweep_values": "4,2"}, "ascending"),
        ({"sweep": "rate", "sweep_values": "0,2"}, "above 0"),
        ({"sweep": "auto", "sweep_values": "2,3"}, "one count"),
        ({"sweep": "rate", "sweep_values": "1,x"}, "sweep_values"),
        ({"sweep": "sideways", "sweep_values": "1"}, "sweep"),
        ({"tpot_slo": "0.1", "stream": "false"}, "tpot_slo needs stream=true"),
    ],
)
async def test_sweep_parameters_that_do_not_fit_are_422_before_anything_is_sent(
    client: httpx.AsyncClient, chat_route: respx.Route, fields: dict[str, str], needle: str
) -> None:
    response = await post_benchmark(client, form=fields)

    assert response.status_code == 422, response.text
    assert needle in response.text
    assert chat_route.call_count == 0


async def test_a_concurrency_sweep_past_max_concurrency_is_422_naming_the_setting(
    tmp_path: Path, serve: Serve, chat_route: respx.Route
) -> None:
    async with serve(make_settings(tmp_path, max_concurrency=4)) as client:
        response = await post_benchmark(
            client, form={"sweep": "concurrency", "sweep_values": "2,8"}
        )

    assert response.status_code == 422
    assert "concurrency=8 exceeds MAX_CONCURRENCY=4" in response.json()["detail"]
    assert chat_route.call_count == 0


async def test_the_request_cap_counts_every_step(
    tmp_path: Path, serve: Serve, chat_route: respx.Route
) -> None:
    settings = make_settings(tmp_path, max_benchmark_requests=10)
    async with serve(settings) as client:
        response = await post_benchmark(
            client, runs=2, form={"sweep": "concurrency", "sweep_values": "1,2,4"}
        )

    assert response.status_code == 422
    assert (
        "x 3 sweep steps = 12 requests exceeds MAX_BENCHMARK_REQUESTS=10"
        in (response.json()["detail"])
    )
    assert chat_route.call_count == 0


async def test_a_rate_sweep_whose_schedule_outlasts_max_run_seconds_is_422(
    tmp_path: Path, serve: Serve, chat_route: respx.Route
) -> None:
    settings = make_settings(tmp_path, max_run_seconds=60)
    async with serve(settings) as client:
        # 2 prompts x 1 run: each step's last send is due 1 / rate after its first.
        response = await post_benchmark(
            client, runs=1, form={"sweep": "rate", "sweep_values": "0.02,0.05"}
        )

    assert response.status_code == 422
    assert (
        "sweep=rate sends its last request after 70 s, which exceeds MAX_RUN_SECONDS=60"
        in (response.json()["detail"])
    )
    assert chat_route.call_count == 0


def test_the_knee_is_the_highest_step_whose_requests_met_the_slos() -> None:
    slo = Slo(latency=1.0, tpot=0.1)
    fast = [result(0.5, ttft=0.1, completion=5) for _ in range(20)]
    slow_decode = [result(0.9, ttft=0.1, completion=5) for _ in range(20)]  # tpot 0.2
    one_late = [*fast[:19], result(1.5, ttft=0.1, completion=5)]  # 95% good: still met
    steps = [
        step_stats(1, fast, slo),
        step_stats(2, one_late, slo),
        step_stats(3, slow_decode, slo),
    ]

    [knee] = knee_points([("m/x", None)], steps)

    assert (knee.step, knee.concurrency) == (2, 2)
    assert knee.goodput_per_second == pytest.approx(19 / 2.0)
    assert [point.step for point in knee_points([("m/x", None)], steps[2:])] == [None]


def step_stats(number: int, records: list[RequestRecord], slo: Slo) -> StepStats:
    stats = request_stats(records, 2.0, slo)
    return StepStats(
        step=number,
        concurrency=number,
        rate=None,
        wall_seconds=2.0,
        requests_per_second=stats.requests_per_second,
        models=[
            ModelStats(
                model="m/x", per_prompt=[], lengths=lengths(records, None, None), **dict(stats)
            )
        ],
    )


# Per provider of emulator/small: Gamma answers in 0.8 x this, Beta in 1.5 x.
PINNED_TTFT = 0.4
# Above Gamma's answer (0.32 s), below Beta's (0.6 s) and below a Gamma answer that waited
# for another (0.64 s).
PINNED_LATENCY_SLO = 0.45


@pytest.fixture
async def one_at_a_time_emulator_url() -> AsyncIterator[str]:
    # Each provider of a model answers one request at a time; the next one queues for it.
    config = EmulatorConfig(
        capacity=1, ttft_seconds=PINNED_TTFT, tokens_per_second=0.0, generation_delay_seconds=0.0
    )
    async with serve_embedded_emulator(config) as url:
        yield url


async def test_a_provider_pinned_concurrency_sweep_has_a_knee_per_model_and_provider(
    one_at_a_time_emulator_url: str, tmp_path: Path
) -> None:
    url = one_at_a_time_emulator_url
    settings = make_settings(tmp_path, openrouter_base_url=url)
    async with Serve(url)(settings) as client:
        response = await client.post(
            "/benchmark",
            files={"prompt_file": ("p.txt", b"Count to three.\nName a colour.\n", "text/plain")},
            data={
                "model": ["emulator/small"],
                "provider": ["gamma", "beta"],
                "runs": "1",
                "sweep": "concurrency",
                "sweep_values": "1,2,4",
                "latency_slo": str(PINNED_LATENCY_SLO),
            },
        )
    assert response.status_code == 200, response.text
    summary = response.json()

    series = [("emulator/small", "gamma"), ("emulator/small", "beta")]
    # 2 prompts x 1 run x 2 series per step; each step's statistics are per series.
    assert summary["requests"] == 12
    for step in summary["steps"]:
        assert [(s["model"], s["provider"], s["count"]) for s in step["models"]] == [
            (*key, 2) for key in series
        ]
    latencies = {
        (step["step"], s["provider"]): s["latency"]["max"]
        for step in summary["steps"]
        for s in step["models"]
    }
    # Gamma meets the SLO until two of its requests are in flight at once (step 3: four in
    # flight, two per provider); Beta, slower, meets it at no step.
    knees = [(k["model"], k["provider"], k["step"], k["concurrency"]) for k in summary["knee"]]
    assert knees == [
        ("emulator/small", "gamma", 2, 2),
        ("emulator/small", "beta", None, None),
    ], latencies
    # Every row names its series and its step.
    rows = [
        (row["pinned_provider"], row["step"]) for row in run_rows(settings.benchmarks_dir, summary)
    ]
    assert sorted(rows) == sorted(
        (provider, step) for provider in ("gamma", "beta") for step in "123" for _ in range(2)
    )
    # The report draws one plot per series, and rings the one knee there is.
    page = render_report(BenchmarkSummary.model_validate(summary))
    assert "<h3>emulator/small @ gamma</h3>" in page
    assert "<h3>emulator/small @ beta</h3>" in page
    assert page.count('<g class="knee">') == 1
    # The command line's step table names the series, the knee on Gamma's second step.
    out = io.StringIO()
    print_steps(summary, Console(file=out, width=100, color_system=None))
    marked = [line.split() for line in out.getvalue().splitlines() if "knee" in line]
    assert [(cells[0], cells[1:4]) for cells in marked] == [("2", ["emulator/small", "@", "gamma"])]


async def test_a_sweep_with_synthetic_prompts_sends_every_step_the_calibrated_lengths(
    emulator_url: str, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, openrouter_base_url=emulator_url)
    async with Serve(emulator_url)(settings) as client:
        response = await client.post(
            "/benchmark",
            data={
                "model": [MODEL],
                "prompt_tokens": "60",
                "prompts": "3",
                "output_tokens": "8",
                "warmup": "1",
                "runs": "1",
                "sweep": "rate",
                "sweep_values": "20,40",
                "concurrency": "4",
            },
        )
    assert response.status_code == 200, response.text
    summary = response.json()

    assert (summary["requests"], summary["warmup_requests"]) == (6, 1)
    steps = summary["steps"]
    assert [(step["step"], step["rate"]) for step in steps] == [(1, 20.0), (2, 40.0)]
    for step in steps:
        [stats] = step["models"]
        assert stats["count"] == stats["ok"] == 3
        lengths = stats["lengths"]
        # The warm-up measured the model's tokens per word, so every step lands on the target
        # (the emulator counts a token per word).
        assert lengths["input"]["target"] == 60
        assert lengths["input"]["mean"] == pytest.approx(60, rel=0.05)
        assert lengths["output"]["target"] == 8
    rows = [(row["warmup"], row["step"]) for row in run_rows(settings.benchmarks_dir, summary)]
    assert sorted(rows) == [("false", "1")] * 3 + [("false", "2")] * 3 + [("true", "")]


async def test_a_sweep_over_a_datasets_conversations_sends_every_turn_in_every_step(
    emulator_url: str, tmp_path: Path
) -> None:
    conversation = {
        "conversations": [
            {"from": "human", "value": "First?"},
            {"from": "gpt", "value": "A recorded answer, never sent."},
            {"from": "human", "value": "Second?"},
        ]
    }
    dataset = (json.dumps(conversation) + "\n") * 2
    settings = make_settings(tmp_path, openrouter_base_url=emulator_url)
    async with Serve(emulator_url)(settings) as client:
        response = await client.post(
            "/benchmark",
            files={"dataset_file": ("chats.jsonl", dataset.encode(), "application/x-ndjson")},
            data={
                "model": [MODEL],
                "turns": "2",
                "runs": "1",
                "sweep": "concurrency",
                "sweep_values": "1,2",
            },
        )
    assert response.status_code == 200, response.text
    summary = response.json()

    # 2 conversations x 2 turns x 1 run, in each of the 2 steps.
    assert summary["requests"] == summary["finished_requests"] == 8
    assert summary["progress"]["step_total"] == 4
    for step in summary["steps"]:
        [stats] = step["models"]
        assert (stats["count"], stats["ok"]) == (4, 4)
        assert [(t["turn"], t["count"]) for t in stats["per_turn"]] == [(1, 2), (2, 2)]
    rows = [(r["step"], r["turn"]) for r in run_rows(settings.benchmarks_dir, summary)]
    assert sorted(rows) == [(step, turn) for step in "12" for turn in "12" for _ in range(2)]
