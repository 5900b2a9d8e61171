"""Charts of a run's rows as inline SVG: distributions (CDF), latency over the run, bars.

The same plotting habits as the report's box plot (report.py): round ticks from `axis_ticks`,
its palette, no script, every caller's string escaped. A CDF rather than only a box plot: when
latencies are tight a box collapses to a line, while a CDF still shows the tail.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from src.services.benchmarker.results.report import (
    LABEL_CHARS,
    PALETTE,
    PLOT_WIDTH,
    axis_ticks,
    shorten,
)

_PLOT_HEIGHT = 220
_LEFT = 56
_TOP = 12
_AXIS_SPACE = 44
_LEGEND_ROW = 18
_BAR_ROW = 26
_BAR_LABEL_WIDTH = 260
# A line over thousands of points draws no better than over this many, and weighs less.
MAX_POINTS = 400


@dataclass(frozen=True)
class Series:
    """Values of one series (a model, or model @ provider), in the order they were measured."""

    label: str
    values: Sequence[float]


def cdf_chart(series: Sequence[Series], axis_label: str, chart_id: str) -> str:
    """The share of requests at or under each value, one step line per series."""
    drawn = [item for item in series if item.values]
    if not drawn:
        return f'<p id="{chart_id}">Nothing to plot: no successful request measured it.</p>'
    ticks = axis_ticks(max(max(item.values) for item in drawn))
    shares = [0.0, 0.25, 0.5, 0.75, 1.0]
    frame = _Frame(ticks, shares, axis_label, "share of requests", len(drawn))
    lines = []
    for index, item in enumerate(drawn):
        ordered = _thin(sorted(item.values))
        count = len(ordered)
        points = [(ordered[0], 0.0)]
        for rank, value in enumerate(ordered, start=1):
            points.append((value, points[-1][1]))
            points.append((value, rank / count))
        lines.append(_polyline(points, frame, index, f"{item.label}: {len(item.values)} values"))
    return frame.svg(chart_id, f"Distribution of {axis_label}", lines, drawn)


def timeline_chart(
    series: Sequence[Series],
    times: Sequence[Sequence[float]] | None,
    axis_label: str,
    chart_id: str,
) -> str:
    """Each request's value against when it finished (`times`, seconds since the run started,
    one per value; None: its place in the order requests finished): a drift, a stall or a
    burst of retries shows as a change along the run."""
    x_label = "seconds since the run started" if times else "request, in the order they finished"
    if times is None:
        times = [[n + 1.0 for n in range(len(item.values))] for item in series]
    placed = [(item, xs) for item, xs in zip(series, times, strict=True) if item.values]
    if not placed:
        return f'<p id="{chart_id}">Nothing to plot: no successful request measured it.</p>'
    x_ticks = axis_ticks(max(max(xs) for _, xs in placed))
    y_ticks = axis_ticks(max(max(item.values) for item, _ in placed))
    frame = _Frame(x_ticks, y_ticks, x_label, axis_label, len(placed))
    dots = []
    for index, (item, xs) in enumerate(placed):
        step = max(1, len(item.values) // MAX_POINTS)
        color = PALETTE[index % len(PALETTE)]
        for position in range(0, len(item.values), step):
            x, y = frame.point(xs[position], item.values[position])
            dots.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{color}" fill-opacity="0.7"/>'
            )
    return frame.svg(chart_id, f"{axis_label} over the run", dots, [item for item, _ in placed])


def bar_chart(bars: Sequence[tuple[str, float | None]], axis_label: str, chart_id: str) -> str:
    """One horizontal bar per label; an unmeasured one says so instead of drawing zero."""
    if not bars:
        return f'<p id="{chart_id}">Nothing to plot.</p>'
    ticks = axis_ticks(max((value for _, value in bars if value is not None), default=0.0))
    width = _BAR_LABEL_WIDTH + PLOT_WIDTH + 32
    bottom = _TOP + _BAR_ROW * len(bars)
    height = bottom + _AXIS_SPACE

    def x(value: float) -> float:
        return _BAR_LABEL_WIDTH + value / ticks[-1] * PLOT_WIDTH

    parts = [_svg_open(chart_id, width, height, f"{axis_label} per provider")]
    for tick in ticks:
        parts.append(
            f'<line class="grid" x1="{x(tick):.1f}" y1="{_TOP}" x2="{x(tick):.1f}" y2="{bottom}"/>'
            f'<text x="{x(tick):.1f}" y="{bottom + 16}" text-anchor="middle">{tick:g}</text>'
        )
    parts.append(
        f'<text x="{x(ticks[-1] / 2):.1f}" y="{bottom + 36}" text-anchor="middle">'
        f"{escape(axis_label)}</text>"
    )
    for index, (label, value) in enumerate(bars):
        middle = _TOP + _BAR_ROW * index + _BAR_ROW / 2
        parts.append(
            f'<text x="{_BAR_LABEL_WIDTH - 8}" y="{middle:.1f}" text-anchor="end" '
            f'dominant-baseline="middle"><title>{escape(label)}</title>'
            f"{escape(shorten(label, LABEL_CHARS))}</text>"
        )
        if value is None:
            parts.append(
                f'<text x="{x(0) + 6:.1f}" y="{middle:.1f}" dominant-baseline="middle" '
                'fill="#b3261e">not measured</text>'
            )
            continue
        color = PALETTE[index % len(PALETTE)]
        parts.append(
            f'<rect x="{x(0):.1f}" y="{middle - 8:.1f}" width="{max(x(value) - x(0), 1):.1f}" '
            f'height="16" fill="{color}"><title>{escape(label)}: {value:.3f}</title></rect>'
        )
    parts.append("</svg>")
    return "".join(parts)


class _Frame:
    """Axes, grid and legend of an x-y chart, and where a value lands in it."""

    def __init__(
        self,
        x_ticks: list[float],
        y_ticks: list[float],
        x_label: str,
        y_label: str,
        legend_rows: int,
    ) -> None:
        self.x_ticks, self.y_ticks = x_ticks, y_ticks
        self.x_label, self.y_label = x_label, y_label
        self.bottom = _TOP + _PLOT_HEIGHT
        self.width = _LEFT + PLOT_WIDTH + 24
        self.height = self.bottom + _AXIS_SPACE + _LEGEND_ROW * legend_rows

    def point(self, x_value: float, y_value: float) -> tuple[float, float]:
        x = _LEFT + x_value / self.x_ticks[-1] * PLOT_WIDTH
        y = self.bottom - y_value / self.y_ticks[-1] * _PLOT_HEIGHT
        return x, y

    def svg(self, chart_id: str, title: str, marks: list[str], series: Sequence[Series]) -> str:
        parts = [_svg_open(chart_id, self.width, self.height, title)]
        for tick in self.x_ticks:
            x, _ = self.point(tick, 0)
            parts.append(
                f'<line class="grid" x1="{x:.1f}" y1="{_TOP}" x2="{x:.1f}" y2="{self.bottom}"/>'
                f'<text x="{x:.1f}" y="{self.bottom + 16}" text-anchor="middle">{tick:g}</text>'
            )
        for tick in self.y_ticks:
            _, y = self.point(0, tick)
            parts.append(
                f'<line class="grid" x1="{_LEFT}" y1="{y:.1f}" x2="{_LEFT + PLOT_WIDTH}" '
                f'y2="{y:.1f}"/><text x="{_LEFT - 6}" y="{y:.1f}" text-anchor="end" '
                f'dominant-baseline="middle">{tick:g}</text>'
            )
        parts.append(
            f'<line class="axis" x1="{_LEFT}" y1="{self.bottom}" x2="{_LEFT + PLOT_WIDTH}" '
            f'y2="{self.bottom}"/><line class="axis" x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" '
            f'y2="{self.bottom}"/>'
            f'<text x="{_LEFT + PLOT_WIDTH / 2:.1f}" y="{self.bottom + 34}" '
            f'text-anchor="middle">{escape(self.x_label)}</text>'
            f'<text x="12" y="{_TOP + _PLOT_HEIGHT / 2:.1f}" text-anchor="middle" '
            f'transform="rotate(-90 12 {_TOP + _PLOT_HEIGHT / 2:.1f})">'
            f"{escape(self.y_label)}</text>"
        )
        parts.extend(marks)
        for index, item in enumerate(series):
            y = self.bottom + _AXIS_SPACE + _LEGEND_ROW * index + 4
            parts.append(
                f'<rect x="{_LEFT}" y="{y - 10}" width="12" height="12" '
                f'fill="{PALETTE[index % len(PALETTE)]}"/>'
                f'<text x="{_LEFT + 18}" y="{y}">{escape(shorten(item.label, 2 * LABEL_CHARS))}'
                "</text>"
            )
        parts.append("</svg>")
        return "".join(parts)


def _polyline(points: list[tuple[float, float]], frame: _Frame, index: int, tooltip: str) -> str:
    place: Callable[[float, float], tuple[float, float]] = frame.point
    coordinates = " ".join(f"{x:.1f},{y:.1f}" for x, y in (place(*p) for p in points))
    return (
        f'<polyline fill="none" stroke="{PALETTE[index % len(PALETTE)]}" stroke-width="2" '
        f'points="{coordinates}"><title>{escape(tooltip)}</title></polyline>'
    )


def _thin(ordered: list[float]) -> list[float]:
    """At most MAX_POINTS values, evenly spread over the ranks, the last one kept."""
    if len(ordered) <= MAX_POINTS:
        return ordered
    step = len(ordered) / MAX_POINTS
    return [ordered[int(i * step)] for i in range(MAX_POINTS)] + [ordered[-1]]


def _svg_open(chart_id: str, width: float, height: float, title: str) -> str:
    return (
        f'<svg id="{chart_id}" xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
        f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
        f'aria-label="{escape(title)}">'
    )
