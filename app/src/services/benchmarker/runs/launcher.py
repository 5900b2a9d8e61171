"""Starting, awaiting and stopping benchmark runs: one launcher per API process.

A run is admitted first (the caps on running benchmarks and on requests in flight, counted
across every worker that shares BENCHMARKS_DIR), then hosted: in its own runner process by
default, or in this event loop (BENCHMARK_ISOLATION=inline). Whoever started it, any worker can
report on it or cancel it through its files.

A runner process is always kept ready ahead of the next run (a warm spare, see
runner_process.py), and replaced as soon as it is taken.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from datetime import UTC, datetime
from functools import partial

from src.config import REPO_ROOT, Settings
from src.schemas.benchmarks import BenchmarkState, BenchmarkSummary
from src.services.base.exceptions import RunnerFailedError
from src.services.benchmarker.load.plan import BenchmarkPlan
from src.services.benchmarker.results.csv_writer import read_records
from src.services.benchmarker.results.file_utils import new_benchmark_id, result_paths
from src.services.benchmarker.results.summary import (
    RunClock,
    build_state,
    build_summary,
    progress_of,
)
from src.services.benchmarker.runs.backend import run_store
from src.services.benchmarker.runs.disk import release_reserve, storage_error
from src.services.benchmarker.runs.execution import run_hosted
from src.services.benchmarker.runs.runner_process import EXIT_INTERRUPTED, RunnerJob
from src.services.benchmarker.runs.store import RunCaps, RunStore
from src.services.openrouter.client import OpenRouterClient, UpstreamTarget

logger = logging.getLogger(__name__)

APP_DIR = REPO_ROOT / "app"
# A spare still importing when told to go finishes that first; then it reads its closed stdin.
SPARE_EXIT_SECONDS = 10.0


class BenchmarkLauncher:
    def __init__(
        self, settings: Settings, client: OpenRouterClient, target: UpstreamTarget
    ) -> None:
        self._settings = settings
        self._client = client
        self._target = target
        self._store: RunStore = run_store(settings)
        # A hosted run's task ends with its summary when it ran here, None when a runner
        # process wrote it to disk (read only if somebody waits for it).
        self._runs: dict[str, asyncio.Task[BenchmarkSummary | None]] = {}
        self._processes: dict[str, asyncio.subprocess.Process] = {}
        # Runs hosted here whose runner has not exited, with their concurrency: they count
        # under the caps whatever their files say (see RunStore.check_capacity).
        self._live: dict[str, int] = {}
        self._spare: asyncio.subprocess.Process | None = None
        self._refill: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Start the first warm runner, when runs are hosted in runner processes."""
        if self._settings.benchmark_isolation != "process":
            return
        try:
            self._spare = await _spawn_runner()
        except OSError as exc:
            # The service runs all the same; its first run starts its own runner.
            logger.warning("No warm benchmark runner: %s", exc)

    def live(self) -> dict[str, int]:
        return dict(self._live)

    async def start(self, plan: BenchmarkPlan) -> BenchmarkState:
        """Admit and start a run; it goes on whether or not anyone waits for it."""
        settings = self._settings
        benchmark_id = new_benchmark_id(datetime.now(UTC), plan.parameters.models)
        state = build_state(benchmark_id, "running", plan, [], RunClock(datetime.now(UTC), 0.0), [])
        await asyncio.to_thread(self._store.admit, state, RunCaps.of(settings), self.live())
        run = asyncio.create_task(self._host(benchmark_id, plan), name=f"benchmark {benchmark_id}")
        self._runs[benchmark_id] = run
        self._live[benchmark_id] = plan.parameters.peak_concurrency
        run.add_done_callback(lambda _: self._forget(benchmark_id))
        return state

    def _forget(self, benchmark_id: str) -> None:
        self._runs.pop(benchmark_id, None)
        self._live.pop(benchmark_id, None)

    async def wait(self, benchmark_id: str) -> BenchmarkSummary:
        """The summary once the run ends. Cancelling the caller interrupts the run, and returns
        (re-raising) only once the interrupted run's summary is on disk."""
        run = self._runs[benchmark_id]
        try:
            summary = await asyncio.shield(run)
        except asyncio.CancelledError:
            if not run.done():
                self.interrupt(benchmark_id)
                await asyncio.wait({run})
            raise
        if summary is not None:
            return summary
        try:
            return await asyncio.to_thread(self._store.load_summary, benchmark_id)
        except Exception as exc:
            raise RunnerFailedError(
                f"The benchmark runner ended without a summary for {benchmark_id}."
            ) from exc

    def interrupt(self, benchmark_id: str) -> None:
        process = self._processes.get(benchmark_id)
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGTERM)
        elif (run := self._runs.get(benchmark_id)) is not None:
            run.cancel()

    async def close(self, timeout_seconds: float) -> None:
        """At shutdown: every run still going is interrupted, and its summary saved in time."""
        spare_gone = asyncio.create_task(self._close_spare())
        runs = set(self._runs.values())
        if runs:
            logger.info("Interrupting %d running benchmark(s)", len(runs))
            for benchmark_id in list(self._runs):
                self.interrupt(benchmark_id)
            _, late = await asyncio.wait(runs, timeout=timeout_seconds)
            if late:
                logger.warning(
                    "%d benchmark(s) did not save their summary before shutdown", len(late)
                )
        await spare_gone

    async def _host(self, benchmark_id: str, plan: BenchmarkPlan) -> BenchmarkSummary | None:
        settings = self._settings
        try:
            if settings.benchmark_isolation == "inline":
                return await run_hosted(self._client, plan, benchmark_id, settings)
            await self._in_process(benchmark_id, plan)
            return None
        except BaseException as exc:
            cause = f"the benchmark run ended without its summary ({type(exc).__name__})"
            await asyncio.to_thread(record_lost_run, settings, benchmark_id, plan, cause)
            raise

    async def _take_runner(self) -> asyncio.subprocess.Process:
        """The warm spare when there is a live one (else a runner started now); a new spare
        starts in the background either way."""
        spare, self._spare = self._spare, None
        if self._refill is None or self._refill.done():
            self._refill = asyncio.create_task(self._replace_spare(), name="warm runner")
        if spare is not None and spare.returncode is None:
            return spare
        return await _spawn_runner()

    async def _replace_spare(self) -> None:
        try:
            process = await _spawn_runner()
        except OSError as exc:
            logger.warning("No warm benchmark runner: %s", exc)
            return
        if self._spare is None:
            self._spare = process
        else:
            await _discard(process)

    async def _close_spare(self) -> None:
        if self._refill is not None:
            self._refill.cancel()
            await asyncio.gather(self._refill, return_exceptions=True)
        spare, self._spare = self._spare, None
        if spare is not None:
            await _discard(spare)

    async def _in_process(self, benchmark_id: str, plan: BenchmarkPlan) -> None:
        job = RunnerJob.build(benchmark_id, plan, self._settings, self._target, os.getpid())
        process = await self._take_runner()
        self._processes[benchmark_id] = process
        try:
            assert process.stdin is not None
            process.stdin.write(job.model_dump_json().encode())
            await process.stdin.drain()
            process.stdin.close()
            code = await process.wait()
        finally:
            self._processes.pop(benchmark_id, None)
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await process.wait()
        if code not in (0, EXIT_INTERRUPTED):
            logger.error("BENCHMARK RUNNER FAILED | id=%s | exit code %s", benchmark_id, code)
            await asyncio.to_thread(
                record_lost_run, self._settings, benchmark_id, plan, _exit_cause(code)
            )


async def _spawn_runner() -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "src.services.benchmarker.runs.runner_process",
        stdin=asyncio.subprocess.PIPE,
        cwd=APP_DIR,
        env={**os.environ, "PYTHONPATH": str(APP_DIR)},
    )


async def _discard(spare: asyncio.subprocess.Process) -> None:
    """A spare given no job: its closed stdin tells it to exit; killed if it does not soon."""
    if spare.stdin is not None:
        spare.stdin.close()
    try:
        await asyncio.wait_for(spare.wait(), SPARE_EXIT_SECONDS)
    except TimeoutError:
        spare.kill()
        await spare.wait()


def _exit_cause(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the benchmark runner was killed ({name})"
    return f"the benchmark runner exited with code {code}"


def record_lost_run(settings: Settings, benchmark_id: str, plan: BenchmarkPlan, cause: str) -> None:
    """A run whose runner ended without its summary (killed, crashed) must not stay "running"
    for the caps: it is recorded as failed with the cause, and summed up from the rows its CSV
    kept (its start and elapsed time from its last state record)."""
    store = run_store(settings)
    if store.has_summary(benchmark_id):
        return
    paths = result_paths(settings.benchmarks_dir, benchmark_id)
    release_reserve(paths.reserve)
    state = store.read_state(benchmark_id)
    clock = RunClock(
        state.started_at if state else datetime.now(UTC),
        state.progress.elapsed_seconds if state else 0.0,
    )
    records = read_records(paths.csv, plan.prompts)
    progress = progress_of("failed", plan, records, clock)
    summary = build_summary(benchmark_id, "failed", plan, records, clock, cause, progress)
    ended = build_state(
        benchmark_id,
        "failed",
        plan,
        records,
        clock,
        summary.comparison,
        summary.finished_at,
        error=cause,
        progress=progress,
    )
    logger.error("BENCHMARK FAILED | id=%s | %s", benchmark_id, cause)
    for what, write in (
        ("summary", partial(store.save_summary, benchmark_id, summary)),
        ("state record", partial(store.write_state, benchmark_id, ended)),
    ):
        try:
            write()
        except OSError as exc:
            logger.error(
                "BENCHMARK FILE LOST | id=%s | %s",
                benchmark_id,
                storage_error(exc, f"writing the {what}").detail,
            )
