"""Statistics over benchmark records: pure functions, no I/O, no clock."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter

from src.schemas.benchmarks import (
    ComparisonRow,
    KneePoint,
    LatencyStats,
    Lengths,
    LengthStats,
    Percentiles,
    RequestRecord,
    RequestStats,
    StepStats,
    TurnStats,
)

DIGITS = 6  # microseconds: finer than any network timing we can measure
# A step of a sweep met the SLOs when this share of its requests succeeded within all of them:
# its p95 is within each SLO, and failures count against it.
KNEE_GOODPUT = 0.95


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of ascending values, interpolating linearly between the two
    closest ranks: numpy's default method, so the numbers match what analysts compute.
    """
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    position = (len(sorted_values) - 1) * q / 100
    lower = math.floor(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    fraction = position - lower
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * fraction


def mean(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("mean of no values")
    return math.fsum(values) / len(values)


def sample_std_dev(values: Sequence[float]) -> float:
    """Sample standard deviation (n - 1); 0 for one value, where the spread is simply unknown."""
    if not values:
        raise ValueError("standard deviation of no values")
    if len(values) == 1:
        return 0.0
    average = mean(values)
    return math.sqrt(math.fsum((value - average) ** 2 for value in values) / (len(values) - 1))


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, DIGITS)


def _mean_or_none(values: Sequence[float]) -> float | None:
    return _rounded(mean(values)) if values else None


def latency_stats(latencies: Sequence[float]) -> LatencyStats:
    if not latencies:
        return LatencyStats()
    ordered = sorted(latencies)

    def at(q: float) -> float | None:
        return _rounded(percentile(ordered, q))

    return LatencyStats(
        avg=_rounded(mean(ordered)),
        min=_rounded(ordered[0]),
        max=_rounded(ordered[-1]),
        std_dev=_rounded(sample_std_dev(ordered)),
        p25=at(25),
        p50=at(50),
        p75=at(75),
        p90=at(90),
        p95=at(95),
        p99=at(99),
    )


def as_percentiles(stats: LatencyStats) -> Percentiles:
    """The figures of `stats` that a Percentiles has."""
    return Percentiles(**stats.model_dump(include=set(Percentiles.model_fields)))


def percentiles(values: Sequence[float]) -> Percentiles:
    return as_percentiles(latency_stats(values))


def length_stats(values: Sequence[int], target: int | None) -> LengthStats:
    if not values:
        return LengthStats(target=target)
    ordered = sorted(values)
    return LengthStats(
        target=target,
        mean=_rounded(mean(ordered)),
        p50=_rounded(percentile(ordered, 50)),
        p90=_rounded(percentile(ordered, 90)),
        stdev=_rounded(sample_std_dev(ordered)),
    )


def lengths(
    records: Sequence[RequestRecord], prompt_target: int | None, output_target: int | None
) -> Lengths:
    succeeded = [record for record in records if record.ok]
    return Lengths(
        input=length_stats([record.prompt_tokens for record in succeeded], prompt_target),
        output=length_stats([record.completion_tokens for record in succeeded], output_target),
        early_finishes=sum(1 for record in succeeded if record.finish_reason != "length"),
    )


def turn_stats(records: Sequence[RequestRecord]) -> list[TurnStats]:
    by_turn: dict[int, list[RequestRecord]] = defaultdict(list)
    for record in records:
        by_turn[record.turn].append(record)
    stats = []
    for turn in sorted(by_turn):
        succeeded = [record for record in by_turn[turn] if record.ok]
        stats.append(
            TurnStats(
                turn=turn,
                count=len(by_turn[turn]),
                ok=len(succeeded),
                ttft=percentiles([r.ttft_seconds for r in succeeded if r.ttft_seconds is not None]),
                input=length_stats([record.prompt_tokens for record in succeeded], None),
            )
        )
    return stats


def decode_rate(record: RequestRecord) -> float | None:
    """Tokens after the first over the time after the first: generation speed without queueing."""
    tpot = record.tpot_seconds
    return 1 / tpot if tpot else None


@dataclass(frozen=True, slots=True)
class Slo:
    """Goodput's thresholds, in seconds; unset ones are not checked."""

    ttft: float | None = None
    latency: float | None = None
    tpot: float | None = None

    @property
    def set(self) -> bool:
        return self.ttft is not None or self.latency is not None or self.tpot is not None

    def met(self, record: RequestRecord) -> bool:
        if not record.ok:
            return False
        if self.latency is not None and record.latency_seconds > self.latency:
            return False
        # An answer of one token has no time per output token: nothing to miss.
        tpot = record.tpot_seconds
        if self.tpot is not None and tpot is not None and tpot > self.tpot:
            return False
        ttft = record.ttft_seconds
        return self.ttft is None or (ttft is not None and ttft <= self.ttft)


NO_SLO = Slo()


def total_cost(records: Sequence[RequestRecord]) -> float | None:
    """USD over the successful requests whose cost is known (unknown is not free, so those
    are left out and counted by `unknown_costs`); None when none of them is known."""
    costs = [record.cost for record in records if record.ok]
    known = [cost for cost in costs if cost is not None]
    if costs and not known:
        return None
    return round(math.fsum(known), 10)


def unknown_costs(records: Sequence[RequestRecord]) -> int:
    return sum(1 for record in records if record.ok and record.cost is None)


def request_stats(
    records: Sequence[RequestRecord], wall_seconds: float, slo: Slo = NO_SLO
) -> RequestStats:
    """Statistics over a group of records; latency, ttft and rates count successes only."""
    succeeded = [record for record in records if record.ok]
    output_rates = [
        record.completion_tokens / record.latency_seconds
        for record in succeeded
        if record.latency_seconds > 0
    ]
    scheduled = [
        record.scheduled_latency_seconds
        for record in succeeded
        if record.scheduled_latency_seconds is not None
    ]
    completion_tokens = sum(record.completion_tokens for record in succeeded)
    good = sum(1 for record in records if slo.met(record)) if slo.set else None
    return RequestStats(
        count=len(records),
        ok=len(succeeded),
        failed=len(records) - len(succeeded),
        retried=sum(1 for record in records if record.attempts > 1),
        latency=latency_stats([record.latency_seconds for record in succeeded]),
        ttft=percentiles([r.ttft_seconds for r in succeeded if r.ttft_seconds is not None]),
        itl=percentiles([gap for record in succeeded for gap in record.itl]),
        tpot=percentiles([t for r in succeeded if (t := r.tpot_seconds) is not None]),
        total=latency_stats([record.total_seconds for record in succeeded]),
        scheduled_latency=latency_stats(scheduled) if scheduled else None,
        tokens_total=sum(record.tokens_used for record in succeeded),
        completion_tokens_total=completion_tokens,
        avg_completion_tokens=_mean_or_none([record.completion_tokens for record in succeeded]),
        output_tokens_per_second=_mean_or_none(output_rates),
        output_tokens_per_second_overall=(
            _rounded(completion_tokens / wall_seconds) if wall_seconds > 0 and succeeded else None
        ),
        decode_tokens_per_second=_mean_or_none(
            [rate for record in succeeded if (rate := decode_rate(record)) is not None]
        ),
        goodput=_rounded(good / len(records)) if good is not None and records else None,
        goodput_per_second=(
            _rounded(good / wall_seconds) if good is not None and wall_seconds > 0 else None
        ),
        cost=total_cost(records),
        cost_unknown=unknown_costs(records),
        wall_seconds=round(wall_seconds, DIGITS),
        requests_per_second=round(len(records) / wall_seconds, DIGITS) if wall_seconds > 0 else 0.0,
        errors=dict(Counter(record.error_type for record in records if record.error_type)),
    )


# Where each figure of a comparison row is read in its series' statistics.
_COMPARED: dict[str, str] = {
    "ok": "ok",
    "failed": "failed",
    "retried": "retried",
    "latency_avg": "latency.avg",
    "latency_std_dev": "latency.std_dev",
    "latency_p50": "latency.p50",
    "latency_p95": "latency.p95",
    "ttft_p50": "ttft.p50",
    "itl_p50": "itl.p50",
    "tpot_p50": "tpot.p50",
    "output_tokens_per_second": "output_tokens_per_second",
    "goodput": "goodput",
    "cost": "cost",
    "cost_unknown": "cost_unknown",
}


def comparison_row(
    model: str, stats: RequestStats, provider: str | None = None, providers_answered: int = 0
) -> ComparisonRow:
    return ComparisonRow(
        model=model,
        provider=provider,
        providers_answered=providers_answered,
        cost_per_1k_output_tokens=_cost_per_1k_output_tokens(stats),
        **{name: attrgetter(path)(stats) for name, path in _COMPARED.items()},
    )


def _cost_per_1k_output_tokens(stats: RequestStats) -> float | None:
    if stats.cost is None or not stats.completion_tokens_total or stats.cost_unknown:
        return None
    return round(stats.cost / stats.completion_tokens_total * 1000, 10)


def met_slos(stats: RequestStats) -> bool:
    return stats.count > 0 and stats.goodput is not None and stats.goodput >= KNEE_GOODPUT


def knee_points(
    series: Sequence[tuple[str, str | None]], steps: Sequence[StepStats]
) -> list[KneePoint]:
    """Per series (model, pinned provider), the highest step of a sweep whose requests met the
    SLOs (see KNEE_GOODPUT)."""
    points = []
    for model, provider in series:
        knee: dict[str, object] = dict.fromkeys(_KNEE_FIGURES)
        for step in steps:
            stats = next(
                (s for s in step.models if s.model == model and s.provider == provider), None
            )
            if stats is not None and met_slos(stats):
                knee = {
                    "step": step.step,
                    "concurrency": step.concurrency,
                    "rate": step.rate,
                    "requests_per_second": stats.requests_per_second,
                    "goodput_per_second": stats.goodput_per_second,
                }
        points.append(KneePoint.model_validate({"model": model, "provider": provider, **knee}))
    return points


# What a knee point says of its step; all null when no step met the SLOs.
_KNEE_FIGURES = ("step", "concurrency", "rate", "requests_per_second", "goodput_per_second")
