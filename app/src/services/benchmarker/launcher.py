"""Starting, awaiting and stopping benchmark runs: one launcher per API process.

A run is admitted first (the caps on running benchmarks and on requests in flight, counted
across every worker that shares BENCHMARKS_DIR), then hosted: in its own runner process by
default, or in this event loop (BENCHMARK_ISOLATION=inline). Whoever started it, any worker can
report on it or cancel it through its files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from datetime import UTC, datetime

from src.config import REPO_ROOT, Settings
from src.redaction import Redactor
from src.schemas.benchmarks import BenchmarkState, BenchmarkSummary
from src.services.base.exceptions import RunnerFailedError
from src.services.benchmarker.file_utils import new_benchmark_id, result_paths
from src.services.benchmarker.plan import BenchmarkPlan
from src.services.benchmarker.runner import run_benchmark
from src.services.benchmarker.store import admit, load_summary, read_state, write_state
from src.services.benchmarker.summary import RunClock, build_state
from src.services.benchmarker.worker import EXIT_INTERRUPTED, RunnerJob
from src.services.openrouter.client import OpenRouterClient, UpstreamTarget

logger = logging.getLogger(__name__)

APP_DIR = REPO_ROOT / "app"


class BenchmarkLauncher:
    def __init__(
        self, settings: Settings, client: OpenRouterClient, target: UpstreamTarget
    ) -> None:
        self._settings = settings
        self._client = client
        self._target = target
        # A hosted run's task ends with its summary when it ran here, None when a runner
        # process wrote it to disk (read only if somebody waits for it).
        self._runs: dict[str, asyncio.Task[BenchmarkSummary | None]] = {}
        self._processes: dict[str, asyncio.subprocess.Process] = {}

    async def start(self, plan: BenchmarkPlan) -> BenchmarkState:
        """Admit and start a run; it goes on whether or not anyone waits for it."""
        settings = self._settings
        benchmark_id = new_benchmark_id(datetime.now(UTC), plan.parameters.models)
        state = build_state(benchmark_id, "running", plan, [], RunClock(datetime.now(UTC), 0.0), [])
        await asyncio.to_thread(
            admit,
            settings.benchmarks_dir,
            state,
            max_running=settings.max_running_benchmarks,
            max_in_flight=settings.max_inflight_total,
            keep_days=settings.benchmarks_keep_days,
        )
        run = asyncio.create_task(self._host(benchmark_id, plan), name=f"benchmark {benchmark_id}")
        self._runs[benchmark_id] = run
        run.add_done_callback(lambda _: self._runs.pop(benchmark_id, None))
        return state

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
            return await asyncio.to_thread(
                load_summary, self._settings.benchmarks_dir, benchmark_id
            )
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
        runs = set(self._runs.values())
        if not runs:
            return
        logger.info("Interrupting %d running benchmark(s)", len(runs))
        for benchmark_id in list(self._runs):
            self.interrupt(benchmark_id)
        _, late = await asyncio.wait(runs, timeout=timeout_seconds)
        if late:
            logger.warning("%d benchmark(s) did not save their summary before shutdown", len(late))

    async def _host(self, benchmark_id: str, plan: BenchmarkPlan) -> BenchmarkSummary | None:
        settings = self._settings
        try:
            if settings.benchmark_isolation == "inline":
                return await run_benchmark(
                    self._client,
                    plan,
                    benchmark_id,
                    settings.benchmarks_dir,
                    Redactor(settings.secrets()),
                )
            await self._in_process(benchmark_id, plan)
            return None
        except BaseException:
            await asyncio.to_thread(_mark_failed_if_unsaved, settings, benchmark_id, plan)
            raise

    async def _in_process(self, benchmark_id: str, plan: BenchmarkPlan) -> None:
        job = RunnerJob.build(benchmark_id, plan, self._settings, self._target, os.getpid())
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "src.services.benchmarker.worker",
            stdin=asyncio.subprocess.PIPE,
            cwd=APP_DIR,
            env={**os.environ, "PYTHONPATH": str(APP_DIR)},
        )
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
            await asyncio.to_thread(_mark_failed_if_unsaved, self._settings, benchmark_id, plan)


def _mark_failed_if_unsaved(settings: Settings, benchmark_id: str, plan: BenchmarkPlan) -> None:
    """A run that never saved its summary must not stay "running" for the caps; what its state
    record already says (start, progress) is kept."""
    paths = result_paths(settings.benchmarks_dir, benchmark_id)
    if paths.json.exists():
        return
    with contextlib.suppress(OSError):
        ended = datetime.now(UTC)
        state = read_state(paths.state)
        if state is None:
            state = build_state(benchmark_id, "failed", plan, [], RunClock(ended, 0.0), [])
        else:
            progress = state.progress.model_copy(update={"eta_seconds": None})
            ended_then = {"status": "failed", "updated_at": ended, "finished_at": ended}
            state = state.model_copy(update={**ended_then, "progress": progress})
        write_state(paths.state, state)
