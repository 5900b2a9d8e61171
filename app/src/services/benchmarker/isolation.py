"""Where a benchmark runs: in its own runner process (the default), or in the API's loop."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from src.config import REPO_ROOT, Settings
from src.redaction import Redactor
from src.schemas.benchmarks import BenchmarkSummary
from src.services.base.exceptions import RunnerFailedError
from src.services.benchmarker.file_utils import load_summary
from src.services.benchmarker.plan import BenchmarkPlan
from src.services.benchmarker.runner import run_benchmark
from src.services.benchmarker.worker import RunnerJob
from src.services.openrouter.client import OpenRouterClient, UpstreamTarget

APP_DIR = REPO_ROOT / "app"


async def run_isolated(
    settings: Settings,
    client: OpenRouterClient,
    target: UpstreamTarget,
    benchmark_id: str,
    plan: BenchmarkPlan,
) -> BenchmarkSummary:
    """Run the plan and return its summary; cancelling the caller interrupts the run, and the
    interrupted run's summary is on disk before the cancellation goes on.
    """
    if settings.benchmark_isolation == "inline":
        return await run_benchmark(
            client, plan, benchmark_id, settings.benchmarks_dir, Redactor(settings.secrets())
        )
    job = RunnerJob.build(benchmark_id, plan, settings, target)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "src.services.benchmarker.worker",
        stdin=asyncio.subprocess.PIPE,
        cwd=APP_DIR,
        env={**os.environ, "PYTHONPATH": str(APP_DIR)},
    )
    assert process.stdin is not None
    process.stdin.write(job.model_dump_json().encode())
    await process.stdin.drain()
    process.stdin.close()
    try:
        code = await process.wait()
    except asyncio.CancelledError:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        # The runner writes the interrupted run's summary; it must be on disk before we go on.
        await asyncio.shield(process.wait())
        raise
    try:
        return await asyncio.to_thread(load_summary, settings.benchmarks_dir, benchmark_id)
    except Exception as exc:
        raise RunnerFailedError(
            f"The benchmark runner exited with code {code} without a summary for {benchmark_id}."
        ) from exc
