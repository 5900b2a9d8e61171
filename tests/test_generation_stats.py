"""OpenRouter's own record of each generation, cross-checked against what we measured.

The emulator keeps a record of each generation and answers 404 for it until
`generation_delay_seconds` after the generation ended, as OpenRouter does.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from src.schemas.benchmarks import RequestRecord
from src.schemas.prompts import GenerationResult, GenerationStats
from src.services.benchmarker.load.run_utils import cost_of
from src.services.emulator import EmulatorConfig
from src.services.emulator.server import serve_embedded_emulator
from src.services.openrouter.catalog import TokenPrices
from src.services.openrouter.generations import with_stats
from tests.helpers.app import Serve, make_settings
from tests.helpers.benchmarks import PROMPTS

pytestmark = pytest.mark.anyio

SMALL = "emulator/small"


async def _service(
    tmp_path: Path, config: EmulatorConfig, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        serve_embedded_emulator(config) as url,
        Serve(url)(make_settings(tmp_path, **settings)) as client,
    ):
        yield client


async def _benchmark(client: httpx.AsyncClient) -> tuple[dict[str, Any], list[dict[str, str]]]:
    answer = await client.post(
        "/benchmark",
        files={"prompt_file": ("prompts.txt", PROMPTS, "text/plain")},
        data={"model": SMALL, "provider": "alpha", "runs": "2"},
    )
    assert answer.status_code == 200, answer.text
    summary: dict[str, Any] = answer.json()
    rows = await client.get(summary["files"]["csv_url"])
    return summary, list(csv.DictReader(io.StringIO(rows.text)))


async def test_records_that_appear_late_fill_every_row_and_the_outside_share(
    tmp_path: Path,
) -> None:
    # Every record is a 404 for half a second after its generation: the last ones are fetched
    # right after the run, so they are found only by asking again.
    config = EmulatorConfig(generation_delay_seconds=0.5, ttft_seconds=0.2, tokens_per_second=200.0)
    async for client in _service(
        tmp_path, config, generation_stats=True, generation_stats_wait_seconds=30
    ):
        summary, rows = await _benchmark(client)
        assert summary["status"] == "completed"
        assert len(rows) == 4
        for row in rows:
            assert row["generation_record"] == "found", row
            assert float(row["upstream_latency_seconds"]) >= 0
            assert row["upstream_generation_seconds"] != ""
            assert row["native_completion_tokens"] == row["completion_tokens"]
            assert row["cost_source"] == "generation"
            assert float(row["cost"]) == pytest.approx(float(row["generation_cost"]))
        [series] = summary["models"]
        outside = series["outside_upstream"]
        assert (outside["count"], outside["missing"]) == (4, 0)
        assert outside["p50_seconds"] is not None
        # Loopback: almost all of our latency is inside the emulator's own record.
        assert -0.05 < outside["p50_share"] < 0.5
        report = await client.get(summary["files"]["report_url"])
        assert 'id="outside-upstream"' in report.text


async def test_a_record_that_never_comes_is_marked_and_the_run_still_completes(
    tmp_path: Path,
) -> None:
    config = EmulatorConfig(generation_delay_seconds=3600)
    async for client in _service(
        tmp_path, config, generation_stats=True, generation_stats_wait_seconds=0.5
    ):
        summary, rows = await _benchmark(client)
        assert summary["status"] == "completed"
        assert [row["generation_record"] for row in rows] == ["missing"] * 4
        assert all(row["status"] == "200" for row in rows)
        assert {row["cost_source"] for row in rows} == {"upstream"}
        outside = summary["models"][0]["outside_upstream"]
        assert (outside["count"], outside["missing"], outside["p50_seconds"]) == (0, 4, None)


async def test_without_the_setting_no_record_is_fetched(tmp_path: Path) -> None:
    async for client in _service(tmp_path, EmulatorConfig()):
        summary, rows = await _benchmark(client)
        assert {row["generation_record"] for row in rows} == {""}
        assert summary["models"][0]["outside_upstream"] is None


async def test_generate_fetches_the_record_when_asked(tmp_path: Path) -> None:
    config = EmulatorConfig(generation_delay_seconds=0.3)
    async for client in _service(tmp_path, config, generation_stats_wait_seconds=30):
        answer = await client.post(
            "/generate", json={"model": SMALL, "prompt": "Hello", "generation_stats": True}
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["generation_record"] == "found"
        assert body["generation"]["provider"] == body["provider"]
        assert body["generation"]["native_completion_tokens"] == body["completion_tokens"]
        assert body["cost"] == body["generation"]["cost"]
        plain = await client.post("/generate", json={"model": SMALL, "prompt": "Hello"})
        assert plain.json()["generation"] is None


def _record(cost: float | None) -> RequestRecord:
    return RequestRecord(
        text="",
        model=SMALL,
        finish_reason="stop",
        prompt_tokens=10,
        completion_tokens=20,
        tokens_used=30,
        latency_seconds=1.0,
        total_seconds=1.0,
        cost=cost,
        prompt_index=1,
        prompt="p",
        run=1,
        status=200,
    )


def test_cost_prefers_the_generation_record_then_usage_then_prices() -> None:
    prices = TokenPrices(prompt=0.001, completion=0.002)
    charged = GenerationResult.model_validate(_record(0.5).model_dump())
    unsaid = GenerationResult.model_validate(_record(None).model_dump())
    assert cost_of(charged, prices) == (0.5, "upstream")
    priced, source = cost_of(unsaid, prices)
    assert source == "pricing"
    assert priced == pytest.approx(0.05)
    assert cost_of(unsaid, None) == (None, None)

    record = _record(0.5).model_copy(update={"cost_source": "upstream"})
    stats = GenerationStats(
        latency_seconds=0.2,
        generation_seconds=0.7,
        native_prompt_tokens=11,
        native_completion_tokens=19,
        cost=0.75,
    )
    found = with_stats(record, stats)
    assert (found.cost, found.cost_source, found.generation_record) == (0.75, "generation", "found")
    no_cost = with_stats(record, stats.model_copy(update={"cost": None}))
    assert (no_cost.cost, no_cost.cost_source) == (0.5, "upstream")
    missing = with_stats(record, None)
    assert (missing.cost, missing.cost_source, missing.generation_record) == (
        0.5,
        "upstream",
        "missing",
    )
