"""Runs side by side: per series and measure, the change from a baseline run and its 95%
confidence interval, bootstrapped over the runs' rows (as aiperf does for repeated runs).

Each resample draws as many rows as each run has, with replacement, from each run, and takes
the relative change of the measure; the interval is the 2.5th to 97.5th percentile of those
changes. An interval that holds 0 reads "no difference". The seed is fixed: the same rows
always give the same interval.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from src.schemas.benchmarks import RequestRecord, series_label
from src.services.benchmarker.results.statistics import mean, percentile

SEED = 20_251_205
CONFIDENCE = 0.95
MAX_RESAMPLES = 1000
MIN_RESAMPLES = 200
# Rows x resamples drawn per measure at most: a comparison of large runs stays a few seconds.
RESAMPLE_BUDGET = 2_000_000

Measure = Callable[[Sequence[RequestRecord]], float | None]


def _values(
    rows: Sequence[RequestRecord], pick: Callable[[RequestRecord], float | None]
) -> list[float]:
    return sorted(value for row in rows if (value := pick(row)) is not None)


def _at(q: float, pick: Callable[[RequestRecord], float | None]) -> Measure:
    def measure(rows: Sequence[RequestRecord]) -> float | None:
        values = _values(rows, pick)
        return percentile(values, q) if values else None

    return measure


def _mean_of(pick: Callable[[RequestRecord], float | None]) -> Measure:
    def measure(rows: Sequence[RequestRecord]) -> float | None:
        values = _values(rows, pick)
        return mean(values) if values else None

    return measure


def _itl_p50(rows: Sequence[RequestRecord]) -> float | None:
    gaps = sorted(gap for row in rows for gap in row.itl)
    return percentile(gaps, 50) if gaps else None


def _tokens_per_second(row: RequestRecord) -> float | None:
    if row.latency_seconds <= 0 or not row.completion_tokens:
        return None
    return row.completion_tokens / row.latency_seconds


@dataclass(frozen=True)
class MeasureSpec:
    name: str
    unit: str
    lower_is_better: bool
    measure: Measure


MEASURES: tuple[MeasureSpec, ...] = (
    MeasureSpec("latency p50", "s", True, _at(50, lambda row: row.latency_seconds)),
    MeasureSpec("latency p95", "s", True, _at(95, lambda row: row.latency_seconds)),
    MeasureSpec("ttft p50", "s", True, _at(50, lambda row: row.ttft_seconds)),
    MeasureSpec("itl p50", "s", True, _itl_p50),
    MeasureSpec("output tokens/s", "tokens/s", False, _mean_of(_tokens_per_second)),
    MeasureSpec("cost per request", "USD", True, _mean_of(lambda row: row.cost)),
)


@dataclass(frozen=True)
class Difference:
    """One measure of one series: the baseline's value, the other run's, and the relative
    change (0.12: 12% higher) with its confidence interval; None where either is unmeasured."""

    measure: str
    unit: str
    lower_is_better: bool
    baseline: float | None
    other: float | None
    change: float | None
    low: float | None
    high: float | None

    @property
    def verdict(self) -> str:
        """How a person reads it: "no difference", or "12% slower (8-16%)"."""
        if self.change is None or self.low is None or self.high is None:
            return "not measured"
        if self.low <= 0 <= self.high:
            return "no difference"
        better = (self.change < 0) == self.lower_is_better
        word = _WORDS.get(self.measure, ("better", "worse"))[0 if better else 1]
        size = f"{abs(self.change) * 100:.0f}%"
        bounds = sorted((abs(self.low) * 100, abs(self.high) * 100))
        return f"{size} {word} ({bounds[0]:.0f}-{bounds[1]:.0f}%)"


_WORDS = {
    "latency p50": ("faster", "slower"),
    "latency p95": ("faster", "slower"),
    "ttft p50": ("faster", "slower"),
    "itl p50": ("faster", "slower"),
    "output tokens/s": ("faster", "slower"),
    "cost per request": ("cheaper", "dearer"),
}


@dataclass(frozen=True)
class SeriesComparison:
    series: str
    rows: tuple[int, ...]  # measured rows per run, baseline first
    differences: tuple[tuple[Difference, ...], ...]  # per other run, per measure


def measured_rows(
    records: Sequence[RequestRecord], by_step: bool = False
) -> dict[str, list[RequestRecord]]:
    """Successful measured rows (warm-up left out) by series, in the order they finished;
    `by_step`: a sweep's steps apart, each step of a series a series of its own."""
    by_series: dict[str, list[RequestRecord]] = {}
    for record in records:
        if record.warmup or not record.ok:
            continue
        key = series_label(record.model, record.pinned_provider)
        if by_step and record.step is not None:
            key += f" · step {record.step}"
        by_series.setdefault(key, []).append(record)
    return by_series


def compare_runs(runs: Sequence[Sequence[RequestRecord]]) -> list[SeriesComparison]:
    """Every series of the first run (the baseline) that another run also measured, by name,
    against each of the others in turn. A sweep's steps are compared step by step: a step's
    load is part of what is measured."""
    grouped = [measured_rows(records, by_step=True) for records in runs]
    baseline, others = grouped[0], grouped[1:]
    comparisons = []
    for series, base_rows in sorted(baseline.items()):
        if not any(series in other for other in others):
            continue
        differences = tuple(
            tuple(difference(spec, base_rows, other.get(series, [])) for spec in MEASURES)
            for other in others
        )
        counts = (len(base_rows), *(len(other.get(series, [])) for other in others))
        comparisons.append(SeriesComparison(series, counts, differences))
    return comparisons


def difference(
    spec: MeasureSpec,
    baseline: Sequence[RequestRecord],
    other: Sequence[RequestRecord],
    seed: int = SEED,
) -> Difference:
    base_value, other_value = spec.measure(baseline), spec.measure(other)
    unmeasured = Difference(
        spec.name, spec.unit, spec.lower_is_better, base_value, other_value, None, None, None
    )
    if base_value is None or other_value is None or base_value == 0:
        return unmeasured
    changes = _bootstrap(spec.measure, baseline, other, seed)
    if not changes:
        return unmeasured
    tail = (1 - CONFIDENCE) / 2 * 100
    return Difference(
        spec.name,
        spec.unit,
        spec.lower_is_better,
        base_value,
        other_value,
        other_value / base_value - 1,
        percentile(changes, tail),
        percentile(changes, 100 - tail),
    )


def _bootstrap(
    measure: Measure, baseline: Sequence[RequestRecord], other: Sequence[RequestRecord], seed: int
) -> list[float]:
    draw = random.Random(seed)
    rows = len(baseline) + len(other)
    resamples = max(MIN_RESAMPLES, min(MAX_RESAMPLES, RESAMPLE_BUDGET // max(rows, 1)))
    changes = []
    for _ in range(resamples):
        base = measure(draw.choices(baseline, k=len(baseline)))
        new = measure(draw.choices(other, k=len(other)))
        if base and new is not None:
            changes.append(new / base - 1)
    return sorted(changes)
