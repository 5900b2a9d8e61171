"""Benchmark results as the runner records them, and result files as a user reads them."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from src.schemas.benchmarks import BenchmarkParameters, RequestRecord
from src.services.benchmarker.load.plan import BenchmarkPlan


def plan_of(
    models: list[str], prompts: list[str], runs: int = 1, **parameters: object
) -> BenchmarkPlan:
    """A validated plan, as start_benchmark would make it (max_tokens 8 unless given)."""
    values: dict[str, object] = {"models": models, "runs": runs, "max_tokens": 8, **parameters}
    return BenchmarkPlan(BenchmarkParameters.model_validate(values), prompts)


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
    attempts: int = 1,
    total_seconds: float | None = None,
    finish_reason: str | None = None,
    **extra: Any,
) -> RequestRecord:
    """One record: a success unless `error_type` is given (then with status 502)."""
    failed = error_type is not None
    return RequestRecord(
        text="",
        finish_reason=finish_reason,
        attempts=attempts,
        total_seconds=latency if total_seconds is None else total_seconds,
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


def run_file(directory: Path, summary: dict[str, Any], kind: str = "csv") -> Path:
    """A result file named in a summary's `files`: names are relative to BENCHMARKS_DIR."""
    name = str(summary["files"][kind])
    assert "/" not in name, name
    return directory / name


def run_rows(directory: Path, summary: dict[str, Any]) -> list[dict[str, str]]:
    return csv_rows(run_file(directory, summary))
