"""Sweeps: one run stepping through concurrencies or rates, each step with its own statistics,
and the knee: per model, the highest step whose requests met the SLOs."""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from src.services.emulator.config import EmulatorConfig
from src.services.emulator.server import serve_embedded_emulator
from tests.helpers.app import Serve, make_settings
from tests.helpers.benchmarks import post_benchmark

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
