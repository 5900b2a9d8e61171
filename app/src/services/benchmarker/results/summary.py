"""What a run's records add up to: the summary at the end, the state record while it runs."""

from __future__ import annotations

import statistics as stdlib_statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from src.schemas.benchmarks import (
    BenchmarkState,
    BenchmarkStatus,
    BenchmarkSummary,
    ComparisonRow,
    ModelStats,
    Progress,
    PromptStats,
    RequestRecord,
    Schedule,
)
from src.services.benchmarker.load.plan import BenchmarkPlan
from src.services.benchmarker.results.statistics import (
    DIGITS,
    Slo,
    comparison_row,
    lengths,
    request_stats,
    total_cost,
    turn_stats,
    unknown_costs,
)
from src.services.benchmarker.runs.file_store import files_of

PROMPT_PREVIEW_CHARS = 120


@dataclass(frozen=True, slots=True)
class RunClock:
    """When the run started (wall clock, for people) and how long it has taken (our clock)."""

    started_at: datetime
    wall_seconds: float
    # With a rate: the offset of the last send from the schedule's start.
    last_send_offset: float | None = None


def slo_of(plan: BenchmarkPlan) -> Slo:
    return Slo(ttft=plan.parameters.ttft_slo, latency=plan.parameters.latency_slo)


def build_summary(
    benchmark_id: str,
    status: BenchmarkStatus,
    plan: BenchmarkPlan,
    records: Sequence[RequestRecord],
    clock: RunClock,
    error: str | None = None,
    progress: Progress | None = None,
) -> BenchmarkSummary:
    """`progress`: the one the run's final state record has; without it, counted here."""
    measured = [record for record in records if not record.warmup]
    if progress is None:
        progress = progress_of(status, plan, records, clock)
    slo = slo_of(plan)
    by_model = _by_model(plan, measured)
    models = [
        _model_stats(model, plan, by_model[model], clock.wall_seconds, slo)
        for model in plan.parameters.models
    ]
    overall = request_stats(measured, clock.wall_seconds, slo)
    return BenchmarkSummary(
        id=benchmark_id,
        status=status,
        started_at=clock.started_at,
        finished_at=datetime.now(UTC),
        wall_seconds=overall.wall_seconds,
        requests=progress.requests if progress.requests is not None else len(measured),
        finished_requests=progress.finished_requests,
        warmup_requests=progress.warmup_requests,
        requests_per_second=overall.requests_per_second,
        schedule=_schedule(plan, measured, clock),
        cost=total_cost(measured),
        cost_unknown=unknown_costs(measured),
        parameters=plan.saved_parameters(),
        progress=progress,
        models=models,
        comparison=[comparison_row(stats.model, stats) for stats in models],
        files=files_of(benchmark_id),
        error=error,
    )


def build_state(
    benchmark_id: str,
    status: BenchmarkStatus,
    plan: BenchmarkPlan,
    records: Sequence[RequestRecord],
    clock: RunClock,
    comparison: list[ComparisonRow],
    finished_at: datetime | None = None,
    schedule_left: float | None = None,
    error: str | None = None,
    progress: Progress | None = None,
) -> BenchmarkState:
    """The small record of a run. `comparison` must cover the same records as its progress.
    `schedule_left`: with a rate or a duration, the seconds until its last send is due.
    `progress`: the one its summary has, when the run has ended; without it, counted here.
    """
    measured = [record for record in records if not record.warmup]
    now = datetime.now(UTC)
    return BenchmarkState(
        id=benchmark_id,
        status=status,
        started_at=clock.started_at,
        updated_at=now,
        finished_at=None if status == "running" else (finished_at or now),
        parameters=plan.saved_parameters(),
        progress=progress or progress_of(status, plan, records, clock, schedule_left),
        comparison=comparison,
        cost=total_cost(measured),
        cost_unknown=unknown_costs(measured),
        files=files_of(benchmark_id),
        owner=plan.owner,
        error=error,
    )


def progress_of(
    status: BenchmarkStatus,
    plan: BenchmarkPlan,
    records: Sequence[RequestRecord],
    clock: RunClock,
    schedule_left: float | None = None,
) -> Progress:
    """The counts of a run so far; once it has ended, a duration's run planned what it sent."""
    done = len(records)
    measured = sum(1 for record in records if not record.warmup)
    ok = sum(1 for record in records if record.ok)
    running = status == "running"
    requests = plan.total_requests
    planned = None if requests is None else requests + plan.parameters.warmup
    if requests is None and not running:
        requests, planned = measured, done
    return Progress(
        done=done,
        total=planned,
        ok=ok,
        failed=done - ok,
        requests=requests,
        finished_requests=measured,
        warmup_requests=done - measured,
        elapsed_seconds=round(clock.wall_seconds, 3),
        eta_seconds=_eta(records, clock, planned, schedule_left) if running else None,
    )


def _eta(
    records: Sequence[RequestRecord],
    clock: RunClock,
    planned: int | None,
    schedule_left: float | None,
) -> float | None:
    """A schedule decides when an open-loop run or a duration ends: what is left of it, and
    the time a request takes to answer. Without one, the pace so far times the requests left.
    """
    done = len(records)
    if schedule_left is not None:
        latencies = [record.latency_seconds for record in records if not record.warmup]
        tail = stdlib_statistics.fmean(latencies) if latencies else 0.0
        return round(max(schedule_left, 0.0) + tail, 3)
    if planned is not None and done:
        return round(clock.wall_seconds / done * (planned - done), 3)
    return None


def comparison_so_far(
    plan: BenchmarkPlan, records: Sequence[RequestRecord], wall_seconds: float
) -> list[ComparisonRow]:
    measured = [record for record in records if not record.warmup]
    by_model = _by_model(plan, measured)
    slo = slo_of(plan)
    return [
        comparison_row(model, request_stats(by_model[model], wall_seconds, slo))
        for model in plan.parameters.models
    ]


def _by_model(
    plan: BenchmarkPlan, records: Sequence[RequestRecord]
) -> dict[str, list[RequestRecord]]:
    by_model: dict[str, list[RequestRecord]] = {model: [] for model in plan.parameters.models}
    for record in records:
        by_model.setdefault(record.model, []).append(record)
    return by_model


def _schedule(
    plan: BenchmarkPlan, records: Sequence[RequestRecord], clock: RunClock
) -> Schedule | None:
    rate = plan.parameters.rate
    if rate is None:
        return None
    lags = sorted(r.send_lag_seconds for r in records if r.send_lag_seconds is not None)
    achieved = None
    if clock.last_send_offset and len(records) > 1:
        achieved = round((len(records) - 1) / clock.last_send_offset, DIGITS)
    return Schedule(
        target_rate=rate,
        achieved_rate=achieved,
        lag_p50=round(stdlib_statistics.median(lags), DIGITS) if lags else None,
        lag_max=round(lags[-1], DIGITS) if lags else None,
    )


def _model_stats(
    model: str, plan: BenchmarkPlan, records: list[RequestRecord], wall_seconds: float, slo: Slo
) -> ModelStats:
    parameters = plan.parameters
    by_prompt: dict[int, list[RequestRecord]] = defaultdict(list)
    for record in records:
        by_prompt[record.prompt_index].append(record)
    per_prompt = [
        PromptStats(
            prompt_index=index,
            prompt=_preview(prompt),
            **dict(request_stats(by_prompt[index], wall_seconds, slo)),
        )
        for index, prompt in enumerate(plan.prompts, start=1)
    ]
    stats = request_stats(records, wall_seconds, slo)
    return ModelStats(
        model=model,
        per_prompt=per_prompt,
        lengths=lengths(records, parameters.prompt_tokens, parameters.output_tokens),
        per_turn=turn_stats(records) if parameters.turns > 1 else [],
        **dict(stats),
    )


def _preview(prompt: str) -> str:
    if len(prompt) <= PROMPT_PREVIEW_CHARS:
        return prompt
    return prompt[: PROMPT_PREVIEW_CHARS - 1] + "…"
