"""Statistics over benchmark records: pure functions, no I/O, no clock."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from src.schemas.benchmarks import (
    ComparisonRow,
    LatencyStats,
    RequestRecord,
    RequestStats,
    TtftStats,
)

DIGITS = 6  # microseconds: finer than any network timing we can measure


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


def ttft_stats(ttfts: Sequence[float]) -> TtftStats:
    if not ttfts:
        return TtftStats()
    ordered = sorted(ttfts)
    return TtftStats(
        avg=_rounded(mean(ordered)),
        p50=_rounded(percentile(ordered, 50)),
        p95=_rounded(percentile(ordered, 95)),
        p99=_rounded(percentile(ordered, 99)),
    )


def decode_rate(record: RequestRecord) -> float | None:
    """Tokens after the first over the time after the first: generation speed without queueing."""
    if record.ttft_seconds is None or record.completion_tokens < 2:
        return None
    decode_seconds = record.latency_seconds - record.ttft_seconds
    return (record.completion_tokens - 1) / decode_seconds if decode_seconds > 0 else None


def request_stats(records: Sequence[RequestRecord], wall_seconds: float) -> RequestStats:
    """Statistics over a group of records; latency, ttft and rates count successes only."""
    succeeded = [record for record in records if record.ok]
    decode_rates = [rate for record in succeeded if (rate := decode_rate(record)) is not None]
    output_rates = [
        record.completion_tokens / record.latency_seconds
        for record in succeeded
        if record.latency_seconds > 0
    ]
    ttfts = [record.ttft_seconds for record in succeeded if record.ttft_seconds is not None]
    return RequestStats(
        count=len(records),
        ok=len(succeeded),
        failed=len(records) - len(succeeded),
        retried=sum(1 for record in records if record.attempts > 1),
        latency=latency_stats([record.latency_seconds for record in succeeded]),
        ttft=ttft_stats(ttfts),
        total=latency_stats([record.total_seconds for record in succeeded]),
        tokens_total=sum(record.tokens_used for record in succeeded),
        avg_completion_tokens=_mean_or_none([record.completion_tokens for record in succeeded]),
        output_tokens_per_second=_mean_or_none(output_rates),
        decode_tokens_per_second=_mean_or_none(decode_rates),
        wall_seconds=round(wall_seconds, DIGITS),
        requests_per_second=round(len(records) / wall_seconds, DIGITS) if wall_seconds > 0 else 0.0,
        errors=dict(Counter(record.error_type for record in records if record.error_type)),
    )


def comparison_row(model: str, stats: RequestStats) -> ComparisonRow:
    return ComparisonRow(
        model=model,
        ok=stats.ok,
        failed=stats.failed,
        retried=stats.retried,
        latency_avg=stats.latency.avg,
        latency_std_dev=stats.latency.std_dev,
        latency_p50=stats.latency.p50,
        latency_p95=stats.latency.p95,
        ttft_p50=stats.ttft.p50,
        output_tokens_per_second=stats.output_tokens_per_second,
    )
