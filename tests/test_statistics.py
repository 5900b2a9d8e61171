from __future__ import annotations

import math

import pytest

from src.services.benchmarker.results.statistics import (
    comparison_row,
    latency_stats,
    mean,
    percentile,
    percentiles,
    request_stats,
    sample_std_dev,
)
from tests.helpers.results import request_result as result

# Hand-computed with the "linear" method (numpy's default): position = (n - 1) * q / 100,
# then interpolate between the values at floor(position) and floor(position) + 1.
VALUES = [1.0, 2.0, 3.0, 4.0, 10.0]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (0, 1.0),
        (25, 2.0),  # position 1
        (50, 3.0),  # position 2
        (75, 4.0),  # position 3
        (90, 7.6),  # position 3.6: 4 + 0.6 * (10 - 4)
        (95, 8.8),  # position 3.8: 4 + 0.8 * 6
        (99, 9.76),  # position 3.96: 4 + 0.96 * 6
        (100, 10.0),
    ],
)
def test_percentile_interpolates_between_closest_ranks(q: float, expected: float) -> None:
    assert percentile(VALUES, q) == pytest.approx(expected)


def test_percentile_matches_hand_computed_values_for_an_even_count() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile([1.0, 2.0, 3.0, 4.0], 75) == pytest.approx(3.25)
    assert percentile([15.0, 20.0, 35.0, 40.0, 50.0], 40) == pytest.approx(29.0)


def test_percentile_of_one_value_is_that_value() -> None:
    assert [percentile([7.0], q) for q in (0, 50, 99, 100)] == [7.0, 7.0, 7.0, 7.0]


def test_percentile_refuses_no_values_and_out_of_range_q() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)
    with pytest.raises(ValueError):
        percentile([1.0], -1)


def test_mean_and_std_dev_refuse_no_values() -> None:
    with pytest.raises(ValueError):
        mean([])
    with pytest.raises(ValueError):
        sample_std_dev([])


# VALUES out of order: the statistics must sort before they pick ranks.
SHUFFLED = [10.0, 1.0, 4.0, 2.0, 3.0]


def test_latency_stats_give_every_statistic_of_unsorted_values() -> None:
    stats = latency_stats(SHUFFLED)

    assert stats.model_dump() == {
        "avg": 4.0,
        "min": 1.0,
        "max": 10.0,
        "std_dev": pytest.approx(math.sqrt(50 / 4), abs=1e-6),  # squared deviations: 50
        "p25": 2.0,
        "p50": 3.0,
        "p75": 4.0,
        "p90": pytest.approx(7.6),
        "p95": pytest.approx(8.8),
        "p99": pytest.approx(9.76),
    }


def test_ttft_itl_and_tpot_percentiles_interpolate_too() -> None:
    # Nearest rank would give 10.0 for p90, p95 and p99.
    assert percentiles(SHUFFLED).model_dump() == {
        "avg": 4.0,
        "p50": 3.0,
        "p90": pytest.approx(7.6),
        "p95": pytest.approx(8.8),
        "p99": pytest.approx(9.76),
    }


def test_statistics_are_rounded_to_microseconds() -> None:
    stats = latency_stats([0.1234567, 0.3])
    ttft = percentiles([0.0000014])

    assert (stats.min, stats.max, stats.avg) == (0.123457, 0.3, 0.211728)
    assert stats.p50 == 0.211728
    assert ttft.avg == ttft.p99 == 0.000001


def test_sample_std_dev_divides_by_n_minus_one() -> None:
    values = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]  # squared deviations sum to 32

    assert sample_std_dev(values) == pytest.approx(math.sqrt(32 / 7))
    assert mean(values) == 5.0


def test_sample_std_dev_of_one_value_is_zero() -> None:
    assert sample_std_dev([3.5]) == 0.0


def test_latency_stats_of_one_run_has_zero_std_dev() -> None:
    stats = latency_stats([0.8])

    assert stats.std_dev == 0.0
    assert stats.min == stats.max == stats.p50 == stats.p99 == 0.8


def test_latency_stats_without_successes_are_null() -> None:
    stats = latency_stats([])

    assert stats.model_dump() == dict.fromkeys(stats.model_dump())


def test_request_stats_count_successes_for_latency_and_rates() -> None:
    results = [
        result(2.0, ttft=0.5, completion=11, total=20),  # 5.5 tok/s; decode 10 / 1.5
        result(1.0, ttft=0.2, completion=5, total=10),  # 5.0 tok/s; decode 4 / 0.8
        result(9.0, error_type="UpstreamStatusError"),
        result(0.1, error_type="UpstreamTimeoutError"),
        result(0.1, error_type="UpstreamStatusError"),
    ]

    stats = request_stats(results, wall_seconds=4.0)

    assert (stats.count, stats.ok, stats.failed) == (5, 2, 3)
    assert stats.latency.avg == pytest.approx(1.5)
    assert stats.latency.min == 1.0
    assert stats.latency.max == 2.0  # the failed 9 s request is not a latency sample
    assert stats.latency.std_dev == pytest.approx(math.sqrt(0.5), abs=1e-6)
    assert stats.latency.p50 == pytest.approx(1.5)
    assert stats.ttft.avg == pytest.approx(0.35)
    assert stats.ttft.p50 == pytest.approx(0.35)
    assert stats.tokens_total == 30
    assert stats.avg_completion_tokens == 8.0
    assert stats.output_tokens_per_second == pytest.approx(5.25)
    assert stats.decode_tokens_per_second == pytest.approx((10 / 1.5 + 5.0) / 2, abs=1e-6)
    assert stats.wall_seconds == 4.0
    assert stats.requests_per_second == pytest.approx(1.25)
    assert stats.errors == {"UpstreamStatusError": 2, "UpstreamTimeoutError": 1}


def test_rates_skip_results_they_cannot_be_computed_for() -> None:
    results = [
        result(2.0, ttft=1.0, completion=5),  # decode: 4 tokens in 1 s; output: 2.5 tok/s
        result(3.0, ttft=1.0, completion=1),  # one token: no decode rate
        result(1.0, ttft=1.0, completion=4),  # all at the first token: no decode time
        result(0.0, completion=3),  # no measurable latency: no output rate
    ]

    stats = request_stats(results, wall_seconds=1.0)

    assert stats.decode_tokens_per_second == 4.0
    assert stats.output_tokens_per_second == pytest.approx((2.5 + 1 / 3 + 4.0) / 3, abs=1e-6)


def test_failed_results_add_nothing_but_their_count_and_error_type() -> None:
    failed = result(
        0.5, ttft=0.1, completion=50, total=60, error_type="UpstreamStreamError"
    )  # failed mid-stream, after a first token

    stats = request_stats([result(1.0, ttft=0.5, completion=2, total=3), failed], 2.0)

    assert (stats.count, stats.ok, stats.failed) == (2, 1, 1)
    assert (stats.latency.min, stats.latency.max) == (1.0, 1.0)
    assert (stats.ttft.avg, stats.ttft.p99) == (0.5, 0.5)
    assert stats.tokens_total == 3
    assert stats.avg_completion_tokens == 2.0
    assert stats.output_tokens_per_second == 2.0
    assert stats.decode_tokens_per_second == 2.0
    assert stats.requests_per_second == 1.0  # every request counts towards the rate
    assert stats.errors == {"UpstreamStreamError": 1}


def test_request_stats_without_streaming_have_no_ttft_or_decode_rate() -> None:
    stats = request_stats([result(1.0, completion=4, total=9)], wall_seconds=1.0)

    assert stats.ttft.model_dump() == {
        "avg": None,
        "p50": None,
        "p90": None,
        "p95": None,
        "p99": None,
    }
    assert stats.decode_tokens_per_second is None
    assert stats.output_tokens_per_second == 4.0


def test_request_stats_when_everything_failed() -> None:
    stats = request_stats([result(0.5, error_type="UpstreamStatusError")], wall_seconds=0.5)

    assert (stats.ok, stats.failed) == (0, 1)
    assert stats.latency.avg is None
    assert stats.latency.std_dev is None
    assert stats.avg_completion_tokens is None
    assert stats.output_tokens_per_second is None
    assert stats.tokens_total == 0


def test_request_stats_of_no_results_do_not_divide_by_zero() -> None:
    stats = request_stats([], wall_seconds=0.0)

    assert (stats.count, stats.requests_per_second, stats.errors) == (0, 0.0, {})


def test_comparison_row_takes_the_headline_numbers() -> None:
    stats = request_stats([result(1.0, ttft=0.25, completion=3), result(3.0)], wall_seconds=2.0)

    row = comparison_row("m/x", stats)

    assert row.model_dump() == {
        "model": "m/x",
        "ok": 2,
        "failed": 0,
        "retried": 0,
        "latency_avg": 2.0,
        "latency_std_dev": pytest.approx(math.sqrt(2), abs=1e-6),
        "latency_p50": 2.0,
        "latency_p95": pytest.approx(2.9),
        "ttft_p50": 0.25,
        "itl_p50": None,
        "tpot_p50": 0.375,  # (1.0 - 0.25) / (3 - 1): the one request with a ttft
        "output_tokens_per_second": 1.5,
        "goodput": None,
        "cost": None,
        "cost_unknown": 2,
        "cost_per_1k_output_tokens": None,
        "provider": None,
        "providers_answered": 0,
    }
