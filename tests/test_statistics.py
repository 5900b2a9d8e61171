from __future__ import annotations

import math
from typing import Any

import pytest

from src.schemas.benchmarks import ModelStats, RequestRecord, StepStats
from src.services.benchmarker.results.statistics import (
    Slo,
    comparison_row,
    knee_points,
    latency_stats,
    lengths,
    mean,
    met_slos,
    percentile,
    percentiles,
    request_stats,
    sample_std_dev,
    turn_stats,
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
    with pytest.raises(ValueError, match="^percentile of no values$"):
        percentile([], 50)
    with pytest.raises(ValueError, match="^percentile 101 is outside 0..100$"):
        percentile([1.0], 101)
    with pytest.raises(ValueError):
        percentile([1.0], -1)


def test_mean_and_std_dev_refuse_no_values() -> None:
    with pytest.raises(ValueError, match="^mean of no values$"):
        mean([])
    with pytest.raises(ValueError, match="^standard deviation of no values$"):
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


# Goodput: A meets both thresholds exactly; B is too slow; C's first token came too late; D has
# no first token to check; E failed, however fast.
GOODPUT_RECORDS = [
    result(2.0, ttft=0.5),
    result(2.5, ttft=0.4),
    result(1.0, ttft=0.6),
    result(1.0),
    result(0.1, ttft=0.1, error_type="UpstreamStatusError"),
]


@pytest.mark.parametrize(
    ("slo", "goodput"),
    [
        (Slo(ttft=0.5, latency=2.0), 0.2),  # A
        (Slo(ttft=0.5), 0.4),  # A, B
        (Slo(latency=2.0), 0.6),  # A, C, D
        (Slo(), None),  # no thresholds: no goodput
    ],
)
def test_goodput_is_the_share_of_all_requests_that_met_every_set_threshold(
    slo: Slo, goodput: float | None
) -> None:
    assert request_stats(GOODPUT_RECORDS, wall_seconds=1.0, slo=slo).goodput == goodput


def test_goodput_of_no_requests_is_null() -> None:
    assert request_stats([], wall_seconds=0.0, slo=Slo(latency=1.0)).goodput is None


def test_retried_counts_the_requests_that_needed_more_than_one_attempt() -> None:
    records = [result(attempts=1), result(attempts=2), result(attempts=3)]

    assert request_stats(records, wall_seconds=1.0).retried == 2


def test_scheduled_latency_covers_the_successes_that_had_a_schedule() -> None:
    records = [
        result(1.0, scheduled_latency_seconds=1.5),
        result(1.0, scheduled_latency_seconds=2.5),
        result(1.0),
        result(1.0, scheduled_latency_seconds=9.0, error_type="UpstreamStatusError"),
    ]

    scheduled = request_stats(records, wall_seconds=1.0).scheduled_latency

    assert scheduled is not None
    assert (scheduled.min, scheduled.avg, scheduled.max) == (1.5, 2.0, 2.5)


def test_without_a_schedule_there_is_no_scheduled_latency() -> None:
    assert request_stats([result(1.0)], wall_seconds=1.0).scheduled_latency is None


def test_rates_over_a_wall_time_under_a_second() -> None:
    records = [result(0.2, completion=6), result(0.3, completion=2)]

    stats = request_stats(records, wall_seconds=0.5)

    assert stats.output_tokens_per_second_overall == 16.0  # 8 tokens in 0.5 s
    assert stats.requests_per_second == 4.0


def test_overall_output_rate_needs_a_wall_time_and_a_success() -> None:
    assert request_stats([result(0.2, completion=6)], 0.0).output_tokens_per_second_overall is None
    failed = [result(0.2, error_type="UpstreamStatusError")]
    assert request_stats(failed, 0.5).output_tokens_per_second_overall is None


def test_wall_seconds_are_rounded_to_microseconds() -> None:
    assert request_stats([result()], wall_seconds=1.23456789).wall_seconds == 1.234568


def test_itl_and_total_time_come_from_the_successes() -> None:
    records = [
        result(1.0, itl=[0.1, 0.3], total_seconds=1.5),
        result(2.0, itl=[0.2], total_seconds=2.5),
        result(0.5, itl=[9.0], total_seconds=9.0, error_type="UpstreamStreamError"),
    ]

    stats = request_stats(records, wall_seconds=1.0)

    assert (stats.itl.avg, stats.itl.p50) == (0.2, 0.2)
    assert (stats.total.min, stats.total.max) == (1.5, 2.5)


def test_cost_sums_the_successes_to_ten_decimals() -> None:
    records = [
        result(cost=0.25),
        result(cost=0.5),
        result(cost=7.0, error_type="UpstreamStatusError"),
    ]

    assert request_stats(records, wall_seconds=1.0).cost == 0.75
    assert request_stats([result(cost=1.23e-10)], wall_seconds=1.0).cost == 1e-10


def test_a_success_without_a_cost_is_counted_unknown_and_the_known_ones_still_add_up() -> None:
    stats = request_stats([result(cost=0.25), result()], wall_seconds=1.0)

    assert (stats.cost, stats.cost_unknown) == (0.25, 1)
    assert request_stats([result()], wall_seconds=1.0).cost is None


def test_comparison_row_carries_itl_goodput_and_cost() -> None:
    records = [result(1.0, ttft=0.2, itl=[0.1, 0.3], cost=0.5)]
    stats = request_stats(records, wall_seconds=1.0, slo=Slo(latency=2.0))

    row = comparison_row("m/x", stats)

    assert (row.itl_p50, row.goodput, row.cost) == (0.2, 1.0, 0.5)


def test_comparison_row_prices_a_thousand_output_tokens_and_names_its_series() -> None:
    stats = request_stats([result(1.0, completion=3, cost=0.0001)], wall_seconds=1.0)

    row = comparison_row("m/x", stats, "Beta", 2)

    assert (row.model, row.provider, row.providers_answered) == ("m/x", "Beta", 2)
    assert row.cost_per_1k_output_tokens == 0.0333333333  # 0.0001 / 3 * 1000, to 10 decimals


@pytest.mark.parametrize(
    "records",
    [
        [result(1.0, completion=3, cost=0.0001), result(1.0, completion=3)],  # a cost unknown
        [result(1.0, completion=0, cost=0.0001)],  # no output tokens
        [result(1.0, completion=3)],  # no cost known
    ],
)
def test_comparison_row_has_no_price_per_output_token_it_cannot_work_out(
    records: list[RequestRecord],
) -> None:
    row = comparison_row("m/x", request_stats(records, wall_seconds=1.0))

    assert row.cost_per_1k_output_tokens is None


def _step(number: int, concurrency: int, rate: float | None, *models: ModelStats) -> StepStats:
    # Only what the knee reads: a step's full statistics are built in tests/test_sweeps.py.
    fields: dict[str, Any] = {"concurrency": concurrency, "rate": rate, "models": list(models)}
    return StepStats.model_construct(step=number, **fields)


def _series(model: str, provider: str | None, goodput: float, rps: float) -> ModelStats:
    fields: dict[str, Any] = {
        "model": model,
        "provider": provider,
        "count": 10,
        "goodput": goodput,
        "requests_per_second": rps,
        "goodput_per_second": round(goodput * rps, 6),
    }
    return ModelStats.model_construct(**fields)


def test_the_knee_is_the_highest_step_each_series_met_the_slos_at() -> None:
    steps = [
        _step(1, 1, None, _series("m/x", None, 1.0, 1.0), _series("m/x", "Beta", 1.0, 1.0)),
        _step(2, 4, 2.5, _series("m/x", None, 0.95, 2.0), _series("m/x", "Beta", 0.5, 2.0)),
        _step(3, 8, 5.0, _series("m/x", None, 0.5, 4.0), _series("m/x", "Beta", 0.96, 4.0)),
    ]

    by_series = knee_points([("m/x", None), ("m/x", "Beta"), ("m/y", None)], steps)

    assert [knee.model_dump() for knee in by_series] == [
        {
            "model": "m/x",
            "provider": None,
            "step": 2,
            "concurrency": 4,
            "rate": 2.5,
            "requests_per_second": 2.0,
            "goodput_per_second": 1.9,
        },
        {
            "model": "m/x",
            "provider": "Beta",
            "step": 3,
            "concurrency": 8,
            "rate": 5.0,
            "requests_per_second": 4.0,
            "goodput_per_second": 3.84,
        },
        {
            "model": "m/y",
            "provider": None,
            "step": None,
            "concurrency": None,
            "rate": None,
            "requests_per_second": None,
            "goodput_per_second": None,
        },
    ]


def test_lengths_count_the_tokens_of_the_successes_against_their_targets() -> None:
    records = [
        result(prompt_tokens=10, completion=4, finish_reason="length"),
        result(prompt_tokens=40, completion=2, finish_reason="stop"),
        result(prompt_tokens=20, completion=8, finish_reason="length"),
        result(prompt_tokens=999, completion=999, error_type="UpstreamStatusError"),
    ]

    assert lengths(records, 25, 6).model_dump() == {
        "input": {"target": 25, "mean": 23.333333, "p50": 20.0, "p90": 36.0, "stdev": 15.275252},
        "output": {"target": 6, "mean": 4.666667, "p50": 4.0, "p90": 7.2, "stdev": 3.05505},
        "early_finishes": 1,
    }


def test_lengths_of_no_successes_keep_only_their_targets() -> None:
    nothing = {"mean": None, "p50": None, "p90": None, "stdev": None}

    assert lengths([result(error_type="UpstreamStatusError")], None, 7).model_dump() == {
        "input": {"target": None, **nothing},
        "output": {"target": 7, **nothing},
        "early_finishes": 0,
    }


def test_turn_stats_group_the_requests_by_their_turn_of_the_conversation() -> None:
    records = [
        result(ttft=0.2, prompt_tokens=500, turn=2),
        result(ttft=0.4, prompt_tokens=100, turn=1),
        result(prompt_tokens=500, turn=2),  # not streamed: no ttft
        result(ttft=0.6, prompt_tokens=300, turn=1),
        result(ttft=0.1, prompt_tokens=900, turn=1, error_type="UpstreamStatusError"),
    ]

    assert [turn.model_dump() for turn in turn_stats(records)] == [
        {
            "turn": 1,
            "count": 3,
            "ok": 2,
            "ttft": {"avg": 0.5, "p50": 0.5, "p90": 0.58, "p95": 0.59, "p99": 0.598},
            "input": {
                "target": None,
                "mean": 200.0,
                "p50": 200.0,
                "p90": 280.0,
                "stdev": 141.421356,
            },
        },
        {
            "turn": 2,
            "count": 2,
            "ok": 2,
            "ttft": {"avg": 0.2, "p50": 0.2, "p90": 0.2, "p95": 0.2, "p99": 0.2},
            "input": {"target": None, "mean": 500.0, "p50": 500.0, "p90": 500.0, "stdev": 0.0},
        },
    ]


def test_a_tpot_slo_misses_an_answer_slower_per_token_and_skips_one_without_that_time() -> None:
    slo = Slo(tpot=0.05)

    def answer(latency: float, completion: int) -> RequestRecord:
        # Time per output token: (latency - ttft) / (tokens - 1).
        return result(latency, ttft=0.5, completion=completion, total=completion)

    assert answer(1.0, 11).tpot_seconds == 0.05
    assert slo.met(answer(1.0, 11))  # at the threshold: met
    assert not slo.met(answer(1.1, 11))
    assert slo.met(answer(9.0, 1))  # one token: no time per token to miss
    assert Slo(latency=2.0).met(answer(1.9, 2))  # no tpot threshold set


def test_goodput_per_second_is_the_requests_that_met_the_slos_over_the_wall_time() -> None:
    records = [result(0.5), result(0.5), result(3.0)]

    assert request_stats(records, 2.0, Slo(latency=1.0)).goodput_per_second == 1.0
    assert request_stats(records, 0.5, Slo(latency=1.0)).goodput_per_second == 4.0
    assert request_stats(records, 0.0, Slo(latency=1.0)).goodput_per_second is None
    assert request_stats(records, 2.0).goodput_per_second is None  # no SLO: nothing to meet


def test_one_request_that_met_the_slos_is_a_step_that_met_them() -> None:
    assert met_slos(request_stats([result(0.5)], 1.0, Slo(latency=1.0)))
    assert not met_slos(request_stats([result(3.0)], 1.0, Slo(latency=1.0)))
    assert not met_slos(request_stats([], 1.0, Slo(latency=1.0)))
