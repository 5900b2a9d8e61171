"""Executing one run: a benchmark plan driven to its end, its cancellation, its interruption
or its failure, recording every request on disk and its progress in the run store.

A disk that stops taking the run's files pauses it (nothing new is sent) for the write retry
time, then fails it with the cause: no request is paid for whose result could not be kept.

Host-agnostic: the same coroutine runs in a dedicated runner process (the default, see
runner_process.py) or in the API's own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from src.config import Settings
from src.redaction import Redactor
from src.schemas.benchmarks import (
    BenchmarkStatus,
    BenchmarkSummary,
    ComparisonRow,
    RequestRecord,
)
from src.services.base.exceptions import InsufficientStorageError, RunnerFailedError
from src.services.base.timing import now
from src.services.benchmarker.load.plan import BenchmarkJob, BenchmarkPlan
from src.services.benchmarker.load.run_utils import (
    Executor,
    RequestContext,
    execute_conversation,
    execute_request,
    run_closed_loop,
    sends_turns,
    until,
)
from src.services.benchmarker.load.sources import calibrate, is_synthetic
from src.services.benchmarker.load.sweep import Step, StepRun, auto_rate_steps, first_steps
from src.services.benchmarker.results.csv_writer import (
    CsvResultWriter,
    replace_csv,
    write_csv,
)
from src.services.benchmarker.results.file_utils import ResultPaths, result_paths
from src.services.benchmarker.results.summary import (
    RunClock,
    RunRecords,
    build_state,
    comparison_so_far,
    final_records,
)
from src.services.benchmarker.runs.backend import run_store
from src.services.benchmarker.runs.disk import DiskHealth, release_reserve
from src.services.benchmarker.runs.file_store import FileRunStore
from src.services.benchmarker.runs.shards import Go, ShardHub, send_share
from src.services.benchmarker.runs.store import RunStore
from src.services.openrouter.client import OpenRouterClient
from src.services.openrouter.generations import cross_check

logger = logging.getLogger(__name__)

# How often a run looks for a cancel request and for requests finished since its state record
# was last written; with none finished, the record is still rewritten every STATE_SECONDS, so
# elapsed time and ETA move and readers can tell the runner is alive.
CHECK_SECONDS = 0.2
STATE_SECONDS = 1.0
# A finished request wakes the watcher at once (its progress is news), but it looks no more
# often than this, however fast requests finish.
MIN_CHECK_SECONDS = 0.05
# The per-model statistics in the state record sort every record so far: recomputed with the
# progress they sit beside, unless that takes long enough to cost the run a share of its time
# (1/COMPARISON_SHARE); then at least every COMPARISON_SECONDS.
COMPARISON_SECONDS = 5.0
COMPARISON_SHARE = 20


@dataclass
class Run:
    """One run's mutable state, shared by the senders, the watcher and the final save."""

    benchmark_id: str
    plan: BenchmarkPlan
    paths: ResultPaths
    health: DiskHealth
    store: RunStore
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started: float = field(default_factory=now)
    measured_from: float | None = None
    last_send_offset: float | None = None
    records: list[RequestRecord] = field(default_factory=list)
    # With a sweep: the step sending now (its number goes on each record), and those done.
    step: int | None = None
    steps_run: list[StepRun] = field(default_factory=list)
    stop_reason: BenchmarkStatus | None = None  # set when the run was asked to stop
    # The records gained OpenRouter's own after the run: the CSV is written again with them.
    cross_checked: bool = False
    error: str | None = None  # why a failed run failed
    # Other runner processes that send shares of the open loops; None: this one sends all.
    shards: ShardHub | None = None
    # With a rate or a duration: when the last send is due, from the end of the warm-up.
    schedule_end: float | None = field(init=False)
    # Set as each request is recorded: the watcher's cue to save the progress.
    recorded: asyncio.Event = field(init=False, default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.schedule_end = self.plan.schedule_seconds()

    def clock(self) -> RunClock:
        measured = 0.0 if self.measured_from is None else now() - self.measured_from
        return RunClock(self.started_at, measured, self.last_send_offset, tuple(self.steps_run))


async def run_hosted(
    client: OpenRouterClient,
    plan: BenchmarkPlan,
    benchmark_id: str,
    settings: Settings,
    *,
    parent_pid: int | None = None,
    shards: ShardHub | None = None,
) -> BenchmarkSummary:
    """`run_benchmark` as the service hosts a run, in its runner process or inline: its files,
    store, redaction and write retries are the settings'."""
    return await run_benchmark(
        client,
        plan,
        benchmark_id,
        settings.benchmarks_dir,
        Redactor(settings.secrets()),
        parent_pid=parent_pid,
        shards=shards,
        write_retry_seconds=settings.benchmark_write_retry_seconds,
        store=run_store(settings),
        generation_stats_wait=(
            settings.generation_stats_wait_seconds if settings.generation_stats else None
        ),
    )


async def run_benchmark(
    client: OpenRouterClient,
    plan: BenchmarkPlan,
    benchmark_id: str,
    benchmarks_dir: Path,
    redact: Callable[[str], str],
    *,
    parent_pid: int | None = None,
    shards: ShardHub | None = None,
    write_retry_seconds: float = 10.0,
    store: RunStore | None = None,
    generation_stats_wait: float | None = None,
) -> BenchmarkSummary:
    """Rows reach the CSV as requests finish; the JSON summary is written at the end, also when
    the run is cancelled (status "cancelled", through a DELETE), fails (its files could not be
    written; the cause is in `error`) or is interrupted (its caller or its process was stopped;
    then the interruption is re-raised once the files are saved).

    With `parent_pid`, the run stops as interrupted if that process goes away. Its state
    record, summary and cancel request go through `store` (by default the files in
    `benchmarks_dir`); its CSV is in `benchmarks_dir` whatever the store.

    With `generation_stats_wait`, once every request is sent OpenRouter's own record of each
    measured success is fetched (waiting up to that many seconds for late ones).

    With `shards`, open loops are shared with other runner processes (see shards.py).
    """
    run = Run(
        benchmark_id,
        plan,
        await asyncio.to_thread(result_paths, benchmarks_dir, benchmark_id),
        DiskHealth(benchmark_id, write_retry_seconds),
        FileRunStore(benchmarks_dir) if store is None else store,
        shards=shards,
    )
    logger.info(
        "BENCHMARK STARTED | id=%s | models=%s | requests=%s | concurrency=%d",
        benchmark_id,
        ",".join(plan.parameters.models),
        plan.total_requests if plan.total_requests is not None else "by duration",
        plan.parameters.concurrency,
    )
    writer: CsvResultWriter | None = None
    tasks: list[asyncio.Task[None]] = []
    status: BenchmarkStatus = "failed"  # unless the run ends normally or is stopped
    try:
        writer = await CsvResultWriter.create(run.paths.csv, run.health)
        work = asyncio.create_task(
            _send_all(run, RequestContext(client, plan, redact), _recorder(run, writer))
        )
        tasks = [work, asyncio.create_task(_watch(run, work, parent_pid))]
        await _until_sent(work, *tasks[1:], writer.task)
        if generation_stats_wait is not None:
            await _cross_check(run, client, generation_stats_wait)
        status = "completed"
    except asyncio.CancelledError:
        status = run.stop_reason or "interrupted"
        if run.stop_reason is None:
            raise  # cancelled from outside (a caller who left, a stopping server)
    except (InsufficientStorageError, RunnerFailedError) as exc:
        run.error = exc.detail  # the files could not be kept, or the runners did not start
    except Exception as exc:
        run.error = f"the benchmark runner failed ({type(exc).__name__})"
        logger.exception("BENCHMARK RUNNER ERROR | id=%s", benchmark_id)
        raise
    finally:
        for task in tasks:
            task.cancel()
        summary = await _unstoppable(_finish(run, tasks, writer, status))
    return summary


async def _unstoppable(finish: Coroutine[None, None, BenchmarkSummary]) -> BenchmarkSummary:
    """A second cancellation (a stopping server signals its runner again) must not stop the
    files that record the first one: they are awaited to the end, then it is re-raised; a
    runner process that returned at once would lose them with its event loop."""
    task = asyncio.ensure_future(finish)
    cancelled = False
    while True:
        try:
            summary = await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
            continue
        if cancelled:
            raise asyncio.CancelledError
        return summary


async def _cross_check(run: Run, client: OpenRouterClient, wait_seconds: float) -> None:
    def wanted(record: RequestRecord) -> bool:
        return record.ok and not record.warmup

    checked = iter(await cross_check(client, [r for r in run.records if wanted(r)], wait_seconds))
    run.records[:] = [next(checked) if wanted(record) else record for record in run.records]
    run.cross_checked = True
    missing = sum(1 for record in run.records if record.generation_record == "missing")
    logger.info("BENCHMARK CROSS-CHECKED | id=%s | missing=%d", run.benchmark_id, missing)


def _recorder(run: Run, writer: CsvResultWriter) -> Callable[[RequestRecord], None]:
    def record(entry: RequestRecord) -> None:
        entry.finished_seconds = round(now() - run.started, 6)
        if not entry.warmup:
            entry.step = run.step
        run.records.append(entry)
        writer.put(entry)
        run.recorded.set()

    return record


async def _until_sent(work: asyncio.Task[None], *helpers: asyncio.Task[None]) -> None:
    """Until every request is sent and recorded. A helper (the watcher, the CSV writer) that
    fails first ends the run with its error; one that ends first stopped the run."""
    await asyncio.wait({work, *helpers}, return_when=asyncio.FIRST_COMPLETED)
    for helper in helpers:
        if helper.done() and not helper.cancelled() and (error := helper.exception()):
            raise error
    await work


async def _send_all(
    run: Run, context: RequestContext, record: Callable[[RequestRecord], None]
) -> None:
    parameters = run.plan.parameters

    async def execute(job: BenchmarkJob, scheduled: float | None) -> RequestRecord:
        # Nothing is sent while the run's files are not being written.
        await run.health.writable.wait()
        if sends_turns(job, parameters.turns):
            return await execute_conversation(context, job, scheduled, record)
        return await execute_request(context, job, scheduled)

    if parameters.warmup:
        await run_closed_loop(
            run.plan.warmup_jobs(),
            concurrency=parameters.concurrency,
            execute=execute,
            on_record=record,
        )
        _calibrate(run)
    run.measured_from = now()
    if parameters.sweep is None:
        run.last_send_offset = await _send_step(run, first_steps(parameters)[0], execute, record)
        return
    steps = first_steps(parameters)
    while len(run.steps_run) < len(steps):
        step = steps[len(run.steps_run)]
        run.step = step.number
        started = now()
        last_send = await _send_step(run, step, execute, record)
        run.steps_run.append(StepRun(step, now() - started, last_send))
        if parameters.sweep == "auto" and len(run.steps_run) == 2:
            synchronous, maximum = (_throughput(run, done) for done in run.steps_run)
            steps.extend(auto_rate_steps(parameters, synchronous, maximum))


async def _send_step(
    run: Run, step: Step, execute: Executor, record: Callable[[RequestRecord], None]
) -> float | None:
    """One step's requests (the whole run's without a sweep): with a rate, on its schedule
    (the offset of its last send is returned); else a closed loop."""
    parameters = run.plan.parameters
    if step.rate is not None:
        go = Go(
            start=now(),
            rate=step.rate,
            concurrency=step.concurrency,
            calibration=dict(run.plan.calibration),
        )
        if run.shards is not None:
            return await run.shards.open_loop(run.plan, go, execute, record)
        return await send_share(run.plan, go, 0, 1, execute, record)  # the one share: all of it
    deadline = None if parameters.duration is None else now() + parameters.duration
    await run_closed_loop(
        until(run.plan.jobs(), deadline),
        concurrency=step.concurrency,
        execute=execute,
        on_record=record,
    )
    return None


def _throughput(run: Run, done: StepRun) -> float:
    """Successful requests per second that a finished step achieved."""
    ok = sum(1 for record in run.records if record.step == done.step.number and record.ok)
    return ok / done.wall_seconds if done.wall_seconds > 0 else 0.0


def _calibrate(run: Run) -> None:
    """Synthetic prompts are sized again from the warm-up's own token counts."""
    if not is_synthetic(run.plan.parameters):
        return
    ratios = calibrate(run.records)
    for model, ratio in ratios.items():
        logger.info(
            "BENCHMARK CALIBRATED | id=%s | model=%s | prompt_tokens_per_word=%.4f",
            run.benchmark_id,
            model,
            ratio,
        )
    run.plan = dataclasses.replace(run.plan, calibration=ratios)


@dataclass
class _Saved:
    """What the watcher last wrote to the state record."""

    at: float = 0.0
    done: int = -1
    comparison_due: float = 0.0
    comparison: list[ComparisonRow] = field(default_factory=list)
    # How many records the comparison covers.
    compared: int = -1
    # How many records the store has as rows.
    rows: int = 0


async def _watch(run: Run, work: asyncio.Task[None], parent_pid: int | None) -> None:
    """Stops the run on a DELETE's mark (or when the parent process is gone), and rewrites the
    state record as requests finish, and at least every second.

    It lives as long as the run: an unexpected error is logged and the next round goes on; a
    state record that cannot be written for the write retry time ends the run.
    """
    saved = _Saved()
    while not work.done():
        await _pause(run)
        try:
            why = await _stop_reason(run, parent_pid)
            if why is not None:
                run.stop_reason, reason = why
                logger.info("BENCHMARK STOPPING | id=%s | %s", run.benchmark_id, reason)
                work.cancel()
                return
            await _save_progress(run, saved)
        except InsufficientStorageError:
            raise
        except Exception:
            logger.exception("BENCHMARK WATCHER ERROR | id=%s | going on", run.benchmark_id)


async def _pause(run: Run) -> None:
    """Until a request is recorded (but at least MIN_CHECK_SECONDS), or CHECK_SECONDS."""
    await asyncio.sleep(MIN_CHECK_SECONDS)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(run.recorded.wait(), CHECK_SECONDS - MIN_CHECK_SECONDS)
    run.recorded.clear()


async def _save_progress(run: Run, saved: _Saved) -> None:
    moment = now()
    done = len(run.records)
    if done == saved.done and moment - saved.at < STATE_SECONDS:
        return
    await _save_rows(run, saved)
    if done != saved.compared:
        _compare(run, saved, moment)
    counted = RunRecords(run.benchmark_id, "running", run.plan, run.records, _progress_clock(run))
    state = build_state(counted, saved.comparison, schedule_left=_schedule_left(run))
    write = partial(run.store.write_state, run.benchmark_id, state)
    if await run.health.try_write(STATE_RECORD, write):
        saved.at, saved.done = moment, done


async def _save_rows(run: Run, saved: _Saved) -> None:
    """The rows recorded since the last save, to the store (a no-op for the files store)."""
    first = saved.rows
    new = run.records[first:]
    if not new:
        return
    if await run.health.try_write(ROWS, partial(run.store.add_rows, run.benchmark_id, first, new)):
        saved.rows = first + len(new)


def _compare(run: Run, saved: _Saved, moment: float) -> None:
    """The comparison, recomputed for the records the progress counts; on a run with so many
    records that this takes long, at most once every COMPARISON_SECONDS (the progress then
    runs ahead of it)."""
    if saved.compared >= 0 and moment < saved.comparison_due:
        return
    saved.comparison = comparison_so_far(run.plan, run.records, run.clock().wall_seconds)
    saved.compared = len(run.records)
    took = now() - moment
    saved.comparison_due = moment + min(COMPARISON_SECONDS, took * COMPARISON_SHARE)


STATE_RECORD = "state record"
ROWS = "rows in the run store"


async def _stop_reason(run: Run, parent_pid: int | None) -> tuple[BenchmarkStatus, str] | None:
    """Why the run must stop now, if it must: a DELETE's mark, a parent process gone, or
    MAX_RUN_SECONDS reached."""
    if await asyncio.to_thread(run.store.is_cancel_requested, run.benchmark_id):
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
    tasks: list[asyncio.Task[None]],
    writer: CsvResultWriter | None,
    status: BenchmarkStatus,
) -> BenchmarkSummary:
    # Every in-flight request has ended (recorded or cancelled) before anything is summed up.
    await asyncio.gather(*tasks, return_exceptions=True)
    kept = await _close_results(run, writer)
    if run.error is not None:
        status = "failed"
        logger.error("BENCHMARK FAILED | id=%s | %s", run.benchmark_id, run.error)
    # The reserve makes room for the records below, even on a full disk.
    await asyncio.to_thread(release_reserve, run.paths.reserve)
    counted = RunRecords(run.benchmark_id, status, run.plan, kept, _progress_clock(run))
    summary, state = final_records(counted, run.error, run.clock())
    # The summary first: a reader that sees the run ended then finds its figures too. The disk
    # reserve, given back above, makes room for both.
    await _final_write(run, ROWS, partial(run.store.set_rows, run.benchmark_id, kept))
    await _final_write(run, "summary", partial(run.store.save_summary, run.benchmark_id, summary))
    await _final_write(run, STATE_RECORD, partial(run.store.write_state, run.benchmark_id, state))
    try:
        await asyncio.to_thread(run.store.clear_cancel, run.benchmark_id)
    except OSError as exc:
        logger.warning("BENCHMARK | id=%s | cancel mark left: %s", run.benchmark_id, exc)
    logger.info(
        "BENCHMARK FINISHED | id=%s | status=%s | finished=%d/%s | wall=%.3fs",
        run.benchmark_id,
        status,
        summary.finished_requests,
        summary.requests,
        summary.wall_seconds,
    )
    return summary


async def _close_results(run: Run, writer: CsvResultWriter | None) -> list[RequestRecord]:
    """Write the queued rows and close the CSV; the records in it, which the summary counts."""
    if writer is None:
        return []
    try:
        await writer.close()
    except InsufficientStorageError as exc:
        run.error = run.error or exc.detail
    kept = run.records[: writer.rows_written]
    if run.cross_checked and not writer.detached:
        await _final_write(run, "results file", partial(replace_csv, run.paths.csv, kept))
    if writer.detached:
        # Deleted (with BENCHMARKS_DIR) while the run wrote it: written again from memory, so
        # the run's rows and the record of its failure are there to be found.
        run.error = run.error or "BENCHMARKS_DIR was deleted while the run was writing to it."
        await _final_write(run, "results file", partial(write_csv, run.paths.csv, kept))
    return kept


async def _final_write(run: Run, what: str, write: Callable[[], None]) -> None:
    try:
        await run.health.write(what, write)
    except InsufficientStorageError as exc:
        logger.error("BENCHMARK FILE LOST | id=%s | %s", run.benchmark_id, exc.detail)
