"""Which provider answered each request, and providers measured as series of their own.

The upstream is the emulator on a loopback socket: it serves `emulator/small` through Alpha,
Beta and Gamma (each with its own speed factors) and rotates over them when not pinned.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import respx
from rich.console import Console

from src import cli
from src.cli import print_comparison
from src.services.emulator import MODELS_BY_ID, EmulatorConfig
from src.services.emulator.providers import provider_speed
from src.services.emulator.server import serve_embedded_emulator
from tests.helpers.app import Serve, make_settings
from tests.helpers.benchmarks import PROMPTS
from tests.helpers.openrouter import GPT, MODELS_BODY

pytestmark = pytest.mark.anyio

SMALL = "emulator/small"
MEDIUM = "emulator/medium"
MIXED = "answered by 3 providers: these figures mix them; pin providers to compare"
# Slow enough that a loaded machine's scheduling is small next to it, fast enough for a test.
TTFT = 0.2
TOKENS_PER_SECOND = 100.0


async def _service(
    tmp_path: Path, config: EmulatorConfig, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        serve_embedded_emulator(config) as url,
        Serve(url)(make_settings(tmp_path, **settings)) as client,
    ):
        yield client


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for client in _service(tmp_path, EmulatorConfig()):
        yield client


async def post_benchmark(
    client: httpx.AsyncClient,
    models: list[str],
    form: dict[str, object] | None = None,
    **fields: object,
) -> httpx.Response:
    """The form as a browser sends it: `model` and `provider` repeated, one value each."""
    data: dict[str, Any] = {"model": models, **{k: str(v) for k, v in fields.items()}}
    data.update(form or {})
    return await client.post(
        "/benchmark",
        files={"prompt_file": ("prompts.txt", PROMPTS, "text/plain")},
        data=data,
    )


async def _rows(client: httpx.AsyncClient, summary: dict[str, Any]) -> list[dict[str, str]]:
    answer = await client.get(summary["files"]["csv_url"])
    assert answer.status_code == 200, answer.text
    return list(csv.DictReader(io.StringIO(answer.text)))


def _series(summary: dict[str, Any], model: str, provider: str | None) -> dict[str, Any]:
    matches = [s for s in summary["models"] if s["model"] == model and s["provider"] == provider]
    assert len(matches) == 1, [(s["model"], s["provider"]) for s in summary["models"]]
    series: dict[str, Any] = matches[0]
    return series


async def test_rows_and_stats_name_the_provider_that_answered_each_request(
    service: httpx.AsyncClient,
) -> None:
    answer = await post_benchmark(service, models=[SMALL], runs=3)
    assert answer.status_code == 200, answer.text
    summary = answer.json()

    rows = await _rows(service, summary)
    assert len(rows) == 6
    assert {row["provider"] for row in rows} == {"Alpha", "Beta", "Gamma"}
    assert all(row["generation_id"].startswith("gen-") for row in rows)
    assert len({row["generation_id"] for row in rows}) == 6

    series = _series(summary, SMALL, None)
    by_provider = {entry["provider"]: entry for entry in series["by_provider"]}
    assert set(by_provider) == {"Alpha", "Beta", "Gamma"}
    for name, entry in by_provider.items():
        served = [row for row in rows if row["provider"] == name]
        assert entry["count"] == len(served)
        assert entry["ok"] == len(served)
        assert entry["latency"]["p50"] is not None
        assert entry["ttft"]["p50"] is not None
        assert entry["output_tokens_per_second"] is not None
        assert entry["cost"] is not None
    assert series["warnings"] == [MIXED]
    assert summary["comparison"][0]["provider"] is None
    assert summary["comparison"][0]["providers_answered"] == 3


async def test_a_series_answered_by_one_provider_carries_no_warning(
    service: httpx.AsyncClient,
) -> None:
    answer = await post_benchmark(service, models=[SMALL], runs=1, provider="gamma")
    assert answer.status_code == 200, answer.text
    series = _series(answer.json(), SMALL, "gamma")
    assert series["warnings"] == []
    assert [entry["provider"] for entry in series["by_provider"]] == ["Gamma"]


async def test_generate_and_its_done_event_name_the_provider(service: httpx.AsyncClient) -> None:
    plain = await service.post("/generate", json={"model": SMALL, "prompt": "Hi there"})
    assert plain.status_code == 200, plain.text
    assert plain.json()["provider"] in {"Alpha", "Beta", "Gamma"}
    assert plain.json()["generation_id"].startswith("gen-")

    streamed = await service.post(
        "/generate", json={"model": SMALL, "prompt": "Hi there", "stream": True}
    )
    assert streamed.status_code == 200, streamed.text
    done = streamed.text.split("event: done\n", 1)[1]
    data = orjson.loads(done.split("data: ", 1)[1].split("\n", 1)[0])
    assert data["provider"] in {"Alpha", "Beta", "Gamma"}


async def test_each_listed_provider_is_a_pinned_series_of_its_own(
    service: httpx.AsyncClient,
) -> None:
    answer = await post_benchmark(
        service, models=[SMALL, MEDIUM], runs=2, form={"provider": ["alpha", "beta"]}
    )
    assert answer.status_code == 200, answer.text
    summary = answer.json()
    pairs = [(row["model"], row["provider"]) for row in summary["comparison"]]
    assert sorted(pairs) == sorted(
        [(SMALL, "alpha"), (SMALL, "beta"), (MEDIUM, "alpha"), (MEDIUM, "beta")]
    )
    rows = await _rows(service, summary)
    assert len(rows) == 16
    for model in (SMALL, MEDIUM):
        for pinned, served in (("alpha", "Alpha"), ("beta", "Beta")):
            series = _series(summary, model, pinned)
            assert series["count"] == 4
            assert [entry["provider"] for entry in series["by_provider"]] == [served]
            assert series["warnings"] == []
    assert summary["parameters"]["providers"] == ["alpha", "beta"]


async def test_pinned_series_measure_each_providers_configured_speed(tmp_path: Path) -> None:
    config = EmulatorConfig(ttft_seconds=TTFT, tokens_per_second=TOKENS_PER_SECOND)
    model = MODELS_BY_ID[SMALL]
    async for client in _service(tmp_path, config):
        answer = await post_benchmark(
            client,
            models=[SMALL],
            runs=2,
            concurrency=3,
            form={"provider": ["alpha", "beta", "gamma"]},
        )
        assert answer.status_code == 200, answer.text
        summary = answer.json()
        for provider in model.providers:
            series = _series(summary, SMALL, provider.tag)
            expected = provider_speed(config, model, provider)
            assert (series["ok"], series["failed"]) == (4, 0)
            # The figures the service reports, never the test's own clock: the median of 4
            # requests resists one that a loaded machine delayed.
            assert series["ttft"]["p50"] == pytest.approx(expected.ttft_seconds, rel=0.05)
            assert series["decode_tokens_per_second"] == pytest.approx(
                expected.tokens_per_second, rel=0.05
            )


async def test_provider_all_runs_every_provider_of_each_model(service: httpx.AsyncClient) -> None:
    answer = await post_benchmark(service, models=[SMALL, MEDIUM], runs=1, form={"provider": "all"})
    assert answer.status_code == 200, answer.text
    pairs = sorted((row["model"], row["provider"]) for row in answer.json()["comparison"])
    assert pairs == [
        (MEDIUM, "alpha"),
        (MEDIUM, "beta"),
        (SMALL, "alpha"),
        (SMALL, "beta"),
        (SMALL, "gamma"),
    ]


async def test_an_unknown_provider_is_a_422_listing_the_known_ones_before_any_request(
    service: httpx.AsyncClient, tmp_path: Path
) -> None:
    answer = await post_benchmark(
        service, models=[SMALL, MEDIUM], runs=1, form={"provider": ["alpha", "gamma"]}
    )
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert "gamma" in detail
    assert MEDIUM in detail
    assert "alpha, beta" in detail
    listed = await service.get("/benchmarks")
    assert listed.json()["count"] == 0


async def test_a_failing_pinned_provider_fails_its_own_series_only(
    tmp_path: Path, retry_waits: list[float]
) -> None:
    config = EmulatorConfig(failing_providers=frozenset({"beta"}))
    async for client in _service(tmp_path, config):
        answer = await post_benchmark(
            client, models=[SMALL], runs=2, form={"provider": ["alpha", "beta"]}
        )
        assert answer.status_code == 200, answer.text
        summary = answer.json()
        alpha = _series(summary, SMALL, "alpha")
        beta = _series(summary, SMALL, "beta")
        assert (alpha["ok"], alpha["failed"]) == (4, 0)
        assert (beta["ok"], beta["failed"]) == (0, 4)
        assert [entry["provider"] for entry in alpha["by_provider"]] == ["Alpha"]
        rows = await _rows(client, summary)
        assert {row["provider"] for row in rows if row["status"] == "200"} == {"Alpha"}


async def test_models_providers_lists_prices_context_and_quantization(
    service: httpx.AsyncClient,
) -> None:
    answer = await service.get(f"/models/{SMALL}/providers")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model"] == SMALL
    beta = next(p for p in body["providers"] if p["provider"] == "beta")
    assert beta["name"] == "Beta"
    assert beta["quantization"] == "fp8"
    assert beta["context_length"] == 32768
    assert beta["pricing"] == {"prompt": "0.00000008", "completion": "0.0000003"}
    missing = await service.get("/models/emulator/nothing/providers")
    assert missing.status_code == 404, missing.text


async def test_the_report_and_the_command_line_show_series_and_the_mixed_warning(
    service: httpx.AsyncClient,
) -> None:
    mixed = await post_benchmark(service, models=[SMALL], runs=3)
    pinned = await post_benchmark(service, models=[SMALL], runs=1, form={"provider": "beta"})
    assert mixed.status_code == pinned.status_code == 200, (mixed.text, pinned.text)

    report = await service.get(mixed.json()["files"]["report_url"])
    assert report.status_code == 200, report.text
    assert MIXED in report.text
    assert 'id="by-provider"' in report.text
    assert 'id="ranking"' in report.text
    pinned_report = (await service.get(pinned.json()["files"]["report_url"])).text
    assert f"{SMALL} @ beta" in pinned_report
    assert "pin providers to compare" not in pinned_report

    console = Console(record=True, width=160)
    print_comparison(mixed.json(), console)
    printed = console.export_text()
    assert MIXED in printed
    assert "(mixed: 3)" in printed
    console = Console(record=True, width=160)
    print_comparison(pinned.json(), console)
    printed = console.export_text()
    assert f"{SMALL} @ beta" in printed
    assert "pin providers to compare" not in printed


async def test_the_cli_sends_each_provider_and_the_sort(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Hello\n", encoding="utf-8")
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(422, json={"detail": "stop here"})

    http = httpx.Client(transport=httpx.MockTransport(answer), base_url="http://service.test")
    args = cli._parser().parse_args(
        [
            "benchmark",
            "--file",
            str(prompts),
            "--models",
            SMALL,
            "--providers",
            "alpha, beta",
            "--provider-sort",
            "price",
        ]
    )
    with pytest.raises(cli.CliError):
        cli._submit(http, args)
    body = sent[0].content
    assert body.count(b'name="provider"\r\n\r\nalpha') == 1
    assert body.count(b'name="provider"\r\n\r\nbeta') == 1
    assert b'name="provider_sort"\r\n\r\nprice' in body


async def test_concurrent_provider_lookups_make_one_upstream_call_then_hit_the_cache(
    client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    upstream.get("/models").respond(json=MODELS_BODY)
    called, release = asyncio.Event(), asyncio.Event()
    endpoints = {
        "data": {
            "id": GPT,
            "endpoints": [
                {"provider_name": "OpenAI", "tag": "openai", "quantization": None},
                {"provider_name": "Azure", "tag": "azure", "context_length": 128000},
            ],
        }
    }

    async def slow_endpoints(_: httpx.Request) -> httpx.Response:
        called.set()
        await release.wait()
        return httpx.Response(200, json=endpoints)

    route = upstream.get(f"/models/{GPT}/endpoints").mock(side_effect=slow_endpoints)
    pending = [asyncio.create_task(client.get(f"/models/{GPT}/providers")) for _ in range(10)]
    await asyncio.wait_for(called.wait(), 10)
    release.set()
    answers = await asyncio.gather(*pending)
    again = await client.get(f"/models/{GPT}/providers")

    assert [answer.status_code for answer in answers] == [200] * 10
    assert [p["provider"] for p in again.json()["providers"]] == ["openai", "azure"]
    assert route.call_count == 1
