from __future__ import annotations

from datetime import UTC, datetime

import pytest

from src.schemas.benchmarks import BenchmarkSummary, RequestRecord
from src.services.benchmarker.results.report import axis_ticks, render_report
from src.services.benchmarker.results.summary import RunClock, RunRecords, build_summary
from tests.helpers.html import parse
from tests.helpers.results import plan_of, request_result

HOSTILE_PROMPT = "<script>alert('x')</script> & \"quotes\""
HOSTILE_MODEL = "evil/<b>model</b>"


def outcome(model: str, latency: float, *, failed: bool = False) -> RequestRecord:
    return request_result(
        latency,
        model=model,
        prompt=HOSTILE_PROMPT,
        ttft=None if failed else latency / 4,
        completion=0 if failed else 10,
        total=0 if failed else 15,
        error_type="UpstreamStatusError" if failed else None,
        error="down",
    )


def summary_for(results: list[RequestRecord], models: list[str]) -> BenchmarkSummary:
    plan = plan_of(models, [HOSTILE_PROMPT], 3, concurrency=2, max_tokens=64, stream=True)
    return build_summary(
        RunRecords(
            "20261126T101500Z_test_0123abcd",
            "completed",
            plan,
            results,
            RunClock(datetime(2026, 11, 26, 10, 15, tzinfo=UTC), 3.0),
        )
    )


@pytest.fixture
def page() -> str:
    results = [outcome("fast/model", s) for s in (0.5, 0.7, 0.9)]
    results += [outcome(HOSTILE_MODEL, s) for s in (1.5, 2.5)]
    results.append(outcome(HOSTILE_MODEL, 0.1, failed=True))
    return render_report(summary_for(results, ["fast/model", HOSTILE_MODEL]))


def test_report_escapes_prompts_and_model_ids(page: str) -> None:
    assert "<script>" not in page
    assert "<b>model</b>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "evil/&lt;b&gt;model&lt;/b&gt;" in page
    assert "script" not in parse(page).tags


def test_report_is_self_contained(page: str) -> None:
    tags = set(parse(page).tags)

    assert not tags & {"script", "link", "img", "iframe", "object", "embed"}
    for needle in ("src=", "href=", "url(", "@import", "https://"):
        assert needle not in page


def test_report_has_the_comparison_and_per_prompt_tables(page: str) -> None:
    tables = parse(page).tables

    comparison = tables["comparison"]
    assert comparison[0][:4] == ["model", "provider", "ok", "failed"]
    assert [row[0] for row in comparison[1:]] == ["fast/model", HOSTILE_MODEL]
    assert comparison[1][1:5] == ["not pinned", "3", "0", "0.700"]
    assert comparison[2][2:4] == ["2", "1"]
    per_prompt = tables["per-prompt"]
    assert per_prompt[0] == ["series", "#", "prompt", "ok", "failed", "p50", "p95", "ttft p50"]
    assert per_prompt[1][:3] == ["fast/model", "1", HOSTILE_PROMPT]
    assert per_prompt[2][:5] == [HOSTILE_MODEL, "1", HOSTILE_PROMPT, "2", "1"]
    assert ["runs", "3"] in tables["parameters"]


def test_report_draws_a_box_plot_with_axis_and_both_models(page: str) -> None:
    parsed = parse(page)
    svg_text = " ".join(parsed.svg_text)

    assert "svg" in parsed.tags
    assert "rect" in parsed.tags
    assert "Latency (seconds)" in svg_text
    assert "fast/model" in svg_text
    assert HOSTILE_MODEL in svg_text
    assert "0.5" in svg_text  # an axis tick, between 0 and the 2.5 s maximum


def test_report_says_when_a_model_has_no_successful_request() -> None:
    results = [outcome("ok/model", 1.0), outcome("down/model", 0.2, failed=True)]

    page = render_report(summary_for(results, ["ok/model", "down/model"]))

    assert "no successful requests" in page


def test_report_shortens_long_prompts_in_the_table() -> None:
    summary = summary_for([outcome("m/x", 1.0)], ["m/x"])
    summary.models[0].per_prompt[0].prompt = "word " * 100

    cell = parse(render_report(summary)).tables["per-prompt"][1][2]

    assert len(cell) == 80
    assert cell.endswith("…")


@pytest.mark.parametrize(
    ("maximum", "ticks"),
    [
        (0.73, [0.0, 0.2, 0.4, 0.6, 0.8]),
        (10.0, [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]),
        (2.5, [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]),
        (0.0, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
        (37.0, [0.0, 10.0, 20.0, 30.0, 40.0]),
    ],
)
def test_axis_ticks_are_round_and_cover_the_maximum(maximum: float, ticks: list[float]) -> None:
    assert axis_ticks(maximum) == pytest.approx(ticks)
