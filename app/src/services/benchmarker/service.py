"""The benchmark use case: validate everything first, then run, record and summarize."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from src.config import Settings
from src.schemas.benchmarks import (
    BenchmarkList,
    BenchmarkListItem,
    BenchmarkParameters,
    BenchmarkSummary,
)
from src.services.base.exceptions import LimitExceededError
from src.services.benchmarker.file_utils import (
    AsyncReadable,
    list_summaries,
    load_summary,
    new_benchmark_id,
    parse_prompts,
    read_upload,
)
from src.services.benchmarker.isolation import run_isolated
from src.services.benchmarker.plan import BenchmarkPlan
from src.services.generation.service import ensure_model_reachable
from src.services.openrouter.catalog import ModelCatalog
from src.services.openrouter.client import OpenRouterClient, UpstreamTarget

logger = logging.getLogger(__name__)


async def benchmark_upload(
    settings: Settings,
    client: OpenRouterClient,
    target: UpstreamTarget,
    catalog: ModelCatalog,
    upload: AsyncReadable,
    parameters: BenchmarkParameters,
) -> BenchmarkSummary:
    """Validate the upload and parameters, then run the benchmark and save its files."""
    plan = await prepare_benchmark(settings, catalog, upload, parameters)
    benchmark_id = new_benchmark_id(datetime.now(UTC), plan.parameters.models)
    return await run_isolated(settings, client, target, benchmark_id, plan)


async def prepare_benchmark(
    settings: Settings,
    catalog: ModelCatalog,
    upload: AsyncReadable,
    parameters: BenchmarkParameters,
) -> BenchmarkPlan:
    """Every check that can fail runs here, before a single paid request is sent."""
    # Duplicates dropped, first occurrence and order kept.
    parameters = parameters.model_copy(update={"models": list(dict.fromkeys(parameters.models))})
    check_limit("runs", parameters.runs, "MAX_RUNS", settings.max_runs)
    check_limit("concurrency", parameters.concurrency, "MAX_CONCURRENCY", settings.max_concurrency)
    prompts = parse_prompts(await read_upload(upload, settings.max_upload_bytes))
    check_limit("prompts in prompt_file", len(prompts), "MAX_PROMPTS", settings.max_prompts)
    plan = BenchmarkPlan(parameters, prompts)
    if plan.total_requests > settings.max_benchmark_requests:
        models = len(parameters.models)
        raise LimitExceededError(
            f"{len(prompts)} prompts x {parameters.runs} runs x {models} models = "
            f"{plan.total_requests} requests exceeds "
            f"MAX_BENCHMARK_REQUESTS={settings.max_benchmark_requests}."
        )
    for model in parameters.models:
        # No upstream call: the clearer message for a real id while running on the emulator.
        ensure_model_reachable(settings, model)
    await catalog.require(parameters.models)
    return plan


def check_limit(name: str, value: int, setting: str, limit: int) -> None:
    if value > limit:
        raise LimitExceededError(f"{name}={value} exceeds {setting}={limit}.")


async def list_benchmarks(settings: Settings, limit: int) -> BenchmarkList:
    summaries = await asyncio.to_thread(list_summaries, settings.benchmarks_dir, limit)
    items = [
        BenchmarkListItem(
            id=summary.id,
            status=summary.status,
            started_at=summary.started_at,
            finished_at=summary.finished_at,
            models=summary.parameters.models,
            requests=summary.requests,
            finished_requests=summary.finished_requests,
            files=summary.files,
        )
        for summary in summaries
    ]
    return BenchmarkList(count=len(items), benchmarks=items)


async def get_benchmark(settings: Settings, benchmark_id: str) -> BenchmarkSummary:
    return await asyncio.to_thread(load_summary, settings.benchmarks_dir, benchmark_id)
