"""The home pages as HTML: the runs list, the form, a run, a comparison, and the key prompt.

Every page renders whole on the server, so that it reads without script; the page script
(static/app.js) only adds what needs one: the key in a header, live updates, the form's
submission and the cancel button. Every string that came from a caller is escaped here.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from src.schemas.benchmarks import (
    BenchmarkListItem,
    BenchmarkState,
    BenchmarkSummary,
    ComparisonRow,
    ModelStats,
    RequestRecord,
    series_label,
)
from src.services.benchmarker.results.charts import Series, bar_chart, cdf_chart, timeline_chart
from src.services.benchmarker.results.compare import SeriesComparison, measured_rows
from src.services.benchmarker.results.report import (
    CSS,
    MISSING,
    comparison_table,
    cost_text,
    header_row,
    number_text,
    parameters_table,
    report_sections,
    table_row,
)

SCRIPT_URL = "/ui/app.js"
STYLE_URL = "/ui/app.css"
LAST_FAILURES = 10
# Without script a running run's page reloads itself this often.
NOSCRIPT_REFRESH_SECONDS = 3


def page(title: str, main: str, *, attributes: str = "", refresh: bool = False) -> str:
    """A page around its <main>: the script swaps <main> for a fresh copy, keeping the rest."""
    reload = (
        f'<noscript><meta http-equiv="refresh" content="{NOSCRIPT_REFRESH_SECONDS}"></noscript>\n'
        if refresh
        else ""
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"{reload}<title>{escape(title)} · LLM gateway</title>\n"
        f'<style>\n{CSS}\n</style>\n<link rel="stylesheet" href="{STYLE_URL}">\n'
        f'<script src="{SCRIPT_URL}" defer></script>\n</head>\n<body>\n'
        '<nav><a href="/">Runs</a> <a href="/new">New benchmark</a> <a href="/docs">API</a> '
        '<span id="key-state"></span></nav>\n'
        f'<main id="main"{attributes}>\n{main}\n</main>\n</body>\n</html>\n'
    )


def locked_page(title: str) -> str:
    """With inbound keys and none sent: the key prompt; the script fetches the page with it."""
    body = (
        f"<h1>{escape(title)}</h1>"
        "<p>This service needs one of its API keys (PROXY_API_KEYS). It is kept in this tab's "
        "session storage and sent in the Authorization header, never in an address.</p>"
        '<form id="key-form"><label>API key <input id="key-input" type="password" '
        'autocomplete="off" required></label> <button type="submit">Use this key</button></form>'
        '<p id="key-error" class="status-failed"></p>'
    )
    return page(title, body, attributes=' data-locked="true"')


# --- the runs list ---------------------------------------------------------------------------


def home_page(runs: Sequence[BenchmarkListItem]) -> str:
    running = any(run.status == "running" for run in runs)
    header = header_row(
        "", "started (UTC)", "label", "status", "series", "requests", "p50 (s)", "ttft p50 (s)",
        "cost", "files",
    )  # fmt: skip
    rows = "".join(_run_row(run) for run in runs)
    table = (
        '<form action="/compare" method="get" id="compare-form">'
        f'<table id="runs"><thead>{header}</thead><tbody>{rows}</tbody></table>'
        '<button type="submit" id="compare">Compare the runs ticked</button></form>'
        if runs
        else '<p id="no-runs">No runs yet: <a href="/new">start one</a>.</p>'
    )
    attributes = ' data-live="true"' if running else ""
    return page("Benchmark runs", "<h1>Benchmark runs</h1>" + table, attributes=attributes,
                refresh=running)  # fmt: skip


def _run_row(run: BenchmarkListItem) -> str:
    status = escape(run.status)
    pinned: list[str | None] = list(run.providers) or [None]
    series = (
        [_series_name(row) for row in run.comparison]
        if run.comparison
        else [series_label(model, provider) for model in run.models for provider in pinned]
    )
    total = MISSING if run.requests is None else str(run.requests)
    return (
        f'<tr data-run="{escape(run.id)}" data-status="{status}">'
        f'<td><input type="checkbox" name="id" value="{escape(run.id)}" '
        f'aria-label="compare {escape(run.id)}"></td>'
        f"<td>{escape(run.started_at.strftime('%Y-%m-%d %H:%M:%S'))}</td>"
        f"<td>{escape(run.label or '')}</td>"
        f'<td class="status-{status}">{status}</td>'
        f"<td>{_lines(series)}</td>"
        f'<td class="num">{run.finished_requests}/{total}</td>'
        f'<td class="num">{_lines(number_text(row.latency_p50) for row in run.comparison)}</td>'
        f'<td class="num">{_lines(number_text(row.ttft_p50) for row in run.comparison)}</td>'
        f'<td class="num">{cost_text(run.cost)}</td>'
        f'<td><a href="/runs/{escape(run.id)}">run</a> · '
        f'<a href="{escape(run.files.report_url)}">report</a> · '
        f'<a href="{escape(run.files.csv_url)}">CSV</a> · '
        f'<a href="{escape(run.files.json_url)}">JSON</a></td></tr>'
    )


def _series_name(row: ComparisonRow) -> str:
    return series_label(row.model, row.provider)


def _lines(cells: Any) -> str:
    return "<br>".join(escape(str(cell)) for cell in cells) or MISSING


# --- a run -----------------------------------------------------------------------------------


def run_page(view: BenchmarkSummary | BenchmarkState, records: Sequence[RequestRecord]) -> str:
    title = f"Benchmark {view.id}"
    label = view.parameters.label
    heading = f"<h1>{escape(title)}</h1>" + (
        f'<p class="label">{escape(label)}</p>' if label else ""
    )
    running = view.status == "running"
    attributes = f' data-run="{escape(view.id)}" data-status="{escape(view.status)}"'
    if isinstance(view, BenchmarkSummary):
        sections = [*report_sections(view), *_charts(view, records), *_details(view)]
    else:
        sections = _live_sections(view, records)
    return page(title, heading + "\n".join(sections), attributes=attributes, refresh=running)


def _live_sections(state: BenchmarkState, records: Sequence[RequestRecord]) -> list[str]:
    progress = state.progress
    total = "?" if progress.total is None else str(progress.total)
    status = escape(state.status)
    step = (
        ""
        if progress.steps is None
        else f' · <span id="step-text">step {progress.step or 1} of {progress.steps}</span>'
    )
    cancel = (
        '<button type="button" id="cancel">Cancel this run</button>'
        if state.status == "running"
        else ""
    )
    return [
        f'<p>Status: <strong id="run-status" class="status-{status}">{status}</strong> · '
        f'<span id="progress-text">{progress.done}/{total} requests ({progress.ok} ok, '
        f"{progress.failed} failed) · elapsed {progress.elapsed_seconds:.0f} s</span>{step} · "
        f"cost so far {cost_text(state.cost, state.cost_unknown)}</p>",
        f'<progress id="run-progress" max="{progress.total or 1}" value="{progress.done}">'
        f"{progress.done}/{total}</progress> {cancel}",
        '<p id="message" role="status"></p>',
        "<h2>Statistics so far</h2>",
        comparison_table(state.comparison),
        "<h2>Last failures</h2>",
        last_failures_table(records),
        "<h2>Latency distribution so far (CDF)</h2>",
        cdf_chart(_latencies(records), "latency (s)", "latency-cdf-so-far"),
        "<h2>Parameters</h2>",
        parameters_table(state.parameters),
        _file_links(state.files.csv_url, state.files.json_url, state.files.report_url),
    ]


def last_failures_table(records: Sequence[RequestRecord]) -> str:
    failed = [record for record in records if not record.ok][-LAST_FAILURES:]
    if not failed:
        return '<p id="failures">None so far.</p>'
    header = header_row("series", "prompt #", "run", "status", "error type", "error")
    rows = "".join(
        table_row(
            [
                escape(series_label(record.model, record.pinned_provider)),
                str(record.prompt_index),
                str(record.run),
                str(record.status),
                escape(record.error_type or ""),
                escape(record.error or ""),
            ],
            [],
        )
        for record in reversed(failed)
    )
    return f'<table id="failures"><thead>{header}</thead><tbody>{rows}</tbody></table>'


def _file_links(csv_url: str, json_url: str, report_url: str) -> str:
    return (
        '<p id="downloads">Files: '
        f'<a href="{escape(csv_url)}">results.csv</a> · <a href="{escape(json_url)}">summary.json'
        f'</a> · <a href="{escape(report_url)}">report</a></p>'
    )


def _latencies(records: Sequence[RequestRecord]) -> list[Series]:
    rows = measured_rows(records)
    return [Series(name, [r.latency_seconds for r in items]) for name, items in rows.items()]


def _charts(summary: BenchmarkSummary, records: Sequence[RequestRecord]) -> list[str]:
    rows = measured_rows(records)
    latency = _latencies(records)
    ttft = [
        Series(name, [r.ttft_seconds for r in items if r.ttft_seconds is not None])
        for name, items in rows.items()
    ]
    bars = [
        (f"{series_label(stats.model, stats.provider)} ← {entry.provider}", entry.latency.p50)
        for stats in summary.models
        for entry in stats.by_provider
    ]
    return [
        _file_links(summary.files.csv_url, summary.files.json_url, summary.files.report_url),
        "<h2>Latency distribution (CDF)</h2>",
        cdf_chart(latency, "latency (s)", "latency-cdf"),
        "<h2>Time to first token distribution (CDF)</h2>",
        cdf_chart(ttft, "ttft (s)", "ttft-cdf"),
        "<h2>Latency over the run</h2>",
        timeline_chart(latency, _finish_times(rows), "latency (s)", "latency-timeline"),
        "<h2>p50 latency by provider that answered</h2>",
        bar_chart(bars, "p50 latency (s)", "provider-bars"),
    ]


def _finish_times(rows: dict[str, list[RequestRecord]]) -> list[list[float]] | None:
    """When each row's request finished; None for a results file that does not say (older)."""
    times = [[r.finished_seconds for r in items] for items in rows.values()]
    if any(value is None for column in times for value in column):
        return None
    return [[value for value in column if value is not None] for column in times]


def _details(summary: BenchmarkSummary) -> list[str]:
    """Errors by type, retries, and for a rate run how well it kept to its schedule."""
    return [
        "<h2>Errors by type</h2>",
        _errors_table(summary.models),
        "<h2>Retries and scheduled latency</h2>",
        _retries_table(summary.models),
        _schedule(summary),
    ]


def _errors_table(models: Sequence[ModelStats]) -> str:
    errors = [(stats, kind, count) for stats in models for kind, count in stats.errors.items()]
    if not errors:
        return '<p id="errors">No failed requests.</p>'
    header = header_row("series", "error type", "requests")
    rows = "".join(
        table_row([escape(series_label(s.model, s.provider)), escape(kind)], [str(count)])
        for s, kind, count in errors
    )
    return f'<table id="errors"><thead>{header}</thead><tbody>{rows}</tbody></table>'


def _retries_table(models: Sequence[ModelStats]) -> str:
    header = header_row(
        "series", "requests", "retried", "total p50 (s)", "scheduled latency p50 (s)",
        "scheduled latency p95 (s)",
    )  # fmt: skip
    rows = "".join(
        table_row(
            [escape(series_label(stats.model, stats.provider))],
            [
                str(stats.count),
                str(stats.retried),
                number_text(stats.total.p50),
                number_text(stats.scheduled_latency.p50 if stats.scheduled_latency else None),
                number_text(stats.scheduled_latency.p95 if stats.scheduled_latency else None),
            ],
        )
        for stats in models
    )
    return f'<table id="retries"><thead>{header}</thead><tbody>{rows}</tbody></table>'


def _schedule(summary: BenchmarkSummary) -> str:
    schedule = summary.schedule
    if schedule is None:
        return '<p id="schedule">Closed loop: no arrival rate, no schedule.</p>'
    return (
        f'<p id="schedule">Schedule: target {schedule.target_rate:g} requests/s, achieved '
        f"{number_text(schedule.achieved_rate, 2)} requests/s; send lag p50 "
        f"{number_text(schedule.lag_p50, 4)} s, max {number_text(schedule.lag_max, 4)} s.</p>"
    )


# --- comparison ------------------------------------------------------------------------------


def compare_page(
    views: Sequence[BenchmarkSummary | BenchmarkState],
    records: Sequence[Sequence[RequestRecord]],
    comparisons: Sequence[SeriesComparison],
) -> str:
    title = "Comparison"
    if len(views) < 2:
        body = (
            f'<h1>{title}</h1><p>Tick two or more runs on the <a href="/">runs list</a>, '
            "then compare them.</p>"
        )
        return page(title, body)
    runs = header_row("", "run", "label", "status", "requests measured")
    run_rows = "".join(
        table_row(
            [
                "baseline" if index == 0 else f"run {index + 1}",
                f'<a href="/runs/{escape(view.id)}">{escape(view.id)}</a>',
                escape(view.parameters.label or ""),
                escape(view.status),
            ],
            [str(sum(len(rows) for rows in measured_rows(records[index]).values()))],
        )
        for index, view in enumerate(views)
    )
    sections = [
        f"<h1>{title}</h1>",
        f'<table id="compared-runs"><thead>{runs}</thead><tbody>{run_rows}</tbody></table>',
        "<p>Each change is from the baseline, with its 95% confidence interval bootstrapped "
        "over the runs' rows; an interval that holds 0 reads “no difference”.</p>",
    ]
    if not comparisons:
        sections.append('<p id="no-common-series">The runs share no series to compare.</p>')
    for index, comparison in enumerate(comparisons):
        sections.append(_series_comparison(index, comparison, views, records))
    return page(title, "\n".join(sections))


def _series_comparison(
    index: int,
    comparison: SeriesComparison,
    views: Sequence[BenchmarkSummary | BenchmarkState],
    records: Sequence[Sequence[RequestRecord]],
) -> str:
    names = [_run_name(index, view) for index, view in enumerate(views)]
    header = (
        f"<tr><th>measure</th><th>{names[0]}</th>"
        + "".join(
            f"<th>{name}</th><th>change</th><th>95% CI</th><th>reading</th>" for name in names[1:]
        )
        + "</tr>"
    )
    rows = []
    for position, per_measure in enumerate(zip(*comparison.differences, strict=True)):
        first = per_measure[0]
        cells = [f"<td>{escape(first.measure)} ({escape(first.unit)})</td>",
                 f'<td class="num">{_value(first.baseline, first.unit)}</td>']  # fmt: skip
        for item in per_measure:
            interval = (
                MISSING
                if item.low is None or item.high is None
                else f"{item.low * 100:+.1f}% … {item.high * 100:+.1f}%"
            )
            change = MISSING if item.change is None else f"{item.change * 100:+.1f}%"
            verdict_class = "same" if item.verdict == "no difference" else "differs"
            cells += [
                f'<td class="num">{_value(item.other, item.unit)}</td>',
                f'<td class="num">{change}</td><td class="num">{interval}</td>',
                f'<td class="verdict {verdict_class}">{escape(item.verdict)}</td>',
            ]
        rows.append(f'<tr data-measure="{position}">{"".join(cells)}</tr>')
    lines = [
        Series(
            f"{view.id}{' (' + view.parameters.label + ')' if view.parameters.label else ''}",
            [
                r.latency_seconds
                for r in measured_rows(records[n], by_step=True).get(comparison.series, [])
            ],
        )
        for n, view in enumerate(views)
    ]
    counts = ", ".join(str(count) for count in comparison.rows)
    return (
        f"<h2>{escape(comparison.series)}</h2><p>Rows per run: {counts}</p>"
        f'<table class="comparison" id="series-{index}"><thead>{header}</thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
        + cdf_chart(lines, "latency (s)", f"compare-cdf-{index}")
    )


def _run_name(index: int, view: BenchmarkSummary | BenchmarkState) -> str:
    name = "baseline" if index == 0 else f"run {index + 1}"
    label = view.parameters.label
    return f'<span title="{escape(view.id)}">{name}{": " + escape(label) if label else ""}</span>'


def _value(value: float | None, unit: str) -> str:
    if value is None:
        return MISSING
    if unit == "USD":  # a request's cost: fractions of a cent
        return f"${value:.7f}"
    return number_text(value, 4 if unit == "s" else 1)
