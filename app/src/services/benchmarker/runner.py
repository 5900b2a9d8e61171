"""Run one benchmark plan to its end (or its interruption), recording every request on disk.

Host-agnostic: the same coroutine runs in a dedicated runner process (the default, see
worker.py) or in the API's own event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from src.schemas.benchmarks import BenchmarkStatus, BenchmarkSummary, RequestRecord
from src.services.base.timing import now
from src.services.benchmarker.file_utils import (
    CsvResultWriter,
    result_paths,
    write_summary,
)
from src.services.benchmarker.plan import BenchmarkPlan
from src.services.benchmarker.run_utils import execute_request, run_jobs
from src.services.benchmarker.summary import build_summary
from src.services.openrouter.client import OpenRouterClient

logger = logging.getLogger(__name__)


async def run_benchmark(
    client: OpenRouterClient,
    plan: BenchmarkPlan,
    benchmark_id: str,
    benchmarks_dir: Path,
    redact: Callable[[str], str],
) -> BenchmarkSummary:
    """Rows reach the CSV as requests finish; the JSON summary is written at the end, even when
    the run is cancelled (then with status "interrupted", before re-raising).
    """
    started_at = datetime.now(UTC)
    paths = await asyncio.to_thread(result_paths, benchmarks_dir, benchmark_id)
    writer = await CsvResultWriter.create(paths.csv)
    records: list[RequestRecord] = []

    def record(entry: RequestRecord) -> None:
        records.append(entry)
        writer.put(entry)

    logger.info(
        "BENCHMARK STARTED | id=%s | models=%s | requests=%d | concurrency=%d",
        benchmark_id,
        ",".join(plan.parameters.models),
        plan.total_requests,
        plan.parameters.concurrency,
    )
    clock = now()
    status: BenchmarkStatus = "failed"  # unless the run ends normally or is cancelled
    try:
        await run_jobs(
            plan.jobs(),
            concurrency=plan.parameters.concurrency,
            execute=partial(execute_request, client, parameters=plan.parameters, redact=redact),
            on_record=record,
        )
        status = "completed"
    except asyncio.CancelledError:
        status = "interrupted"
        raise
    finally:
        summary = build_summary(
            benchmark_id,
            status,
            plan,
            records,
            started_at=started_at,
            wall_seconds=now() - clock,
            paths=paths,
        )
        # Shielded: a second cancellation must not stop the files that record the first one.
        await asyncio.shield(_save(writer, paths.json, summary))
        logger.info(
            "BENCHMARK FINISHED | id=%s | status=%s | finished=%d/%d | wall=%.3fs",
            benchmark_id,
            status,
            summary.finished_requests,
            summary.requests,
            summary.wall_seconds,
        )
    return summary


async def _save(writer: CsvResultWriter, json_path: Path, summary: BenchmarkSummary) -> None:
    try:
        await writer.close()
    finally:
        await asyncio.to_thread(write_summary, json_path, summary)
