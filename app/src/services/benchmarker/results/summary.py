"""What a run's records add up to: the summary at the end, the state record while it runs."""

from __future__ import annotations

import statistics as stdlib_statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from src.schemas.benchmarks import (
    BenchmarkState,
    BenchmarkStatus,
    BenchmarkSummary,
    ComparisonRow,
    ModelStats,
    OutsideUpstream,
    Progress,
    PromptStats,
    ProviderStats,
    RequestRecord,
    Schedule,
    StepStats,
)
from src.services.benchmarker.load.plan import BenchmarkPlan, Series
from src.services.benchmarker.load.sweep import StepRun, first_steps
from src.services.benchmarker.results.statistics import (
    DIGITS,
    Slo,
    as_percentiles,
    comparison_row,
    knee_points,
    lengths,
    percentile,
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
    # With a sweep: the steps that ran, in order.
    steps: tuple[StepRun, ...] = ()


@dataclass(frozen=True, slots=True)
class RunRecords:
    """A run as it is summed up: which run, how it stands, its plan, its records so far (warm-up
    included) and its clock."""

    benchmark_id: str
    status: BenchmarkStatus
    plan: BenchmarkPlan
    records: Sequence[RequestRecord]
    clock: RunClock

    def measured(self) -> list[RequestRecord]:
        return [record for record in self.records if not record.warmup]

    def said_by_both(self, measured: Sequence[RequestRecord]) -> dict[str, Any]:
        """What the summary and the state record both say of the run."""
        return {
            "id": self.benchmark_id,
            "status": self.status,
            "started_at": self.clock.started_at,
            "parameters": self.plan.saved_parameters(),
            "cost": total_cost(measured),
            "cost_unknown": unknown_costs(measured),
            "files": files_of(self.benchmark_id),
        }


def slo_of(plan: BenchmarkPlan) -> Slo:
    parameters = plan.parameters
    return Slo(ttft=parameters.ttft_slo, latency=parameters.latency_slo, tpot=parameters.tpot_slo)


def build_summary(
    run: RunRecords, error: str | None = None, progress: Progress | None = None
) -> BenchmarkSummary:
    """`progress`: the one the run's final state record has; without it, counted here."""
    plan, clock, measured = run.plan, run.clock, run.measured()
    if progress is None:
        progress = progress_of(run)
    slo = slo_of(plan)
    models = [
        _model_stats(series, plan, series_records, clock.wall_seconds, slo)
        for series, series_records in _by_series(plan, measured).items()
    ]
    overall = request_stats(measured, clock.wall_seconds, slo)
    steps = _steps(plan, measured, clock, slo) if plan.parameters.sweep is not None else None
    return BenchmarkSummary(
        **run.said_by_both(measured),
        finished_at=datetime.now(UTC),
        wall_seconds=overall.wall_seconds,
        requests=progress.requests if progress.requests is not None else len(measured),
        finished_requests=progress.finished_requests,
        warmup_requests=progress.warmup_requests,
        requests_per_second=overall.requests_per_second,
        schedule=schedule_of(plan.parameters.rate, measured, clock.last_send_offset),
        progress=progress,
        models=models,
        comparison=[
            comparison_row(stats.model, stats, stats.provider, len(stats.by_provider))
            for stats in models
        ],
        steps=steps,
        knee=knee_points(plan.series(), steps) if steps is not None and slo.set else None,
        error=error,
    )


def build_state(
    run: RunRecords,
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
    now = datetime.now(UTC)
    return BenchmarkState(
        **run.said_by_both(run.measured()),
        updated_at=now,
        finished_at=None if run.status == "running" else (finished_at or now),
        progress=progress or progress_of(run, schedule_left),
        comparison=comparison,
        owner=run.plan.owner,
        error=error,
    )


def final_records(
    run: RunRecords, error: str | None, summary_clock: RunClock | None = None
) -> tuple[BenchmarkSummary, BenchmarkState]:
    """The summary and the last state record of a run that has ended, with the same counts.
    `summary_clock`: the summary's when it differs from the progress's (which counts from the
    very start, warm-up included)."""
    progress = progress_of(run)
    timed = run if summary_clock is None else replace(run, clock=summary_clock)
    summary = build_summary(timed, error, progress)
    state = build_state(
        run, summary.comparison, summary.finished_at, error=error, progress=progress
    )
    return summary, state


def progress_of(run: RunRecords, schedule_left: float | None = None) -> Progress:
    """The counts of a run so far; once it has ended, a duration's run planned what it sent."""
    plan, records = run.plan, run.records
    done = len(records)
    measured = sum(1 for record in records if not record.warmup)
    ok = sum(1 for record in records if record.ok)
    running = run.status == "running"
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
        elapsed_seconds=round(run.clock.wall_seconds, 3),
        eta_seconds=_eta(records, run.clock, planned, schedule_left) if running else None,
        **_step_progress(plan, records),
    )


def _step_progress(plan: BenchmarkPlan, records: Sequence[RequestRecord]) -> dict[str, int | None]:
    """With a sweep: the step of the latest finished request, and how far it has got."""
    parameters = plan.parameters
    if parameters.sweep is None:
        return {}
    measured = [record for record in records if not record.warmup]
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
    slo = slo_of(plan)
    return [
        comparison_row(
            model,
            request_stats(series_records, wall_seconds, slo),
            provider,
            len(_answered_by(series_records)),
        )
        for (model, provider), series_records in _by_series(plan, measured).items()
    ]


def _by_series(
    plan: BenchmarkPlan, records: Sequence[RequestRecord]
) -> dict[Series, list[RequestRecord]]:
    by_series: dict[Series, list[RequestRecord]] = {series: [] for series in plan.series()}
    for record in records:
        by_series.setdefault((record.model, record.pinned_provider), []).append(record)
    return by_series


def _answered_by(records: Sequence[RequestRecord]) -> dict[str, list[RequestRecord]]:
    """The records per provider that answered them, most requests first; a request that
    failed before any provider was named belongs to none."""
    by_provider: dict[str, list[RequestRecord]] = defaultdict(list)
    for record in records:
        if record.provider:
            by_provider[record.provider].append(record)
    return dict(sorted(by_provider.items(), key=lambda item: (-len(item[1]), item[0])))


def outside_upstream(records: Sequence[RequestRecord]) -> OutsideUpstream | None:
    """Our latency minus OpenRouter's own (its latency + generation time), per successful
    request whose record was found; None when no record was asked for."""
    asked = [r for r in records if r.ok and r.generation_record is not None]
    if not asked:
        return None
    gaps: list[float] = []
    shares: list[float] = []
    for record in asked:
        stats = record.generation
        if stats is None or stats.latency_seconds is None:
            continue
        gap = record.latency_seconds - stats.latency_seconds - (stats.generation_seconds or 0.0)
        gaps.append(gap)
        if record.latency_seconds > 0:
            shares.append(gap / record.latency_seconds)
    return OutsideUpstream(
        count=len(gaps),
        missing=len(asked) - len(gaps),
        p50_seconds=round(stdlib_statistics.median(gaps), DIGITS) if gaps else None,
        p50_share=round(stdlib_statistics.median(shares), DIGITS) if shares else None,
    )


def mixed_providers_warning(providers: int) -> str | None:
    if providers < 2:
        return None
    return f"answered by {providers} providers: these figures mix them; pin providers to compare"


def _provider_stats(records: Sequence[RequestRecord], wall_seconds: float) -> list[ProviderStats]:
    entries = []
    for provider, served in _answered_by(records).items():
        stats = request_stats(served, wall_seconds)
        entries.append(
            ProviderStats(
                provider=provider,
                count=stats.count,
                ok=stats.ok,
                latency=as_percentiles(stats.latency),
                ttft=stats.ttft,
                output_tokens_per_second=stats.output_tokens_per_second,
                cost=stats.cost,
            )
        )
    return entries


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
        by_series = _by_series(plan, by_step[number])
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
                    _model_stats(series, plan, series_records, wall, slo)
                    for series, series_records in by_series.items()
                ],
            )
        )
    return steps


def _model_stats(
    series: Series,
    plan: BenchmarkPlan,
    records: list[RequestRecord],
    wall_seconds: float,
    slo: Slo,
) -> ModelStats:
    model, provider = series
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
    by_provider = _provider_stats(records, wall_seconds)
    warning = mixed_providers_warning(len(by_provider))
    return ModelStats(
        model=model,
        provider=provider,
        outside_upstream=outside_upstream(records),
        by_provider=by_provider,
        warnings=[warning] if warning else [],
        per_prompt=per_prompt,
        lengths=lengths(records, parameters.prompt_tokens, parameters.output_tokens),
        per_turn=turn_stats(records) if parameters.turns > 1 else [],
        **dict(stats),
    )


def _preview(prompt: str) -> str:
    if len(prompt) <= PROMPT_PREVIEW_CHARS:
        return prompt
    return prompt[: PROMPT_PREVIEW_CHARS - 1] + "…"
