"""`python -m src.runner` (`make runner`): a benchmark runner for JOBS_BACKEND=redis.

It takes runs from the Redis queue (redis_runners.py) and runs them as the API's own runner
processes would (execution.py), with the same settings as the API: its own upstream key, its
own client, its own BENCHMARKS_DIR for the files. Start as many as wanted, on any machine
that reaches Redis and the upstream. SIGTERM or SIGINT interrupt its runs; their summaries are
still saved.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import AsyncExitStack

import uvloop
from pydantic import SecretStr
from saq import Worker
from saq.queue.redis import RedisQueue
from saq.types import Context

from src.config import Settings, settings_or_exit
from src.heap import settle_startup_heap
from src.logger import setup_logging_from
from src.services.benchmarker.runs.execution import run_hosted
from src.services.benchmarker.runs.redis_runners import (
    JOB_FUNCTION,
    Heartbeat,
    saq_queue,
    watching_runners,
)
from src.services.benchmarker.runs.redis_store import SOCKET_TIMEOUT_SECONDS, RedisRunStore, key
from src.services.openrouter.client import OpenRouterClient, UpstreamTarget, connect_openrouter
from src.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

# The embedded emulator's key, as the API uses it (main.py): it unlocks nothing real.
EMULATOR_API_KEY = "emulator-local-key"
DEQUEUE_WAIT_SECONDS = SOCKET_TIMEOUT_SECONDS / 2


class RunnerHost:
    """What every run this runner takes shares: settings, client, store and heartbeat."""

    def __init__(self, settings: Settings, client: OpenRouterClient) -> None:
        self.settings = settings
        self.client = client
        self.store = RedisRunStore.of(settings)
        self.heartbeat = Heartbeat(self.store, settings.runner_heartbeat_timeout_seconds)

    async def run(self, _: Context, *, benchmark_id: str) -> None:
        record = await asyncio.to_thread(self.store.load_plan, benchmark_id)
        if record is None:
            logger.error("BENCHMARK NOT FOUND | id=%s | no plan in Redis (expired?)", benchmark_id)
            return
        if not await asyncio.to_thread(self.heartbeat.claim, benchmark_id):
            logger.warning(
                "BENCHMARK TAKEN | id=%s | another runner has it, or it ended", benchmark_id
            )
            return
        try:
            await run_hosted(self.client, record.plan(self.settings), benchmark_id, self.settings)
        finally:
            self.heartbeat.hosted.discard(benchmark_id)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.store.redis.delete, key(benchmark_id, "alive"))


async def serve(settings: Settings) -> None:
    # An API process on the same LOG_DIR owns rotation; a runner appends.
    logging_handle = setup_logging_from(settings, rotate=False)
    async with AsyncExitStack() as stack:
        stack.callback(logging_handle.stop)
        target = await _upstream(settings, stack)
        client = connect_openrouter(settings, target)
        stack.push_async_callback(client.aclose)
        host = RunnerHost(settings, client)
        queue = saq_queue(settings)
        stack.push_async_callback(queue.disconnect)
        worker = runs_worker(queue, host, settings)
        await stack.enter_async_context(watching_runners(settings))
        beating = asyncio.create_task(host.heartbeat.run(), name="runner heartbeat")
        logger.info(
            "RUNNER STARTED | id=%s | upstream=%s | runs at once=%d",
            host.heartbeat.runner_id,
            settings.upstream_label,
            settings.runner_concurrency,
        )
        try:
            await worker.start()
        finally:
            await cancel_and_wait(beating)
            await asyncio.to_thread(host.heartbeat.stop)
            logger.info("RUNNER STOPPED | id=%s", host.heartbeat.runner_id)


def runs_worker(queue: RedisQueue, host: RunnerHost, settings: Settings) -> Worker[Context]:
    return Worker(
        queue,
        functions=[(JOB_FUNCTION, host.run)],
        concurrency=settings.runner_concurrency,
        # Redis answers an idle wait for a job before the client's read timeout would cut it:
        # a job handed over at the moment a timed-out connection is dropped would be lost.
        dequeue_timeout=DEQUEUE_WAIT_SECONDS,
        # On SIGTERM the runs are interrupted at once and given this long to save.
        shutdown_grace_period_s=0,
        cancellation_hard_deadline_s=settings.shutdown_timeout_seconds,
    )


async def _upstream(settings: Settings, stack: AsyncExitStack) -> UpstreamTarget:
    if not settings.uses_emulator:
        return UpstreamTarget(settings.openrouter_base_url, settings.openrouter_api_key)
    # Imported here: with a key set, nothing of the emulator is loaded.
    from src.services.emulator import EmulatorConfig
    from src.services.emulator.server import serve_embedded_emulator

    config = EmulatorConfig.from_settings(settings)
    base_url = await stack.enter_async_context(serve_embedded_emulator(config))
    return UpstreamTarget(base_url, SecretStr(EMULATOR_API_KEY))


def main() -> None:
    settings = settings_or_exit()
    if settings.jobs_backend != "redis":
        raise SystemExit("python -m src.runner needs JOBS_BACKEND=redis (and REDIS_URL).")
    settle_startup_heap()
    uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
