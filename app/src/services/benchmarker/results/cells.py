"""How the HTML report and its sweep section show a figure in a table cell."""

from __future__ import annotations

from src.schemas.benchmarks import LatencyStats, Percentiles

MISSING = "—"
# The headers of `timing_cells` in the report's tables.
TIMING_HEADERS = ("p50", "p95", "ttft p50")


def number(value: float | None, digits: int = 3) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def timing_cells(latency: LatencyStats | Percentiles, ttft: Percentiles) -> list[str]:
    """The latency p50 and p95 and the ttft p50 of a group of requests."""
    return [number(latency.p50), number(latency.p95), number(ttft.p50)]
