"""Benchmark results as the runner records them, and result files as a user reads them."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from src.services.benchmarker.run_utils import RequestResult


def request_result(
    latency: float = 0.25,
    *,
    model: str = "m/x",
    prompt_index: int = 1,
    prompt: str = "p",
    run: int = 1,
    ttft: float | None = None,
    prompt_tokens: int = 0,
    completion: int = 0,
    total: int = 0,
    error_type: str | None = None,
    error: str | None = None,
    **extra: Any,
) -> RequestResult:
    """One result: a success unless `error_type` is given (then with status 502)."""
    failed = error_type is not None
    return RequestResult(
        model=model,
        prompt_index=prompt_index,
        prompt=prompt,
        run=run,
        status=502 if failed else 200,
        latency_seconds=latency,
        ttft_seconds=ttft,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion,
        tokens_used=total,
        error_type=error_type,
        error=(error or "boom") if failed else None,
        **extra,
    )


def csv_rows(path: Path | str) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))
