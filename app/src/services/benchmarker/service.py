"""The benchmark use case: validate everything first, then run, record and summarize."""

from __future__ import annotations

import asyncio
import logging
import time
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from src.config import Settings
from src.redaction import Redactor
from src.schemas.benchmarks import (
    BenchmarkFiles,
    BenchmarkList,
    BenchmarkListItem,
    BenchmarkParameters,
    BenchmarkStatus,
    BenchmarkSummary,
    ModelStats,
    PromptStats,
)
from src.schemas.prompts import MAX_MODEL_ID_CHARS
from src.services.base.exceptions import InvalidInputError, LimitExceededError
from src.services.benchmarker.file_utils import (
    AsyncReadable,
    CsvResultWriter,
    ResultPaths,
    list_summaries,
    load_summary,
    new_benchmark_id,
    parse_prompts,
    read_upload,
    result_paths,
    write_summary,
)
from src.services.benchmarker.run_utils import (
    RequestOptions,
    RequestResult,
    comparison_row,
    execute_request,
    iter_jobs,
    request_stats,
    run_jobs,
)
from src.services.generation.service import ensure_model_reachable
from src.services.openrouter.catalog import ModelCatalog
from src.services.openrouter.client import OpenRouterClient

logger = logging.getLogger(__name__)

PROMPT_PREVIEW_CHARS = 120


@dataclass(frozen=True, slots=True)
class BenchmarkOptions:
    """What the caller asked for, before validation against the settings."""

    models: list[str]
    runs: int = 5
    concurrency: int = 1
    max_tokens: int = 512
    stream: bool = True
    temperature: float | None = None
    top_p: float | None = None


@dataclass(frozen=True, slots=True)
class BenchmarkPlan:
    """A validated benchmark: every limit checked, every model known."""

    models: list[str]
    prompts: list[str]
    runs: int
    concurrency: int
    request: RequestOptions

    @property
    def total_requests(self) -> int:
        return len(self.models) * len(self.prompts) * self.runs


async def benchmark_upload(
    settings: Settings,
    client: OpenRouterClient,
    catalog: ModelCatalog,
    upload: AsyncReadable,
    options: BenchmarkOptions,
) -> BenchmarkSummary:
    """Validate the upload and options, then run the benchmark and save its files."""
    plan = await prepare_benchmark(settings, catalog, upload, options)
    return await run_benchmark(settings, client, plan)


async def prepare_benchmark(
    settings: Settings, catalog: ModelCatalog, upload: AsyncReadable, options: BenchmarkOptions
) -> BenchmarkPlan:
    """Every check that can fail runs here, before a single paid request is sent."""
    models = clean_model_ids(options.models)
    check_limit("runs", options.runs, "MAX_RUNS", settings.max_runs)
    check_limit("concurrency", options.concurrency, "MAX_CONCURRENCY", settings.max_concurrency)
    prompts = parse_prompts(await read_upload(upload, settings.max_upload_bytes))
    check_limit("prompts in prompt_file", len(prompts), "MAX_PROMPTS", settings.max_prompts)
    total = len(prompts) * options.runs * len(models)
    if total > settings.max_benchmark_requests:
        raise LimitExceededError(
            f"{len(prompts)} prompts x {options.runs} runs x {len(models)} models = {total} "
            f"requests exceeds MAX_BENCHMARK_REQUESTS={settings.max_benchmark_requests}."
        )
    for model in models:
        # No upstream call: the clearer message for a real id while running on the emulator.
        ensure_model_reachable(settings, model)
    await catalog.require(models)
    return BenchmarkPlan(
        models=models,
        prompts=prompts,
        runs=options.runs,
        concurrency=options.concurrency,
        request=RequestOptions(
            max_tokens=options.max_tokens,
            stream=options.stream,
            temperature=options.temperature,
            top_p=options.top_p,
        ),
    )


def check_limit(name: str, value: int, setting: str, limit: int) -> None:
    if value > limit:
        raise LimitExceededError(f"{name}={value} exceeds {setting}={limit}.")


def clean_model_ids(models: list[str]) -> list[str]:
    """Trimmed, checked, and without duplicates (first occurrence kept, order kept)."""
    cleaned = [model.strip() for model in models]
    if not cleaned:
        raise InvalidInputError("Give at least one model.")
    for model in cleaned:
        if not model:
            raise InvalidInputError("A model id is empty.")
        if len(model) > MAX_MODEL_ID_CHARS:
            raise InvalidInputError(
                f"A model id is {len(model)} characters long; the limit is {MAX_MODEL_ID_CHARS}."
            )
        if any(unicodedata.category(char) == "Cc" for char in model):
            raise InvalidInputError(f"Model id {model!r} contains control characters.")
    return list(dict.fromkeys(cleaned))


async def run_benchmark(
    settings: Settings, client: OpenRouterClient, plan: BenchmarkPlan
) -> BenchmarkSummary:
    """Run the plan. Rows reach the CSV as requests finish; the JSON summary is written at the
    end, even when the run is cancelled (then with status "interrupted" before re-raising).
    """
    started_at = datetime.now(UTC)
    benchmark_id = new_benchmark_id(started_at, plan.models)
    paths = await asyncio.to_thread(result_paths, settings.benchmarks_dir, benchmark_id)
    writer = await CsvResultWriter.create(paths.csv)
    results: list[RequestResult] = []

    def record(result: RequestResult) -> None:
        results.append(result)
        writer.put(result)

    logger.info(
        "BENCHMARK STARTED | id=%s | models=%s | requests=%d | concurrency=%d",
        benchmark_id,
        ",".join(plan.models),
        plan.total_requests,
        plan.concurrency,
    )
    clock = time.perf_counter()
    status: BenchmarkStatus = "failed"  # unless the run ends normally or is cancelled
    try:
        await run_jobs(
            iter_jobs(plan.models, plan.prompts, plan.runs),
            concurrency=plan.concurrency,
            execute=partial(
                execute_request,
                client,
                options=plan.request,
                redact=Redactor(settings.secrets()),
            ),
            on_result=record,
        )
        status = "completed"
    except asyncio.CancelledError:
        status = "interrupted"
        raise
    finally:
        summary = build_summary(
            benchmark_id,
            status,
            plan,
            results,
            started_at=started_at,
            wall_seconds=time.perf_counter() - clock,
            paths=paths,
        )
        # Shielded: a second cancellation must not stop the files that record the first one.
        await asyncio.shield(_save(writer, paths.json, summary))
        logger.info(
            "BENCHMARK FINISHED | id=%s | status=%s | finished=%d/%d | wall=%.3fs",
            benchmark_id,
            status,
            summary.finished_requests,
            summary.requests,
            summary.wall_seconds,
        )
    return summary


async def _save(writer: CsvResultWriter, json_path: Path, summary: BenchmarkSummary) -> None:
    try:
        await writer.close()
    finally:
        await asyncio.to_thread(write_summary, json_path, summary)


def build_summary(
    benchmark_id: str,
    status: BenchmarkStatus,
    plan: BenchmarkPlan,
    results: list[RequestResult],
    *,
    started_at: datetime,
    wall_seconds: float,
    paths: ResultPaths,
) -> BenchmarkSummary:
    by_model: dict[str, list[RequestResult]] = defaultdict(list)
    for result in results:
        by_model[result.model].append(result)
    models = [
        _model_stats(model, plan.prompts, by_model[model], wall_seconds) for model in plan.models
    ]
    overall = request_stats(results, wall_seconds)
    return BenchmarkSummary(
        id=benchmark_id,
        status=status,
        started_at=started_at,
        finished_at=datetime.now(UTC),
        wall_seconds=overall.wall_seconds,
        requests=plan.total_requests,
        finished_requests=len(results),
        requests_per_second=overall.requests_per_second,
        parameters=BenchmarkParameters(
            models=plan.models,
            prompts=len(plan.prompts),
            runs=plan.runs,
            concurrency=plan.concurrency,
            max_tokens=plan.request.max_tokens,
            stream=plan.request.stream,
            temperature=plan.request.temperature,
            top_p=plan.request.top_p,
        ),
        models=models,
        comparison=[comparison_row(stats.model, stats) for stats in models],
        files=BenchmarkFiles(csv=str(paths.csv), json_file=str(paths.json)),
    )


def _model_stats(
    model: str, prompts: list[str], results: list[RequestResult], wall_seconds: float
) -> ModelStats:
    by_prompt: dict[int, list[RequestResult]] = defaultdict(list)
    for result in results:
        by_prompt[result.prompt_index].append(result)
    per_prompt = [
        PromptStats(
            prompt_index=index,
            prompt=_preview(prompt),
            **dict(request_stats(by_prompt[index], wall_seconds)),
        )
        for index, prompt in enumerate(prompts, start=1)
    ]
    stats = request_stats(results, wall_seconds)
    return ModelStats(model=model, per_prompt=per_prompt, **dict(stats))


def _preview(prompt: str) -> str:
    if len(prompt) <= PROMPT_PREVIEW_CHARS:
        return prompt
    return prompt[: PROMPT_PREVIEW_CHARS - 1] + "…"


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
