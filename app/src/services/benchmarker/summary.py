"""A benchmark's summary: its parameters and files, and statistics per model and per prompt."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime

from src.schemas.benchmarks import (
    BenchmarkFiles,
    BenchmarkStatus,
    BenchmarkSummary,
    ModelStats,
    PromptStats,
    RequestRecord,
)
from src.services.benchmarker.file_utils import ResultPaths
from src.services.benchmarker.plan import BenchmarkPlan
from src.services.benchmarker.statistics import comparison_row, request_stats

PROMPT_PREVIEW_CHARS = 120


def build_summary(
    benchmark_id: str,
    status: BenchmarkStatus,
    plan: BenchmarkPlan,
    records: Sequence[RequestRecord],
    *,
    started_at: datetime,
    wall_seconds: float,
    paths: ResultPaths,
) -> BenchmarkSummary:
    by_model: dict[str, list[RequestRecord]] = defaultdict(list)
    for record in records:
        by_model[record.model].append(record)
    models = [
        _model_stats(model, plan.prompts, by_model[model], wall_seconds)
        for model in plan.parameters.models
    ]
    overall = request_stats(records, wall_seconds)
    return BenchmarkSummary(
        id=benchmark_id,
        status=status,
        started_at=started_at,
        finished_at=datetime.now(UTC),
        wall_seconds=overall.wall_seconds,
        requests=plan.total_requests,
        finished_requests=len(records),
        requests_per_second=overall.requests_per_second,
        parameters=plan.saved_parameters(),
        models=models,
        comparison=[comparison_row(stats.model, stats) for stats in models],
        files=BenchmarkFiles(csv=str(paths.csv), json_file=str(paths.json)),
    )


def _model_stats(
    model: str, prompts: list[str], records: list[RequestRecord], wall_seconds: float
) -> ModelStats:
    by_prompt: dict[int, list[RequestRecord]] = defaultdict(list)
    for record in records:
        by_prompt[record.prompt_index].append(record)
    per_prompt = [
        PromptStats(
            prompt_index=index,
            prompt=_preview(prompt),
            **dict(request_stats(by_prompt[index], wall_seconds)),
        )
        for index, prompt in enumerate(prompts, start=1)
    ]
    stats = request_stats(records, wall_seconds)
    return ModelStats(model=model, per_prompt=per_prompt, **dict(stats))


def _preview(prompt: str) -> str:
    if len(prompt) <= PROMPT_PREVIEW_CHARS:
        return prompt
    return prompt[: PROMPT_PREVIEW_CHARS - 1] + "…"
