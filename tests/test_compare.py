"""Comparing runs: the change per series and measure, and its bootstrapped 95% interval."""

from __future__ import annotations

import random

from src.schemas.benchmarks import RequestRecord
from src.services.benchmarker.results.compare import MEASURES, compare_runs, difference
from tests.helpers.results import request_result

LATENCY_P50 = MEASURES[0]


def rows(center: float, count: int = 200, seed: int = 1, model: str = "m/x") -> list[RequestRecord]:
    """Latencies spread +-10% around `center`, each with a ttft, tokens and a cost."""
    draw = random.Random(seed)
    result = []
    for index in range(count):
        latency = center * draw.uniform(0.9, 1.1)
        result.append(
            request_result(
                latency, model=model, run=index + 1, ttft=latency / 4, completion=50, total=60,
                itl=[latency / 60] * 49, cost=0.001,
            )
        )  # fmt: skip
    return result


def test_a_run_twelve_percent_slower_reads_as_slower_with_an_interval_around_twelve() -> None:
    result = difference(LATENCY_P50, rows(1.0, seed=1), rows(1.12, seed=2))

    assert result.change is not None and result.low is not None and result.high is not None
    assert 0.09 < result.change < 0.15
    assert 0 < result.low < result.change < result.high
    assert result.low < 0.12 < result.high
    assert result.verdict.endswith(")") and " slower (" in result.verdict


def test_two_draws_of_the_same_distribution_read_as_no_difference() -> None:
    result = difference(LATENCY_P50, rows(1.0, seed=3), rows(1.0, seed=4))

    assert result.low is not None and result.high is not None
    assert result.low < 0 < result.high
    assert result.verdict == "no difference"


def test_the_interval_is_the_same_every_time_for_the_same_rows() -> None:
    base, other = rows(1.0, seed=5), rows(1.05, seed=6)

    assert difference(LATENCY_P50, base, other) == difference(LATENCY_P50, base, other)


def test_faster_throughput_and_a_cheaper_run_say_so() -> None:
    by_name = {spec.name: spec for spec in MEASURES}
    base = rows(1.0, seed=7)
    quicker = [row.model_copy(update={"cost": 0.0005}) for row in rows(0.5, seed=8)]

    throughput = difference(by_name["output tokens/s"], base, quicker)
    cost = difference(by_name["cost per request"], base, quicker)

    assert " faster (" in throughput.verdict
    assert cost.change == -0.5 and cost.verdict.startswith("50% cheaper")


def test_compare_runs_pairs_series_by_name_and_leaves_out_failures_and_warmup() -> None:
    base = rows(1.0, count=40, seed=9) + rows(2.0, count=40, seed=10, model="m/y")
    other = rows(1.0, count=30, seed=11) + [
        request_result(9.0, model="m/x", error_type="UpstreamServerError"),
        request_result(9.0, model="m/x", warmup=True),
    ]

    [series] = compare_runs([base, other])

    assert series.series == "m/x"
    assert series.rows == (40, 30)
    [per_measure] = series.differences
    assert [item.measure for item in per_measure] == [spec.name for spec in MEASURES]
    assert per_measure[0].other is not None and per_measure[0].other < 1.2


def test_a_measure_neither_run_has_is_not_measured() -> None:
    by_name = {spec.name: spec for spec in MEASURES}
    plain = [request_result(1.0) for _ in range(5)]

    result = difference(by_name["ttft p50"], plain, plain)

    assert result.change is None and result.verdict == "not measured"
