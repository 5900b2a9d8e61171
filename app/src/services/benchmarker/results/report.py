"""A benchmark summary as one self-contained HTML page: tables and an inline SVG box plot.

No scripts, fonts or images are loaded from anywhere, so the page works offline and can be
saved as one file. Every string that came from a caller (prompts, model ids, error types) is
HTML-escaped where it is inserted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from html import escape

from src.schemas.benchmarks import (
    BenchmarkFiles,
    BenchmarkState,
    BenchmarkSummary,
    ComparisonRow,
    ModelStats,
    SavedParameters,
    series_label,
)
from src.services.benchmarker.results.cells import (
    MISSING as MISSING,  # the browser pages (api/pages) show a missing figure so too
)
from src.services.benchmarker.results.cells import (
    TIMING_HEADERS,
    number,
    timing_cells,
)
from src.services.benchmarker.results.sweep_plot import sweep_section

PROMPT_CELL_CHARS = 80
LABEL_CHARS = 40
PROGRESS_REFRESH_SECONDS = 3

# Plot geometry, in SVG user units (pixels at 100 % zoom).
_ROW_HEIGHT = 44
_BOX_HALF_HEIGHT = 12
_PLOT_WIDTH = 640
_TOP = 16
_BOTTOM = 56
_LABEL_CHAR_WIDTH = 7.2
_PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1")

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem; color: #222; }
h1 { font-size: 1.4rem; word-break: break-all; }
h2 { font-size: 1.1rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.status-completed { color: #2a7a2a; } .status-interrupted, .status-failed { color: #b3261e; }
svg text { font-family: inherit; font-size: 12px; fill: #222; }
svg .grid { stroke: #e5e5e5; } svg .axis { stroke: #444; }
h3 { font-size: 1rem; word-break: break-all; }
""".strip()


def render_report(summary: BenchmarkSummary) -> str:
    title = f"Benchmark {summary.id}"
    return _page(title, [f"<h1>{escape(title)}</h1>", *report_sections(summary)])


def report_sections(summary: BenchmarkSummary) -> list[str]:
    """The report's body under its title; the run page in the browser shows the same."""
    return [
        _overview(summary),
        "<h2>Parameters</h2>",
        _parameters_table(summary.parameters),
        "<h2>Comparison</h2>",
        _comparison_table(summary.comparison),
        _warnings(summary.models),
        "<h2>Ranking</h2>",
        _ranking_table(summary.comparison),
        "<h2>Latency by series (seconds)</h2>",
        latency_box_plot(summary.models),
        "<h2>Token lengths (the upstream's count)</h2>",
        _lengths_table(summary.models),
        "<h2>By provider that answered</h2>",
        _by_provider_table(summary.models),
        _outside_upstream_table(summary.models),
        *sweep_section(summary.steps or [], summary.knee, axis_ticks),
        "<h2>Per prompt</h2>",
        _per_prompt_table(summary.models),
        "<h2>Files</h2>",
        _files(summary.files),
    ]


def render_progress(state: BenchmarkState) -> str:
    """A running benchmark: its progress and statistics so far; the page reloads itself every
    few seconds (no script), and shows the full report once the run has ended."""
    title = f"Benchmark {state.id}"
    progress = state.progress
    total = "?" if progress.total is None else str(progress.total)
    eta = MISSING if progress.eta_seconds is None else f"{progress.eta_seconds:.0f} s"
    status = escape(state.status)
    sections = [
        f"<h1>{escape(title)}</h1>",
        f'<p>Status: <strong class="status-{status}">{status}</strong> · '
        f"started {escape(state.started_at.isoformat())} · "
        f"{progress.done}/{total} requests ({progress.ok} ok, {progress.failed} failed) · "
        f"elapsed {progress.elapsed_seconds:.0f} s · ETA {eta} · "
        f"cost so far {_cost(state.cost, state.cost_unknown)}</p>",
        _failure(state.error),
        f'<progress max="{total if progress.total else 1}" value="{progress.done}"></progress>',
        "<h2>Parameters</h2>",
        _parameters_table(state.parameters),
        "<h2>Comparison so far</h2>",
        _comparison_table(state.comparison),
        "<h2>Files</h2>",
        _files(state.files),
    ]
    refresh = PROGRESS_REFRESH_SECONDS if state.status == "running" else None
    return _page(title, sections, refresh)


def _page(title: str, sections: list[str], refresh_seconds: int | None = None) -> str:
    refresh = (
        f'<meta http-equiv="refresh" content="{refresh_seconds}">\n' if refresh_seconds else ""
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"{refresh}<title>{escape(title)}</title>\n<style>\n{_CSS}\n</style>\n</head>\n<body>\n"
        + "\n".join(sections)
        + "\n</body>\n</html>\n"
    )


def _overview(summary: BenchmarkSummary) -> str:
    status = escape(summary.status)
    return (
        f'<p>Status: <strong class="status-{status}">{status}</strong> · '
        f"started {escape(summary.started_at.isoformat())} · "
        f"finished {escape(summary.finished_at.isoformat())} · "
        f"wall {number(summary.wall_seconds)} s · "
        f"{summary.finished_requests}/{summary.requests} requests · "
        f"{number(summary.requests_per_second, 2)} requests/s · "
        f"cost {_cost(summary.cost, summary.cost_unknown)}</p>" + _failure(summary.error)
    )


def _failure(error: str | None) -> str:
    """Why a failed run failed, under its status."""
    return "" if error is None else f'<p class="status-failed">Failed: {escape(error)}</p>'


def _parameters_table(params: SavedParameters) -> str:
    def shown(value: object) -> str:
        return MISSING if value is None else str(value)

    rows = [
        ("label", shown(params.label)),
        ("notes", shown(params.notes)),
        ("models", ", ".join(params.models)),
        ("providers", ", ".join(params.providers) or "as OpenRouter routes"),
        ("prompts", str(params.prompts)),
        ("runs", shown(params.runs) if params.duration is None else f"for {params.duration} s"),
        ("concurrency", str(params.concurrency)),
        ("rate", MISSING if params.rate is None else f"{params.rate}/s, {params.arrival}"),
        ("warmup", str(params.warmup)),
        ("max_tokens", str(params.max_tokens)),
        ("stream", "yes" if params.stream else "no"),
        ("temperature", shown(params.temperature)),
        ("top_p", shown(params.top_p)),
        (
            "SLOs",
            f"ttft {shown(params.ttft_slo)} s, latency {shown(params.latency_slo)} s, "
            f"tpot {shown(params.tpot_slo)} s",
        ),
        (
            "sweep",
            MISSING
            if params.sweep is None
            else f"{params.sweep}: {', '.join(f'{v:g}' for v in params.sweep_values) or 'default'}",
        ),
    ]
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    return f'<table id="parameters">{body}</table>'


def _comparison_table(comparison: Sequence[ComparisonRow]) -> str:
    header = _header_row(
        "model",
        "provider",
        "ok",
        "failed",
        "latency avg",
        "std dev",
        "p50",
        "p95",
        "ttft p50",
        "itl p50",
        "tpot p50",
        "output tokens/s",
        "goodput",
        "cost (USD)",
        "USD / 1k output tokens",
    )
    rows = [
        _row(
            [escape(row.model), escape(_provider_cell(row.provider, row.providers_answered))],
            [
                str(row.ok),
                str(row.failed),
                number(row.latency_avg),
                number(row.latency_std_dev),
                number(row.latency_p50),
                number(row.latency_p95),
                number(row.ttft_p50),
                number(row.itl_p50, 4),
                number(row.tpot_p50, 4),
                number(row.output_tokens_per_second, 1),
                number(row.goodput, 3),
                _cost(row.cost),
                number(row.cost_per_1k_output_tokens, 6),
            ],
        )
        for row in comparison
    ]
    return _table("comparison", header, rows)


def _provider_cell(provider: str | None, answered: int) -> str:
    if provider is not None:
        return provider
    return "not pinned" if answered < 2 else f"not pinned ({answered} answered)"


def _warnings(models: Sequence[ModelStats]) -> str:
    items = [
        f"<li>{escape(series_label(stats.model, stats.provider))}: {escape(warning)}</li>"
        for stats in models
        for warning in stats.warnings
    ]
    return f'<ul id="warnings" class="status-failed">{"".join(items)}</ul>' if items else ""


# What the ranking orders series by: the field of a comparison row, and how it is shown.
_RANKINGS: tuple[tuple[str, str, int], ...] = (
    ("p50 latency (s)", "latency_p50", 3),
    ("ttft p50 (s)", "ttft_p50", 3),
    ("USD / 1k output tokens", "cost_per_1k_output_tokens", 6),
)


def _ranking_table(comparison: Sequence[ComparisonRow]) -> str:
    """Per measure, the series from best (lowest) to worst; unmeasured ones last."""
    header = _header_row("rank", *(title for title, _, _ in _RANKINGS))
    columns: list[list[str]] = []
    for _, field, digits in _RANKINGS:
        known = sorted(
            (value, series_label(row.model, row.provider))
            for row in comparison
            if (value := getattr(row, field)) is not None
        )
        columns.append([f"{escape(label)} ({number(value, digits)})" for value, label in known])
    depth = max((len(column) for column in columns), default=0)
    rows = [
        _row(
            [str(rank + 1)],
            [column[rank] if rank < len(column) else MISSING for column in columns],
        )
        for rank in range(depth)
    ]
    return _table("ranking", header, rows)


def _by_provider_table(models: Sequence[ModelStats]) -> str:
    header = _header_row(
        "series", "answered by", "count", "ok", *TIMING_HEADERS, "output tokens/s", "cost (USD)"
    )
    rows = [
        _row(
            [escape(series_label(stats.model, stats.provider)), escape(entry.provider)],
            [
                str(entry.count),
                str(entry.ok),
                *timing_cells(entry.latency, entry.ttft),
                number(entry.output_tokens_per_second, 1),
                _cost(entry.cost),
            ],
        )
        for stats in models
        for entry in stats.by_provider
    ]
    return _table("by-provider", header, rows)


def _outside_upstream_table(models: Sequence[ModelStats]) -> str:
    """With GENERATION_STATS: how much of each series' latency OpenRouter's record leaves out."""
    checked = [stats for stats in models if stats.outside_upstream is not None]
    if not checked:
        return ""
    header = _header_row("series", "records", "missing", "outside p50 (s)", "outside p50 share")
    rows = []
    for stats in checked:
        outside = stats.outside_upstream
        assert outside is not None
        rows.append(
            _row(
                [escape(series_label(stats.model, stats.provider))],
                [
                    str(outside.count),
                    str(outside.missing),
                    number(outside.p50_seconds),
                    number(outside.p50_share),
                ],
            )
        )
    return "<h2>Outside OpenRouter's own record</h2>" + _table("outside-upstream", header, rows)


def _per_prompt_table(models: Sequence[ModelStats]) -> str:
    header = _header_row("series", "#", "prompt", "ok", "failed", *TIMING_HEADERS)
    rows = [
        _row(
            [
                escape(series_label(stats.model, stats.provider)),
                str(item.prompt_index),
                escape(_shorten(item.prompt)),
            ],
            [
                str(item.ok),
                str(item.failed),
                *timing_cells(item.latency, item.ttft),
            ],
        )
        for stats in models
        for item in stats.per_prompt
    ]
    return _table("per-prompt", header, rows)


def _lengths_table(models: Sequence[ModelStats]) -> str:
    header = _header_row(
        "series", "input target", "input mean", "input p90", "output target", "output mean",
        "output p90", "ended early", "ttft p50 by turn",
    )  # fmt: skip
    rows = []
    for stats in models:
        lengths = stats.lengths
        by_turn = ", ".join(f"{t.turn}: {number(t.ttft.p50)}" for t in stats.per_turn)
        rows.append(
            _row(
                [escape(series_label(stats.model, stats.provider))],
                [
                    _target(lengths.input.target),
                    number(lengths.input.mean, 1),
                    number(lengths.input.p90, 1),
                    _target(lengths.output.target),
                    number(lengths.output.mean, 1),
                    number(lengths.output.p90, 1),
                    str(lengths.early_finishes),
                    escape(by_turn) or MISSING,
                ],
            )
        )
    return _table("lengths", header, rows)


def _target(value: int | None) -> str:
    return MISSING if value is None else str(value)


def _files(files: BenchmarkFiles) -> str:
    # Names and download paths as text, not links: a saved report stays one offline file.
    return (
        f"<p>CSV: <code>{escape(files.csv)}</code> (GET <code>{escape(files.csv_url)}</code>)<br>"
        f"JSON: <code>{escape(files.json_file)}</code> "
        f"(GET <code>{escape(files.json_url)}</code>)</p>"
    )


def _table(table_id: str, header: str, rows: Iterable[str]) -> str:
    """One of the report's tables: a header made by `_header_row`, rows made by `_row`."""
    return f'<table id="{table_id}"><thead>{header}</thead><tbody>{"".join(rows)}</tbody></table>'


def _header_row(*names: str) -> str:
    return "<tr>" + "".join(f"<th>{escape(name)}</th>" for name in names) + "</tr>"


def _row(text_cells: Iterable[str], number_cells: Iterable[str]) -> str:
    """Cells must already be escaped (numbers need no escaping)."""
    cells = [f"<td>{cell}</td>" for cell in text_cells]
    cells += [f'<td class="num">{cell}</td>' for cell in number_cells]
    return "<tr>" + "".join(cells) + "</tr>"


def _cost(value: float | None, unknown: int = 0) -> str:
    """Dollars to the 1/1000 of a cent; unknown stays unknown, never 0."""
    shown = MISSING if value is None else f"${value:.5f}"
    if unknown and value is not None:
        shown += f" + {unknown} request{'s' if unknown > 1 else ''} of unknown cost"
    return shown


def _shorten(text: str, limit: int = PROMPT_CELL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- the SVG box plot -------------------------------------------------------------------------


def axis_ticks(maximum: float, intervals: int = 5) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 times a power of ten) from 0 up to >= maximum."""
    if maximum <= 0 or not math.isfinite(maximum):
        maximum = 1.0
    raw_step = maximum / intervals
    magnitude = 10 ** math.floor(math.log10(raw_step))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw_step)
    count = math.ceil(maximum / step - 1e-9)
    return [round(i * step, 12) for i in range(count + 1)]


def latency_box_plot(models: Sequence[ModelStats]) -> str:
    """One horizontal box per series (model x provider): whiskers at min and max, the box from
    p25 to p75, a bar at the median. Horizontal, so that long labels stay readable.
    """
    if not models:
        return "<p>No models.</p>"
    labels = [series_label(stats.model, stats.provider) for stats in models]
    label_chars = min(max(len(label) for label in labels), LABEL_CHARS)
    left = 16 + label_chars * _LABEL_CHAR_WIDTH
    bottom_axis = _TOP + _ROW_HEIGHT * len(models)
    width = left + _PLOT_WIDTH + 32
    height = bottom_axis + _BOTTOM
    maxima = [stats.latency.max for stats in models if stats.latency.max is not None]
    ticks = axis_ticks(max(maxima, default=0.0))

    def x(seconds: float) -> float:
        return left + seconds / ticks[-1] * _PLOT_WIDTH

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
        'aria-label="Latency per series: box plot of min, p25, p50, p75 and max in seconds">'
    ]
    for tick in ticks:
        tx = x(tick)
        parts.append(
            f'<line class="grid" x1="{tx:.1f}" y1="{_TOP}" x2="{tx:.1f}" y2="{bottom_axis}"/>'
        )
        parts.append(
            f'<text x="{tx:.1f}" y="{bottom_axis + 18}" text-anchor="middle">{tick:g}</text>'
        )
    parts.append(
        f'<line class="axis" x1="{left:.1f}" y1="{bottom_axis}" '
        f'x2="{left + _PLOT_WIDTH:.1f}" y2="{bottom_axis}"/>'
    )
    parts.append(
        f'<text x="{left + _PLOT_WIDTH / 2:.1f}" y="{bottom_axis + 42}" '
        'text-anchor="middle">Latency (seconds)</text>'
    )
    for index, stats in enumerate(models):
        center = _TOP + _ROW_HEIGHT * index + _ROW_HEIGHT / 2
        parts.append(_model_label(labels[index], left - 8, center))
        parts.append(_box(stats, center, _PALETTE[index % len(_PALETTE)], x))
    parts.append("</svg>")
    return "\n".join(parts)


def _model_label(model: str, right: float, center: float) -> str:
    return (
        f'<text x="{right:.1f}" y="{center:.1f}" text-anchor="end" dominant-baseline="middle">'
        f"<title>{escape(model)}</title>{escape(_shorten(model, LABEL_CHARS))}</text>"
    )


def _box(stats: ModelStats, center: float, color: str, x: Callable[[float], float]) -> str:
    lat = stats.latency
    if lat.min is None or lat.max is None or lat.p25 is None or lat.p50 is None or lat.p75 is None:
        return (
            f'<text x="{x(0) + 8:.1f}" y="{center:.1f}" dominant-baseline="middle" '
            'fill="#b3261e">no successful requests</text>'
        )
    top, bottom = center - _BOX_HALF_HEIGHT, center + _BOX_HALF_HEIGHT
    cap_top, cap_bottom = center - _BOX_HALF_HEIGHT / 2, center + _BOX_HALF_HEIGHT / 2
    tooltip = (
        f"{series_label(stats.model, stats.provider)}: min {lat.min:.3f} s, "
        f"p25 {lat.p25:.3f} s, p50 {lat.p50:.3f} s, "
        f"p75 {lat.p75:.3f} s, max {lat.max:.3f} s ({stats.ok} ok, {stats.failed} failed)"
    )
    return (
        f"<g><title>{escape(tooltip)}</title>"
        f'<line x1="{x(lat.min):.1f}" y1="{center:.1f}" x2="{x(lat.max):.1f}" y2="{center:.1f}" '
        f'stroke="{color}" stroke-width="2"/>'
        f'<line x1="{x(lat.min):.1f}" y1="{cap_top:.1f}" x2="{x(lat.min):.1f}" '
        f'y2="{cap_bottom:.1f}" stroke="{color}" stroke-width="2"/>'
        f'<line x1="{x(lat.max):.1f}" y1="{cap_top:.1f}" x2="{x(lat.max):.1f}" '
        f'y2="{cap_bottom:.1f}" stroke="{color}" stroke-width="2"/>'
        f'<rect x="{x(lat.p25):.1f}" y="{top:.1f}" width="{max(x(lat.p75) - x(lat.p25), 1):.1f}" '
        f'height="{2 * _BOX_HALF_HEIGHT}" fill="{color}" fill-opacity="0.35" stroke="{color}" '
        'stroke-width="2"/>'
        f'<line x1="{x(lat.p50):.1f}" y1="{top:.1f}" x2="{x(lat.p50):.1f}" y2="{bottom:.1f}" '
        'stroke="#222" stroke-width="3"/></g>'
    )


# What the browser pages (api/pages) render with: one way to show a number, a cost, a table.
CSS = _CSS
parameters_table = _parameters_table
comparison_table = _comparison_table
header_row = _header_row
table_row = _row
number_text = number
cost_text = _cost
shorten = _shorten
series_text = _model_label
PALETTE = _PALETTE
PLOT_WIDTH = _PLOT_WIDTH
LABEL_CHAR_WIDTH = _LABEL_CHAR_WIDTH
