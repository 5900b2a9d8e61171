"""The run page's charts: inline SVG that says what it draws, escaped, and bounded in size."""

from __future__ import annotations

import re

from src.services.benchmarker.results.charts import (
    MAX_POINTS,
    Series,
    bar_chart,
    cdf_chart,
    timeline_chart,
)
from tests.helpers.html import parse


def points(svg: str) -> list[tuple[float, float]]:
    [line] = re.findall(r'points="([^"]+)"', svg)
    return [(float(x), float(y)) for x, y in (pair.split(",") for pair in line.split())]


def test_a_cdf_climbs_from_none_to_every_request_at_the_largest_value() -> None:
    svg = cdf_chart([Series("m/x", [0.3, 0.1, 0.2, 0.4])], "latency (s)", "cdf")

    drawn = points(svg)
    ys = [y for _, y in drawn]
    assert ys == sorted(ys, reverse=True)  # SVG's y grows downwards: the share only rises
    assert drawn[0][1] > drawn[-1][1]
    assert drawn[-1][0] == max(x for x, _ in drawn)
    assert "4 values" in svg and "latency (s)" in parse(svg).svg_text


def test_a_caller_chosen_label_is_escaped_in_every_chart() -> None:
    label = "<script>alert(1)</script>"
    charts = [
        cdf_chart([Series(label, [1.0])], "s", "a"),
        timeline_chart([Series(label, [1.0])], None, "s", "b"),
        bar_chart([(label, 1.0)], "s", "c"),
    ]

    for svg in charts:
        assert "<script>" not in svg and "&lt;script&gt;" in svg


def test_thousands_of_values_draw_a_bounded_number_of_points() -> None:
    values = [n / 1000 for n in range(20_000)]

    cdf = cdf_chart([Series("m/x", values)], "s", "cdf")
    timeline = timeline_chart([Series("m/x", values)], [values], "s", "timeline")

    assert len(points(cdf)) <= 2 * (MAX_POINTS + 1) + 1
    assert timeline.count("<circle") <= MAX_POINTS


def test_nothing_measured_says_so_instead_of_drawing_zero() -> None:
    assert "Nothing to plot" in cdf_chart([Series("m/x", [])], "s", "cdf")
    bars = bar_chart([("m/x ← Alpha", None), ("m/x ← Beta", 0.5)], "p50 (s)", "bars")
    assert "not measured" in bars and bars.count("<rect") == 1


def test_a_timeline_without_times_says_it_is_drawn_in_finishing_order() -> None:
    by_order = timeline_chart([Series("m/x", [1.0, 2.0])], None, "s", "a")
    by_time = timeline_chart([Series("m/x", [1.0, 2.0])], [[0.5, 4.0]], "s", "b")

    assert "in the order they finished" in by_order and "seconds since" not in by_order
    assert "seconds since the run started" in by_time
