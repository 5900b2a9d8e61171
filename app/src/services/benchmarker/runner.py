"""Run one benchmark plan to its end, its cancellation or its interruption, recording every
request on disk and its progress in its state record.

Host-agnostic: the same coroutine runs in a dedicated runner process (the default, see
worker.py) or in the API's own event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from src.schemas.benchmarks import BenchmarkStatus, BenchmarkSummary, ComparisonRow, RequestRecord
from src.services.base.timing import now
from src.services.benchmarker.csv_writer import CsvResultWriter
from src.services.benchmarker.file_utils import ResultPaths, result_paths
from src.services.benchmarker.plan import BenchmarkPlan
from src.services.benchmarker.run_utils import (
    RequestContext,
    execute_request,
    run_closed_loop,
    run_open_loop,
    until,
)
from src.services.benchmarker.schedule import arrival_offsets
from src.services.benchmarker.store import write_state, write_summary
from src.services.benchmarker.summary import (
    RunClock,
    build_state,
    build_summary,
    comparison_so_far,
)
from src.services.openrouter.client import OpenRouterClient

logger = logging.getLogger(__name__)

# How often a run looks for a cancel request and for requests finished since its state record
# was last written; with none finished, the record is still rewritten every STATE_SECONDS, so
# elapsed time and ETA move and readers can tell the runner is alive.
CHECK_SECONDS = 0.2
STATE_SECONDS = 1.0
# The per-model statistics in the state record sort every record so far: not every second.
COMPARISON_SECONDS = 5.0


@dataclass
class Run:
    """One run's mutable state, shared by the senders, the watcher and the final save."""

    benchmark_id: str
    plan: BenchmarkPlan
    paths: ResultPaths
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started: float = field(default_factory=now)
    measured_from: float | None = None
    last_send_offset: float | None = None
    records: list[RequestRecord] = field(default_factory=list)
    stop_reason: BenchmarkStatus | None = None  # set when the run was asked to stop
    # With a rate or a duration: when the last send is due, from the end of the warm-up.
    schedule_end: float | None = field(init=False)

    def __post_init__(self) -> None:
        self.schedule_end = self.plan.schedule_seconds()

    def clock(self) -> RunClock:
        measured = 0.0 if self.measured_from is None else now() - self.measured_from
        return RunClock(self.started_at, measured, self.last_send_offset)


async def run_benchmark(
    client: OpenRouterClient,
    plan: BenchmarkPlan,
    benchmark_id: str,
    benchmarks_dir: Path,
    redact: Callable[[str], str],
    *,
    parent_pid: int | None = None,
) -> BenchmarkSummary:
    """Rows reach the CSV as requests finish; the JSON summary is written at the end, also when
    the run is cancelled (status "cancelled", through a DELETE) or interrupted (its caller or
    its process was stopped; then the interruption is re-raised once the files are saved).

    With `parent_pid`, the run stops as interrupted if that process goes away.
    """
    run = Run(
        benchmark_id, plan, await asyncio.to_thread(result_paths, benchmarks_dir, benchmark_id)
    )
    writer = await CsvResultWriter.create(run.paths.csv)

    def record(entry: RequestRecord) -> None:
        run.records.append(entry)
        writer.put(entry)

    logger.info(
        "BENCHMARK STARTED | id=%s | models=%s | requests=%s | concurrency=%d",
        benchmark_id,
        ",".join(plan.parameters.models),
        plan.total_requests if plan.total_requests is not None else "by duration",
        plan.parameters.concurrency,
    )
    work = asyncio.create_task(_send_all(run, RequestContext(client, plan, redact), record))
    watcher = asyncio.create_task(_watch(run, work, parent_pid))
    status: BenchmarkStatus = "failed"  # unless the run ends normally or is stopped
    try:
        await work
        status = "completed"
    except asyncio.CancelledError:
        status = run.stop_reason or "interrupted"
        if run.stop_reason is None:
            raise  # cancelled from outside (a caller who left, a stopping server)
    finally:
        work.cancel()
        watcher.cancel()
        # Shielded: a second cancellation must not stop the files that record the first one.
        summary = await asyncio.shield(_finish(run, work, watcher, writer, status))
    return summary


async def _send_all(
    run: Run, context: RequestContext, record: Callable[[RequestRecord], None]
) -> None:
    parameters = run.plan.parameters
    execute = partial(execute_request, context)
    if parameters.warmup:
        await run_closed_loop(
            run.plan.warmup_jobs(),
            concurrency=parameters.concurrency,
            execute=execute,
            on_record=record,
        )
    run.measured_from = now()
    if parameters.rate is not None:
        run.last_send_offset = await run_open_loop(
            run.plan.jobs(),
            arrival_offsets(parameters.rate, parameters.arrival, parameters.seed),
            concurrency=parameters.concurrency,
            execute=execute,
            on_record=record,
            duration=parameters.duration,
        )
        return
    deadline = None if parameters.duration is None else run.measured_from + parameters.duration
    await run_closed_loop(
        until(run.plan.jobs(), deadline),
        concurrency=parameters.concurrency,
        execute=execute,
        on_record=record,
    )


async def _watch(run: Run, work: asyncio.Task[None], parent_pid: int | None) -> None:
    """Stops the run on a DELETE's mark (or when the parent process is gone), and rewrites the
    state record as requests finish, and at least every second."""
    written_at = comparison_due = 0.0
    written_done = -1
    comparison: list[ComparisonRow] = []
    while not work.done():
        await asyncio.sleep(CHECK_SECONDS)
        why = await _stop_reason(run, parent_pid)
        if why is not None:
            run.stop_reason, reason = why
            logger.info("BENCHMARK STOPPING | id=%s | %s", run.benchmark_id, reason)
            work.cancel()
            return
        moment = now()
        if moment >= comparison_due:
            comparison = comparison_so_far(run.plan, run.records, run.clock().wall_seconds)
            comparison_due = moment + COMPARISON_SECONDS
        done = len(run.records)
        if done != written_done or moment - written_at >= STATE_SECONDS:
            state = build_state(
                run.benchmark_id,
                "running",
                run.plan,
                run.records,
                _progress_clock(run),
                comparison,
                schedule_left=_schedule_left(run),
            )
            await asyncio.to_thread(write_state, run.paths.state, state)
            written_at, written_done = moment, done


async def _stop_reason(run: Run, parent_pid: int | None) -> tuple[BenchmarkStatus, str] | None:
    """Why the run must stop now, if it must: a DELETE's mark, a parent process gone, or
    MAX_RUN_SECONDS reached."""
    if await asyncio.to_thread(run.paths.cancel.exists):
        return "cancelled", "cancelled"
    if parent_pid is not None and os.getppid() != parent_pid:
        return "interrupted", "interrupted: the service that started it is gone"
    limit = run.plan.max_seconds
    if limit is not None and now() - run.started >= limit:
        return "interrupted", f"interrupted: MAX_RUN_SECONDS={limit:g} reached"
    return None


def _schedule_left(run: Run) -> float | None:
    """Seconds until the schedule's last send is due; during the warm-up, the whole schedule
    after what the warm-up's pace says is left of it."""
    if run.schedule_end is None:
        return None
    elapsed = now() - (run.started if run.measured_from is None else run.measured_from)
    if run.measured_from is not None:
        return run.schedule_end - elapsed
    warmed = len(run.records)
    warmup_left = elapsed / warmed * (run.plan.parameters.warmup - warmed) if warmed else 0.0
    return run.schedule_end + max(warmup_left, 0.0)


def _progress_clock(run: Run) -> RunClock:
    # Progress counts from the very start, warm-up included.
    return RunClock(run.started_at, now() - run.started)


async def _finish(
    run: Run,
    work: asyncio.Task[None],
    watcher: asyncio.Task[None],
    writer: CsvResultWriter,
    status: BenchmarkStatus,
) -> BenchmarkSummary:
    # Every in-flight request has ended (recorded or cancelled) before anything is summed up.
    await asyncio.gather(work, watcher, return_exceptions=True)
    summary = build_summary(run.benchmark_id, status, run.plan, run.records, run.clock())
    state = build_state(
        run.benchmark_id,
        status,
        run.plan,
        run.records,
        _progress_clock(run),
        summary.comparison,
        summary.finished_at,
    )
    try:
        await writer.close()
    finally:
        await asyncio.to_thread(write_summary, run.paths.json, summary)
        await asyncio.to_thread(write_state, run.paths.state, state)
        await asyncio.to_thread(run.paths.cancel.unlink, missing_ok=True)
    logger.info(
        "BENCHMARK FINISHED | id=%s | status=%s | finished=%d/%s | wall=%.3fs",
        run.benchmark_id,
        status,
        summary.finished_requests,
        summary.requests,
        summary.wall_seconds,
    )
    return summary
