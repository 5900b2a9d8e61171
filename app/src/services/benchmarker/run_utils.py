"""The benchmark runner: a bounded pool of workers, and one measured request."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from src.schemas.benchmarks import BenchmarkParameters, RequestRecord
from src.schemas.prompts import GenerationResult
from src.services.base.error_status import status_for
from src.services.base.exceptions import ServiceError, UpstreamInvalidResponseError
from src.services.base.timing import Timing
from src.services.benchmarker.plan import BenchmarkJob
from src.services.openrouter.client import OpenRouterClient

logger = logging.getLogger(__name__)

OK_STATUS = 200

Executor = Callable[[BenchmarkJob], Awaitable[RequestRecord]]


async def run_jobs(
    jobs: Iterable[BenchmarkJob],
    *,
    concurrency: int,
    execute: Executor,
    on_record: Callable[[RequestRecord], None],
) -> None:
    """Run every job with at most `concurrency` in flight.

    A fixed pool of workers pulls from one shared iterator: no task per job is created up front.
    Cancelling the caller cancels the in-flight jobs and starts no new one.
    """
    pending = iter(jobs)

    async def worker() -> None:
        # next() never awaits, so two workers can never take the same job.
        for job in pending:
            on_record(await execute(job))
            # Let the other workers run before this one starts its next request: recording is
            # cheap, but a burst of answers should not queue behind one worker's next send.
            await asyncio.sleep(0)

    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    try:
        await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)


async def execute_request(
    client: OpenRouterClient,
    job: BenchmarkJob,
    parameters: BenchmarkParameters,
    redact: Callable[[str], str],
) -> RequestRecord:
    """One measured request. A failure is a record, never an exception: the run goes on.

    Its numbers are the client's wire timings (SPEC §8); nothing here reads the clock.
    """
    logger.info("STARTED SINGLE PROMPT IN BENCHMARK MODEL: %s, RUN: %d", job.model, job.run)
    timing = Timing()
    try:
        if parameters.stream:
            result = await _stream_once(client, job, parameters, timing)
        else:
            result = await client.complete(job.model, job.prompt, parameters, timing)
    except ServiceError as error:
        logger.warning(
            "BENCHMARK REQUEST FAILED | model=%s | run=%d | %s", job.model, job.run, error.detail
        )
        return RequestRecord.model_construct(
            text="",
            model=job.model,
            finish_reason=None,
            prompt_tokens=0,
            completion_tokens=0,
            tokens_used=0,
            latency_seconds=timing.latency,
            ttft_seconds=None,
            attempts=max(timing.attempts, 1),
            total_seconds=timing.total,
            prompt_index=job.prompt_index,
            prompt=job.prompt,
            run=job.run,
            status=status_for(error),
            error_type=type(error).__name__,
            error=redact(error.detail),
        )
    # The model asked for, which groups the statistics; the upstream may report a more
    # specific one (a dated version).
    return RequestRecord.model_construct(
        **{**result.__dict__, "text": "", "model": job.model},
        prompt_index=job.prompt_index,
        prompt=job.prompt,
        run=job.run,
        status=OK_STATUS,
        error_type=None,
        error=None,
    )


async def _stream_once(
    client: OpenRouterClient, job: BenchmarkJob, parameters: BenchmarkParameters, timing: Timing
) -> GenerationResult:
    result: GenerationResult | None = None
    items = client.stream(job.model, job.prompt, parameters, timing)
    try:
        async for item in items:
            if isinstance(item, GenerationResult):
                result = item
    finally:
        await items.aclose()
    if result is None:
        raise UpstreamInvalidResponseError("Upstream stream ended without a final item")
    return result
