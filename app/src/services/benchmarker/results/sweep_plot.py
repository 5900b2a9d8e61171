"""A sweep in the HTML report: its step table, and per series (model x pinned provider) an
inline SVG of p50/p95 latency and TTFT against the throughput each step achieved, the knee
ringed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape

from src.schemas.benchmarks import KneePoint, ModelStats, StepStats, series_label
from src.services.benchmarker.results.cells import MISSING, number, timing_cells
from src.services.benchmarker.results.statistics import met_slos

_WIDTH = 640
_HEIGHT = 300
_LEFT = 56
_RIGHT = 150  # the legend
_TOP = 16
_BOTTOM = 48
# A model, and the provider its series pinned (None: routed by OpenRouter).
Series = tuple[str, str | None]
# (label, colour, dash, the figure read off a step's statistics)
_SERIES: tuple[tuple[str, str, str, Callable[[ModelStats], float | None]], ...] = (
    ("latency p50", "#4e79a7", "", lambda stats: stats.latency.p50),
    ("latency p95", "#4e79a7", "6 4", lambda stats: stats.latency.p95),
    ("TTFT p50", "#f28e2b", "", lambda stats: stats.ttft.p50),
    ("TTFT p95", "#f28e2b", "6 4", lambda stats: stats.ttft.p95),
)


def sweep_section(
    steps: Sequence[StepStats],
    knee: Sequence[KneePoint] | None,
    ticks: Callable[[float], list[float]],
) -> list[str]:
    """The report's sweep section; empty without a sweep. `ticks` gives round axis ticks."""
    if not steps:
        return []
    series = [_series(stats) for stats in steps[0].models]
    knees = {(point.model, point.provider): point.step for point in knee or []}
    sections = ["<h2>Sweep</h2>", _step_table(steps, knees)]
    for key in series:
        sections.append(f"<h3>{escape(series_label(*key))}</h3>")
        sections.append(_plot(key, steps, knees.get(key), ticks))
    return sections


def _series(stats: ModelStats) -> Series:
    return stats.model, stats.provider


def _step_table(steps: Sequence[StepStats], knees: dict[Series, int | None]) -> str:
    head = "".join(
        f"<th>{name}</th>"
        for name in (
            "step",
            "series",
            "concurrency",
            "rate",
            "requests/s",
            "latency p50",
            "latency p95",
            "TTFT p50",
            "TTFT p95",
            "goodput",
            "goodput/s",
            "met SLOs",
        )
    )
    rows = [f"<table><tr>{head}</tr>"]
    for step in steps:
        for stats in step.models:
            cells = [
                str(step.step),
                escape(series_label(*_series(stats))),
                str(step.concurrency),
                number(step.rate, 2),
                number(stats.requests_per_second, 2),
                *timing_cells(stats.latency, stats.ttft),
                number(stats.ttft.p95),
                number(stats.goodput, 2),
                number(stats.goodput_per_second, 2),
                _met(stats, knees.get(_series(stats)) == step.step),
            ]
            rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    rows.append("</table>")
    return "\n".join(rows)


def _met(stats: ModelStats, knee: bool) -> str:
    if stats.goodput is None:
        return MISSING
    return ("yes" if met_slos(stats) else "no") + (" (knee)" if knee else "")


def _plot(
    series: Series,
    steps: Sequence[StepStats],
    knee_step: int | None,
    ticks: Callable[[float], list[float]],
) -> str:
    points = [
        (step.step, stats)
        for step in steps
        for stats in step.models
        if _series(stats) == series and stats.ok
    ]
    if not points:
        return "<p>No successful requests in any step.</p>"
    x_ticks = ticks(max(stats.requests_per_second for _, stats in points))
    y_values = [value for _, stats in points for *_, read in _SERIES if (value := read(stats))]
    y_ticks = ticks(max(y_values, default=0.0))
    bottom = _TOP + _HEIGHT

    def x(value: float) -> float:
        return _LEFT + value / x_ticks[-1] * _WIDTH

    def y(value: float) -> float:
        return bottom - value / y_ticks[-1] * _HEIGHT

    width, height = _LEFT + _WIDTH + _RIGHT, bottom + _BOTTOM
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(series_label(*series))}: p50 and p95 '
        'latency and TTFT in seconds against achieved requests per second">'
    ]
    parts += _axes(x_ticks, y_ticks, x, y)
    for row, (label, color, dash, read) in enumerate(_SERIES):
        line = [
            (x(stats.requests_per_second), y(value))
            for _, stats in points
            if (value := read(stats)) is not None
        ]
        if line:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in line)
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"'
                + (f' stroke-dasharray="{dash}"' if dash else "")
                + "/>"
            )
            parts += [
                f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{color}"/>' for px, py in line
            ]
        legend_y = _TOP + 16 * row + 8
        parts.append(
            f'<line x1="{_LEFT + _WIDTH + 16}" y1="{legend_y}" x2="{_LEFT + _WIDTH + 40}" '
            f'y2="{legend_y}" stroke="{color}" stroke-width="2"'
            + (f' stroke-dasharray="{dash}"' if dash else "")
            + f'/><text x="{_LEFT + _WIDTH + 46}" y="{legend_y + 4}">{label}</text>'
        )
    parts += _knee_mark(points, knee_step, x, y)
    parts.append("</svg>")
    return "\n".join(parts)


def _axes(
    x_ticks: list[float],
    y_ticks: list[float],
    x: Callable[[float], float],
    y: Callable[[float], float],
) -> list[str]:
    bottom = _TOP + _HEIGHT
    parts = []
    for tick in x_ticks:
        parts.append(
            f'<line class="grid" x1="{x(tick):.1f}" y1="{_TOP}" x2="{x(tick):.1f}" y2="{bottom}"/>'
            f'<text x="{x(tick):.1f}" y="{bottom + 16}" text-anchor="middle">{tick:g}</text>'
        )
    for tick in y_ticks:
        parts.append(
            f'<line class="grid" x1="{_LEFT}" y1="{y(tick):.1f}" x2="{_LEFT + _WIDTH}" '
            f'y2="{y(tick):.1f}"/><text x="{_LEFT - 6}" y="{y(tick) + 4:.1f}" '
            f'text-anchor="end">{tick:g}</text>'
        )
    parts.append(
        f'<line class="axis" x1="{_LEFT}" y1="{bottom}" x2="{_LEFT + _WIDTH}" y2="{bottom}"/>'
        f'<line class="axis" x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{bottom}"/>'
        f'<text x="{_LEFT + _WIDTH / 2}" y="{bottom + 38}" text-anchor="middle">'
        "Achieved throughput (requests per second)</text>"
        f'<text x="14" y="{_TOP + _HEIGHT / 2}" text-anchor="middle" '
        f'transform="rotate(-90 14 {_TOP + _HEIGHT / 2})">Seconds</text>'
    )
    return parts


def _knee_mark(
    points: list[tuple[int, ModelStats]],
    knee_step: int | None,
    x: Callable[[float], float],
    y: Callable[[float], float],
) -> list[str]:
    stats = next((stats for number, stats in points if number == knee_step), None)
    if stats is None or stats.latency.p95 is None:
        return []
    px, py = x(stats.requests_per_second), y(stats.latency.p95)
    return [
        f'<g class="knee"><title>knee: step {knee_step}</title>'
        f'<circle cx="{px:.1f}" cy="{py:.1f}" r="9" fill="none" stroke="#b3261e" '
        f'stroke-width="2"/><text x="{px + 12:.1f}" y="{py - 10:.1f}" fill="#b3261e">'
        f"knee (step {knee_step})</text></g>"
    ]
