"""Hosting one run in its own process (the runner process, started by launcher.py): the run
(execution.py) on its own event loop with its own client.

Why a process: the runner's clock must not wait for the API. In one process the API's
requests, and its logging, hold the event loop (or the GIL) while a benchmark's answers
arrive; here the operating system schedules the runner on its own, and `make perf` checks
that the API's traffic does not move the benchmark's figures.

The parent sends the job on stdin, the API key included: it never touches a file or the
command line. SIGTERM or SIGINT interrupt the run; the summary is still written.

A runner is started ahead, as a warm spare: its modules are imported while it waits for a job,
so a run's first request leaves at once instead of after the interpreter's start-up. A spare
whose stdin closes without a job (its service stopped or went away) exits quietly.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import uvloop
from pydantic import SecretStr

from src.config import Settings
from src.heap import settle_startup_heap
from src.logger import setup_logging_from
from src.redaction import Redactor
from src.services.benchmarker.load.plan import BenchmarkPlan, PlanRecord
from src.services.benchmarker.load.run_utils import RequestContext
from src.services.benchmarker.runs.execution import run_hosted
from src.services.benchmarker.runs.shards import ShardHub, serve_shard
from src.services.openrouter.client import UpstreamTarget, connect_openrouter

EXIT_INTERRUPTED = 3
EXIT_CRASHED = 4
# Process names (as `ps -o comm` shows them), so a spare is told from a runner holding a run.
WARM_RUNNER_NAME = "bench-spare"
RUNNER_NAME = "bench-runner"

logger = logging.getLogger(__name__)


class RunnerJob(PlanRecord):
    """Everything a runner needs, sent through its stdin (never written anywhere)."""

    benchmark_id: str
    settings: dict[str, object]
    upstream_url: str
    upstream_key: str
    parent_pid: int
    # With RUNNER_PROCESSES > 1: which share of the open loops this runner sends (0: the lead,
    # which hosts the run), of how many, and the lead's socket (see shards.py).
    shard: int = 0
    shards: int = 1
    socket: str | None = None

    @classmethod
    def build(
        cls,
        benchmark_id: str,
        plan: BenchmarkPlan,
        settings: Settings,
        target: UpstreamTarget,
        parent_pid: int,
        shard: int = 0,
        shards: int = 1,
        socket: str | None = None,
    ) -> RunnerJob:
        values = settings.model_dump(mode="json")
        # model_dump masks secrets; the runner needs them (for the upstream and for redaction).
        values["openrouter_api_key"] = settings.openrouter_api_key.get_secret_value()
        values["proxy_api_keys"] = [key.get_secret_value() for key in settings.proxy_api_keys]
        values["proxy_admin_keys"] = [key.get_secret_value() for key in settings.proxy_admin_keys]
        return cls(
            **dict(PlanRecord.of(plan)),
            benchmark_id=benchmark_id,
            settings=values,
            upstream_url=target.base_url,
            upstream_key=target.api_key.get_secret_value(),
            parent_pid=parent_pid,
            shard=shard,
            shards=shards,
            socket=socket,
        )


async def run_job(job: RunnerJob) -> int:
    settings = Settings(_env_file=None, **job.settings)  # type: ignore[arg-type]
    # The API process owns rotation; a runner only appends.
    logging_handle = setup_logging_from(settings, rotate=False)
    client = connect_openrouter(
        settings, UpstreamTarget(job.upstream_url, SecretStr(job.upstream_key))
    )
    run = asyncio.current_task()
    assert run is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, run.cancel)
    hub = None
    try:
        plan = job.plan(settings)
        if job.shard > 0:
            assert job.socket is not None
            context = RequestContext(client, plan, Redactor(settings.secrets()))
            await serve_shard(job.socket, job.shard, job.shards, context)
            return 0
        if job.shards > 1:
            assert job.socket is not None
            hub = ShardHub(job.socket, job.shards, job.benchmark_id)
            await hub.open()
        await run_hosted(
            client, plan, job.benchmark_id, settings, parent_pid=job.parent_pid, shards=hub
        )
        return 0
    except asyncio.CancelledError:
        return EXIT_INTERRUPTED
    except Exception:
        # In the log, not only on stderr; the launcher records the run as failed.
        logger.exception("BENCHMARK RUNNER CRASHED | id=%s", job.benchmark_id)
        return EXIT_CRASHED
    finally:
        if hub is not None:
            await hub.close()
        await client.aclose()
        logging_handle.stop()


def name_process(name: str) -> None:
    """Linux only; elsewhere the process keeps the interpreter's name."""
    try:
        with open("/proc/self/comm", "w", encoding="ascii") as comm:
            comm.write(name)
    except OSError:
        pass


def main() -> None:
    name_process(WARM_RUNNER_NAME)
    data = sys.stdin.buffer.read()
    if not data:
        return
    name_process(RUNNER_NAME)
    job = RunnerJob.model_validate_json(data)
    settle_startup_heap()
    sys.exit(uvloop.run(run_job(job)))


if __name__ == "__main__":
    main()
