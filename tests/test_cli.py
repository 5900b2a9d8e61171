"""The comparison table the command line prints at the end of a run."""

import io
from typing import Any

import pytest
from rich.console import Console

from src.cli import print_comparison

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
