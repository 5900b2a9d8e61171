"""The command line: following a run's events, and the comparison table it prints at the end."""

import io
import json
from typing import Any

import httpx
import pytest
from rich.console import Console

from src.cli import _follow, print_comparison, print_steps

SUMMARY: dict[str, Any] = {
    "id": "20261127T164418Z_emulator-small+anthropic-claude-3.5-sonnet_d3aa3ef4",
    "status": "completed",
    "cost": 12.02006,
    "comparison": [
        {"model": "emulator/small", "ok": 25, "failed": 0, "latency_p50": 1.727,
         "latency_p95": 2.077, "ttft_p50": 0.301, "itl_p50": 0.025,
         "output_tokens_per_second": 32.236, "cost": 0.00006},
        {"model": "anthropic/claude-3.5-sonnet", "ok": 1250, "failed": 12,
         "latency_p50": 14.313, "latency_p95": 24.813, "ttft_p50": 0.751, "itl_p50": 0.063,
         "output_tokens_per_second": 1213.267, "cost": 12.02},
    ],
}  # fmt: skip

FIGURES = ["25", "1250", "12", "1.727", "2.077", "14.313", "24.813", "0.301", "0.751",
           "0.025", "0.063", "32.2", "1213.3", "0.00006", "12.02000"]  # fmt: skip


def render(summary: dict[str, Any], width: int) -> str:
    out = io.StringIO()
    print_comparison(summary, Console(file=out, width=width, color_system=None))
    return out.getvalue()


@pytest.mark.parametrize("width", [80, 120])
def test_every_figure_is_printed_in_full_in_a_standard_terminal(width: int) -> None:
    text = render(SUMMARY, width)

    assert "…" not in text
    assert all(len(line) <= width for line in text.splitlines())
    cells = text.split()
    for figure in FIGURES:
        assert figure in cells, figure
    assert "Total cost: $12.02006" in text


def test_a_model_without_figures_shows_dashes_not_zeros() -> None:
    summary = {**SUMMARY, "cost": None, "comparison": [{"model": "m/x", "ok": 0, "failed": 3}]}
    text = render(summary, 80)

    row = next(line for line in text.splitlines() if "m/x" in line).split()
    assert row == ["m/x", "0", "3", *["—"] * 6]
    assert "Total cost: unknown" in text


@pytest.mark.parametrize(
    ("ended", "shown"),
    [
        (
            {
                **SUMMARY,
                "status": "completed",
                "finished_requests": 5,
                "warmup_requests": 1,
                "progress": {"done": 6, "total": 6},
            },
            6,
        ),
        # A run whose runner died before saving a summary ends with its state record.
        ({"id": "r", "status": "interrupted", "progress": {"done": 3, "total": 10}}, 3),
    ],
)
def test_following_a_run_ends_with_what_its_last_event_carries(
    ended: dict[str, Any], shown: int
) -> None:
    events = "event: summary\ndata: " + json.dumps(ended) + "\n\n"
    transport = httpx.MockTransport(
        lambda _request: httpx.Response(
            200, text=events, headers={"content-type": "text/event-stream"}
        )
    )
    out = io.StringIO()
    with httpx.Client(transport=transport, base_url="http://service.test") as http:
        result = _follow(http, "r", Console(file=out, width=80, color_system=None))

    assert result == ended
    assert f"{shown}/{shown}" in out.getvalue()


def test_a_failed_run_prints_why_it_failed() -> None:
    cause = "no space left on BENCHMARKS_DIR (writing the results file)."
    text = render({**SUMMARY, "status": "failed", "error": cause}, 80)

    assert f"Failed: {cause}" in " ".join(text.split())


def test_series_with_providers_and_turns_fit_a_standard_terminal() -> None:
    length = {"target": 256, "mean": 251.5, "p50": 250.0, "p90": 262.25, "stdev": 8.5}
    lengths = {"input": length, "output": {**length, "target": 128}, "early_finishes": 3}
    per_turn = [{"turn": t, "ttft": {"p50": 0.301 * t}} for t in range(1, 6)]
    rows = [
        {**SUMMARY["comparison"][1], "provider": provider, "providers_answered": 1}
        for provider in ("amazon-bedrock", "google-vertex")
    ]
    models = [
        {"model": row["model"], "provider": row["provider"], "warnings": [], "lengths": lengths,
         "per_turn": per_turn}
        for row in rows
    ]  # fmt: skip
    text = render({**SUMMARY, "comparison": rows, "models": models}, 80)

    table, after = text.split("Total cost:", 1)
    assert "…" not in text
    assert all(len(line) <= 80 for line in table.splitlines()), table
    assert table.count("google-vertex") == 1
    # The lengths are one soft-wrapped line per series: the terminal folds it, nothing is cut.
    for provider in ("amazon-bedrock", "google-vertex"):
        line = next(line for line in after.splitlines() if f"@ {provider}:" in line)
        assert "(target 128); 3 ended before max_tokens" in line
    assert after.count("ttft p50 s by turn: 1: 0.301, 2: 0.602") == 2


def progress_event(done: int, step: int, step_done: int) -> str:
    progress = {"done": done, "total": 8, "ok": done, "failed": 0, "elapsed_seconds": 1.0,
                "eta_seconds": None, "step": step, "steps": 2, "step_done": step_done,
                "step_total": 4}  # fmt: skip
    return "event: progress\ndata: " + json.dumps({"progress": progress}) + "\n\n"


def step_stats(step: int, concurrency: int, goodput: float) -> dict[str, Any]:
    stats = {"model": "emulator/small", "requests_per_second": 2.5 * step, "goodput": goodput,
             "goodput_per_second": 2.5 * step * goodput, "latency": {"p50": 0.5, "p95": 0.61},
             "ttft": {"p95": 0.3}}  # fmt: skip
    return {"step": step, "concurrency": concurrency, "rate": None, "models": [stats]}


SWEEP_SUMMARY: dict[str, Any] = {
    **SUMMARY,
    "finished_requests": 8,
    "warmup_requests": 0,
    "progress": {
        "done": 8,
        "total": 8,
        "ok": 8,
        "failed": 0,
        "elapsed_seconds": 4.0,
        "eta_seconds": None,
    },
    "steps": [step_stats(1, 1, 1.0), step_stats(2, 4, 0.5)],
    "knee": [{"model": "emulator/small", "step": 1}],
}


def test_a_sweep_shows_a_bar_per_step_then_its_step_table() -> None:
    events = (
        progress_event(2, 1, 2)
        + progress_event(4, 1, 4)
        + progress_event(6, 2, 2)
        + "event: summary\ndata: "
        + json.dumps(SWEEP_SUMMARY)
        + "\n\n"
    )
    transport = httpx.MockTransport(
        lambda _request: httpx.Response(
            200, text=events, headers={"content-type": "text/event-stream"}
        )
    )
    out = io.StringIO()
    with httpx.Client(transport=transport, base_url="http://service.test") as http:
        summary = _follow(http, "r", Console(file=out, width=100, color_system=None))
    print_steps(summary, Console(file=out, width=100, color_system=None))

    text = out.getvalue()
    assert "step 1/2" in text and "step 2/2" in text
    assert "8/8" in text  # the whole run
    rows = [line.split() for line in text.splitlines() if "emulator/small" in line]
    assert rows == [
        ["1", "emulator/small", "1", "—", "2.50", "0.500", "0.610", "0.300", "2.50", "met", "knee"],
        ["2", "emulator/small", "4", "—", "5.00", "0.500", "0.610", "0.300", "2.50", "missed"],
    ]
