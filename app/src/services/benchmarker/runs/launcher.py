"""Starting, awaiting and stopping benchmark runs: one launcher per API process.

A run is admitted first (the caps on running benchmarks and on requests in flight, counted
across every worker that shares BENCHMARKS_DIR), then hosted: in its own runner process by
default, or in this event loop (BENCHMARK_ISOLATION=inline). Whoever started it, any worker can
report on it or cancel it through its files.

Runner processes are kept ready ahead of the next run (warm spares, see runner_process.py),
as many as a run takes (RUNNER_PROCESSES), and replaced as soon as they are taken. With more
than one, a run's open loops are shared among its runners (see shards.py); its place under
the caps is held until every one of them has exited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
from datetime import UTC, datetime
from functools import partial

from src import metrics
from src.config import MULTIPROC_ENV, REPO_ROOT, Settings
from src.schemas.benchmarks import BenchmarkState, BenchmarkStatus, BenchmarkSummary
from src.services.base.exceptions import RunnerFailedError
from src.services.benchmarker.load.plan import BenchmarkPlan, PlanRecord
from src.services.benchmarker.results.file_utils import new_benchmark_id, result_paths
from src.services.benchmarker.results.summary import (
    RunClock,
    RunRecords,
    build_state,
    final_records,
)
from src.services.benchmarker.runs.backend import run_store
from src.services.benchmarker.runs.disk import release_reserve, storage_error
from src.services.benchmarker.runs.execution import run_hosted
from src.services.benchmarker.runs.redis_runners import enqueue_run
from src.services.benchmarker.runs.runner_process import EXIT_INTERRUPTED, RunnerJob
from src.services.benchmarker.runs.shards import shard_count
from src.services.benchmarker.runs.store import RunCaps, RunStore
from src.services.openrouter.client import OpenRouterClient, UpstreamTarget

logger = logging.getLogger(__name__)

APP_DIR = REPO_ROOT / "app"
# How often a caller waiting for a queued run's summary looks for it, and how long leaving
# waits for the summary of the run it cancels.
QUEUED_POLL_SECONDS = 0.25
CANCEL_WAIT_SECONDS = 10.0
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
        # A run's runner processes, its lead first.
        self._processes: dict[str, list[asyncio.subprocess.Process]] = {}
        # Runs hosted here whose runner has not exited, with their concurrency: they count
        # under the caps whatever their files say (see RunStore.check_capacity).
        self._live: dict[str, int] = {}
        self._spares: list[asyncio.subprocess.Process] = []
        self._refill: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Start the warm runners, when runs are hosted in runner processes here (with
        JOBS_BACKEND=redis, runners are processes of their own: `python -m src.runner`)."""
        settings = self._settings
        if settings.benchmark_isolation == "process" and settings.jobs_backend != "redis":
            await self._fill_spares()

    def live(self) -> dict[str, int]:
        return dict(self._live)

    async def start(self, plan: BenchmarkPlan) -> BenchmarkState:
        """Admit and start a run; it goes on whether or not anyone waits for it."""
        settings = self._settings
        benchmark_id = new_benchmark_id(datetime.now(UTC), plan.parameters.models)
        clock = RunClock(datetime.now(UTC), 0.0)
        state = build_state(RunRecords(benchmark_id, "running", plan, [], clock), [])
        if settings.jobs_backend == "redis":
            await enqueue_run(settings, state, PlanRecord.of(plan))
            return state  # a runner process takes it from the queue
        await asyncio.to_thread(self._store.admit, state, RunCaps.of(settings), self.live())
        metrics.BENCHMARKS_ADMITTED.inc()
        metrics.BENCHMARKS_RUNNING.inc()
        run = asyncio.create_task(self._host(benchmark_id, plan), name=f"benchmark {benchmark_id}")
        self._runs[benchmark_id] = run
        self._live[benchmark_id] = plan.parameters.peak_concurrency
        run.add_done_callback(lambda _: self._forget(benchmark_id))
        return state

    def _forget(self, benchmark_id: str) -> None:
        self._runs.pop(benchmark_id, None)
        if self._live.pop(benchmark_id, None) is not None:
            metrics.BENCHMARKS_RUNNING.dec()

    async def wait(self, benchmark_id: str) -> BenchmarkSummary:
        """The summary once the run ends. Cancelling the caller interrupts the run, and returns
        (re-raising) only once the interrupted run's summary is on disk."""
        if self._settings.jobs_backend == "redis":
            return await self._wait_queued(benchmark_id)
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

    async def _wait_queued(self, benchmark_id: str) -> BenchmarkSummary:
        """A run on the queue, wherever it runs: its summary once its store has it; leaving
        cancels the run, and waits (a while) for the summary that records it."""
        try:
            return await self._summary_of(benchmark_id)
        except asyncio.CancelledError:
            await asyncio.to_thread(self._store.request_cancel, benchmark_id)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._summary_of(benchmark_id), CANCEL_WAIT_SECONDS)
            raise

    async def _summary_of(self, benchmark_id: str) -> BenchmarkSummary:
        while True:
            view = await asyncio.to_thread(self._store.current_view, benchmark_id)
            if isinstance(view, BenchmarkSummary):
                return view
            await asyncio.sleep(QUEUED_POLL_SECONDS)

    def interrupt(self, benchmark_id: str) -> None:
        processes = self._processes.get(benchmark_id)
        if processes is not None and processes[0].returncode is None:
            _terminate(processes)
        elif (run := self._runs.get(benchmark_id)) is not None:
            run.cancel()

    async def close(self, timeout_seconds: float) -> None:
        """At shutdown: every run still going is interrupted, and its summary saved in time."""
        spare_gone = asyncio.create_task(self._close_spares())
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

    async def _take_runners(self, count: int) -> list[asyncio.subprocess.Process]:
        """`count` runners: warm spares while there are live ones, else started now; new
        spares start in the background either way."""
        taken: list[asyncio.subprocess.Process] = []
        while self._spares and len(taken) < count:
            spare = self._spares.pop(0)
            if spare.returncode is None:
                taken.append(spare)
        if self._refill is None or self._refill.done():
            self._refill = asyncio.create_task(self._fill_spares(), name="warm runners")
        try:
            for _ in range(count - len(taken)):
                taken.append(await _spawn_runner())
        except BaseException:
            await asyncio.gather(*(_discard(process) for process in taken))
            raise
        return taken

    async def _fill_spares(self) -> None:
        while len(self._spares) < self._settings.runner_processes:
            try:
                self._spares.append(await _spawn_runner())
            except OSError as exc:
                # The service runs all the same; a run starts the runners it lacks.
                logger.warning("No warm benchmark runner: %s", exc)
                return

    async def _close_spares(self) -> None:
        if self._refill is not None:
            self._refill.cancel()
            await asyncio.gather(self._refill, return_exceptions=True)
        spares, self._spares = self._spares, []
        await asyncio.gather(*(_discard(spare) for spare in spares))

    async def _in_process(self, benchmark_id: str, plan: BenchmarkPlan) -> None:
        count = shard_count(self._settings.runner_processes, plan.parameters)
        # The lead's socket, for the others to connect to; short, as socket paths must be.
        folder = await asyncio.to_thread(tempfile.mkdtemp, prefix="bench-") if count > 1 else None
        socket = None if folder is None else os.path.join(folder, "lead")
        processes = await self._take_runners(count)
        self._processes[benchmark_id] = processes
        try:
            for shard, process in enumerate(processes):
                job = RunnerJob.build(
                    benchmark_id,
                    plan,
                    self._settings,
                    self._target,
                    os.getpid(),
                    shard,
                    count,
                    socket,
                )
                assert process.stdin is not None
                process.stdin.write(job.model_dump_json().encode())
                await process.stdin.drain()
                process.stdin.close()
            code = await processes[0].wait()
        finally:
            self._processes.pop(benchmark_id, None)
            # The lead gone, the others have nothing left to send: they are stopped (and
            # waited for: the run holds its place until then).
            _terminate(processes)
            await asyncio.gather(*(process.wait() for process in processes))
            if folder is not None:
                await asyncio.to_thread(shutil.rmtree, folder, True)
        if code not in (0, EXIT_INTERRUPTED):
            logger.error("BENCHMARK RUNNER FAILED | id=%s | exit code %s", benchmark_id, code)
            await asyncio.to_thread(
                record_lost_run, self._settings, benchmark_id, plan, _exit_cause(code)
            )


def _terminate(processes: list[asyncio.subprocess.Process]) -> None:
    for process in processes:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)


async def _spawn_runner() -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "src.services.benchmarker.runs.runner_process",
        stdin=asyncio.subprocess.PIPE,
        cwd=APP_DIR,
        env=_runner_env(),
    )


def _runner_env() -> dict[str, str]:
    """The service's environment, less the metrics directory: a run measures its requests in
    its own files, and a process per run would leave a metrics file per run behind."""
    env = {name: value for name, value in os.environ.items() if name != MULTIPROC_ENV}
    return {**env, "PYTHONPATH": str(APP_DIR)}


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


def record_lost_run(
    settings: Settings,
    benchmark_id: str,
    plan: BenchmarkPlan,
    cause: str | None,
    store: RunStore | None = None,
    status: BenchmarkStatus = "failed",
) -> None:
    """A run whose runner ended without its summary (killed, crashed) must not stay "running"
    for the caps: it is recorded as failed with the cause, and summed up from the rows the
    store kept (its start and elapsed time from its last state record). A queued run nobody
    took is recorded so too (`status` cancelled when it was cancelled there)."""
    store = run_store(settings) if store is None else store
    if store.has_summary(benchmark_id):
        return
    paths = result_paths(settings.benchmarks_dir, benchmark_id)
    release_reserve(paths.reserve)
    state = store.read_state(benchmark_id)
    clock = RunClock(
        state.started_at if state else datetime.now(UTC),
        state.progress.elapsed_seconds if state else 0.0,
    )
    records = store.read_rows(benchmark_id, plan.prompts)
    summary, ended = final_records(RunRecords(benchmark_id, status, plan, records, clock), cause)
    if status == "failed":
        logger.error("BENCHMARK FAILED | id=%s | %s", benchmark_id, cause)
    else:
        logger.info(
            "BENCHMARK FINISHED | id=%s | status=%s | before any runner took it",
            benchmark_id,
            status,
        )
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
