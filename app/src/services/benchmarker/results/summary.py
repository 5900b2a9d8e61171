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
    StepStats,
)
from src.services.benchmarker.load.plan import BenchmarkPlan
from src.services.benchmarker.load.sweep import StepRun, first_steps
from src.services.benchmarker.results.statistics import (
    DIGITS,
    Slo,
    comparison_row,
    knee_points,
    percentile,
    request_stats,
    total_cost,
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
    # With a sweep: the steps that ran, in order.
    steps: tuple[StepRun, ...] = ()


def slo_of(plan: BenchmarkPlan) -> Slo:
    parameters = plan.parameters
    return Slo(ttft=parameters.ttft_slo, latency=parameters.latency_slo, tpot=parameters.tpot_slo)


def build_summary(
    benchmark_id: str,
    status: BenchmarkStatus,
    plan: BenchmarkPlan,
    records: Sequence[RequestRecord],
    clock: RunClock,
    error: str | None = None,
) -> BenchmarkSummary:
    measured = [record for record in records if not record.warmup]
    slo = slo_of(plan)
    by_model = _by_model(plan, measured)
    models = [
        _model_stats(model, plan.prompts, by_model[model], clock.wall_seconds, slo)
        for model in plan.parameters.models
    ]
    overall = request_stats(measured, clock.wall_seconds, slo)
    steps = _steps(plan, measured, clock, slo) if plan.parameters.sweep is not None else None
    return BenchmarkSummary(
        id=benchmark_id,
        status=status,
        started_at=clock.started_at,
        finished_at=datetime.now(UTC),
        wall_seconds=overall.wall_seconds,
        requests=plan.total_requests if plan.total_requests is not None else len(measured),
        finished_requests=len(measured),
        warmup_requests=len(records) - len(measured),
        requests_per_second=overall.requests_per_second,
        schedule=schedule_of(plan.parameters.rate, measured, clock.last_send_offset),
        cost=total_cost(measured),
        cost_unknown=unknown_costs(measured),
        parameters=plan.saved_parameters(),
        models=models,
        comparison=[comparison_row(stats.model, stats) for stats in models],
        steps=steps,
        knee=knee_points(plan.parameters.models, steps) if steps is not None and slo.set else None,
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
) -> BenchmarkState:
    """The small record of a run; `comparison` may be a few seconds old (it costs a sort).
    `schedule_left`: with a rate or a duration, the seconds until its last send is due.
    """
    total = plan.total_requests
    planned = None if total is None else total + plan.parameters.warmup
    done = len(records)
    ok = sum(1 for record in records if record.ok)
    measured = [record for record in records if not record.warmup]
    eta = None
    if status == "running":
        eta = _eta(records, clock, planned, schedule_left)
    now = datetime.now(UTC)
    return BenchmarkState(
        id=benchmark_id,
        status=status,
        started_at=clock.started_at,
        updated_at=now,
        finished_at=None if status == "running" else (finished_at or now),
        parameters=plan.saved_parameters(),
        progress=Progress(
            done=done,
            total=planned,
            ok=ok,
            failed=done - ok,
            elapsed_seconds=round(clock.wall_seconds, 3),
            eta_seconds=eta,
            **_step_progress(plan, measured),
        ),
        comparison=comparison,
        cost=total_cost(measured),
        cost_unknown=unknown_costs(measured),
        files=files_of(benchmark_id),
        owner=plan.owner,
        error=error,
    )


def _step_progress(plan: BenchmarkPlan, measured: Sequence[RequestRecord]) -> dict[str, int | None]:
    """With a sweep: the step of the latest finished request, and how far it has got."""
    parameters = plan.parameters
    if parameters.sweep is None:
        return {}
    step = max((record.step for record in measured if record.step is not None), default=None)
    return {
        "step": step,
        "steps": parameters.sweep_steps,
        "step_done": sum(1 for record in measured if record.step == step) if step else 0,
        "step_total": None if parameters.duration is not None else plan.step_requests,
    }


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


def schedule_of(
    rate: float | None, records: Sequence[RequestRecord], last_send_offset: float | None
) -> Schedule | None:
    if rate is None:
        return None
    lags = sorted(r.send_lag_seconds for r in records if r.send_lag_seconds is not None)
    achieved = None
    if last_send_offset and len(records) > 1:
        achieved = round((len(records) - 1) / last_send_offset, DIGITS)
    return Schedule(
        target_rate=rate,
        achieved_rate=achieved,
        lag_p50=round(stdlib_statistics.median(lags), DIGITS) if lags else None,
        lag_p99=round(percentile(lags, 99), DIGITS) if lags else None,
        lag_max=round(lags[-1], DIGITS) if lags else None,
    )


def _steps(
    plan: BenchmarkPlan, records: Sequence[RequestRecord], clock: RunClock, slo: Slo
) -> list[StepStats]:
    """Each step's statistics. A run summed up from its CSV after its runner died knows its
    steps from the parameters (not auto's rates), and not how long each took."""
    ran = list(clock.steps) or [StepRun(step, 0.0) for step in first_steps(plan.parameters)]
    by_step: dict[int | None, list[RequestRecord]] = defaultdict(list)
    for record in records:
        by_step[record.step].append(record)
    steps = []
    for done in ran:
        number = done.step.number
        by_model = _by_model(plan, by_step[number])
        wall = done.wall_seconds
        stats = request_stats(by_step[number], wall, slo)
        steps.append(
            StepStats(
                step=number,
                concurrency=done.step.concurrency,
                rate=done.step.rate,
                wall_seconds=stats.wall_seconds,
                requests_per_second=stats.requests_per_second,
                schedule=schedule_of(done.step.rate, by_step[number], done.last_send_offset),
                models=[
                    _model_stats(model, plan.prompts, by_model[model], wall, slo)
                    for model in plan.parameters.models
                ],
            )
        )
    return steps


def _model_stats(
    model: str, prompts: list[str], records: list[RequestRecord], wall_seconds: float, slo: Slo
) -> ModelStats:
    by_prompt: dict[int, list[RequestRecord]] = defaultdict(list)
    for record in records:
        by_prompt[record.prompt_index].append(record)
    per_prompt = [
        PromptStats(
            prompt_index=index,
            prompt=_preview(prompt),
            **dict(request_stats(by_prompt[index], wall_seconds, slo)),
        )
        for index, prompt in enumerate(prompts, start=1)
    ]
    stats = request_stats(records, wall_seconds, slo)
    return ModelStats(model=model, per_prompt=per_prompt, **dict(stats))


def _preview(prompt: str) -> str:
    if len(prompt) <= PROMPT_PREVIEW_CHARS:
        return prompt
    return prompt[: PROMPT_PREVIEW_CHARS - 1] + "…"
