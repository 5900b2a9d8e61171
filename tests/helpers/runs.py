"""Runs as the store keeps them: ids, state records and summaries made for a test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from src.schemas.benchmarks import (
    BenchmarkState,
    BenchmarkStatus,
    BenchmarkSummary,
    Progress,
    SavedParameters,
)
from src.services.benchmarker.results.file_utils import TIMESTAMP_FORMAT
from src.services.benchmarker.runs.file_store import files_of

NOW = datetime.now(UTC).replace(microsecond=0)


def run_id(started: datetime = NOW, slug: str = "m", tail: str = "0000000a") -> str:
    return f"{started.strftime(TIMESTAMP_FORMAT)}_{slug}_{tail}"


def state(
    benchmark_id: str,
    *,
    status: BenchmarkStatus = "running",
    concurrency: int = 1,
    updated_at: datetime | None = None,
    owner: str | None = None,
    done: int = 0,
    total: int | None = 4,
    warmup: int = 0,
) -> BenchmarkState:
    started = datetime.strptime(benchmark_id[:16], TIMESTAMP_FORMAT).replace(tzinfo=UTC)
    return BenchmarkState(
        id=benchmark_id,
        status=status,
        started_at=started,
        updated_at=updated_at or datetime.now(UTC),
        parameters=SavedParameters(
            models=["openai/gpt-4o"], prompts=1, concurrency=concurrency, warmup=warmup
        ),
        progress=Progress(
            done=done,
            total=total,
            ok=done,
            failed=0,
            requests=None if total is None else max(total - warmup, 0),
            finished_requests=max(done - warmup, 0),
            elapsed_seconds=1.0,
            eta_seconds=None,
        ),
        comparison=[],
        files=files_of(benchmark_id),
        owner=owner,
    )


def summary_of(run: BenchmarkState) -> BenchmarkSummary:
    return BenchmarkSummary(
        id=run.id,
        status="completed",
        started_at=run.started_at,
        finished_at=run.started_at + timedelta(seconds=5),
        wall_seconds=5.0,
        requests=4,
        finished_requests=4,
        warmup_requests=0,
        requests_per_second=0.8,
        schedule=None,
        cost=None,
        parameters=run.parameters,
        progress=run.progress,
        models=[],
        comparison=[],
        files=run.files,
    )
