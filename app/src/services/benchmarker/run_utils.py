"""The benchmark runner (a bounded pool of workers) and the statistics over its results."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass

from src.schemas.benchmarks import ComparisonRow, LatencyStats, RequestStats, TtftStats
from src.services.base.error_status import status_for
from src.services.base.exceptions import (
    ServiceError,
    UpstreamInvalidResponseError,
)
from src.services.openrouter.client import OpenRouterClient, StreamDelta, StreamEnd
from src.services.openrouter.schemas import ChatParameters

logger = logging.getLogger(__name__)

OK_STATUS = 200
DIGITS = 6  # microseconds: finer than any network timing we can measure


@dataclass(frozen=True, slots=True)
class BenchmarkJob:
    model: str
    prompt_index: int  # 1-based
    prompt: str
    run: int  # 1-based


@dataclass(frozen=True, slots=True)
class RequestOptions:
    max_tokens: int
    stream: bool
    temperature: float | None = None
    top_p: float | None = None


@dataclass(frozen=True, slots=True)
class RequestResult:
    model: str
    prompt_index: int
    prompt: str
    run: int
    status: int
    latency_seconds: float
    ttft_seconds: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens_used: int = 0
    error_type: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error_type is None


@dataclass(frozen=True, slots=True)
class _Usage:
    prompt_tokens: int
    completion_tokens: int
    tokens_used: int
    ttft_seconds: float | None


Executor = Callable[[BenchmarkJob], Awaitable[RequestResult]]


def iter_jobs(models: Sequence[str], prompts: Sequence[str], runs: int) -> Iterator[BenchmarkJob]:
    """Run by run, prompt by prompt, every model in turn: models interleave, so they share the
    same network and upstream conditions instead of one model getting the quiet minutes.
    """
    for run in range(1, runs + 1):
        for index, prompt in enumerate(prompts, start=1):
            for model in models:
                yield BenchmarkJob(model=model, prompt_index=index, prompt=prompt, run=run)


async def run_jobs(
    jobs: Iterable[BenchmarkJob],
    *,
    concurrency: int,
    execute: Executor,
    on_result: Callable[[RequestResult], None],
) -> None:
    """Run every job with at most `concurrency` in flight.

    A fixed pool of workers pulls from one shared iterator: no task per job is created up front.
    Cancelling the caller cancels the in-flight jobs and starts no new one.
    """
    pending = iter(jobs)

    async def worker() -> None:
        # next() never awaits, so two workers can never take the same job.
        for job in pending:
            on_result(await execute(job))
            # Let every other worker whose answer has arrived stop its clock before this one
            # spends CPU starting its next request: under a burst of simultaneous answers the
            # reported latencies would otherwise include the start-up work of other requests.
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
    options: RequestOptions,
    redact: Callable[[str], str],
) -> RequestResult:
    """One measured request. A failure is a result, never an exception: the run goes on."""
    logger.info("STARTED SINGLE PROMPT IN BENCHMARK MODEL: %s, RUN: %d", job.model, job.run)
    params = ChatParameters(
        model=job.model,
        prompt=job.prompt,
        max_tokens=options.max_tokens,
        temperature=options.temperature,
        top_p=options.top_p,
    )
    started = time.perf_counter()
    try:
        if options.stream:
            usage = await _stream_once(client, params, started)
        else:
            usage = await _complete_once(client, params)
    except ServiceError as error:
        latency = time.perf_counter() - started
        logger.warning(
            "BENCHMARK REQUEST FAILED | model=%s | run=%d | %s", job.model, job.run, error.detail
        )
        return RequestResult(
            model=job.model,
            prompt_index=job.prompt_index,
            prompt=job.prompt,
            run=job.run,
            status=status_for(error),
            latency_seconds=latency,
            error_type=type(error).__name__,
            error=redact(error.detail),
        )
    latency = time.perf_counter() - started
    return RequestResult(
        model=job.model,
        prompt_index=job.prompt_index,
        prompt=job.prompt,
        run=job.run,
        status=OK_STATUS,
        latency_seconds=latency,
        ttft_seconds=usage.ttft_seconds,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        tokens_used=usage.tokens_used,
    )


async def _complete_once(client: OpenRouterClient, params: ChatParameters) -> _Usage:
    completion = await client.complete(params)
    return _Usage(
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
        tokens_used=completion.tokens_used,
        ttft_seconds=None,
    )


async def _stream_once(client: OpenRouterClient, params: ChatParameters, started: float) -> _Usage:
    # Time to first token on the same clock as the latency, so ttft <= latency always holds.
    ttft: float | None = None
    end: StreamEnd | None = None
    async with aclosing(client.stream_complete(params)) as items:
        async for item in items:
            if isinstance(item, StreamDelta):
                if ttft is None:
                    ttft = time.perf_counter() - started
            else:
                end = item
    if end is None:
        raise UpstreamInvalidResponseError("Upstream stream ended without a final item")
    return _Usage(
        prompt_tokens=end.prompt_tokens,
        completion_tokens=end.completion_tokens,
        tokens_used=end.tokens_used,
        ttft_seconds=ttft,
    )


# --- statistics -------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of ascending values, interpolating linearly between the two
    closest ranks: numpy's default method, so the numbers match what analysts compute.
    """
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    position = (len(sorted_values) - 1) * q / 100
    lower = math.floor(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    fraction = position - lower
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * fraction


def mean(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("mean of no values")
    return math.fsum(values) / len(values)


def sample_std_dev(values: Sequence[float]) -> float:
    """Sample standard deviation (n - 1); 0 for one value, where the spread is simply unknown."""
    if not values:
        raise ValueError("standard deviation of no values")
    if len(values) == 1:
        return 0.0
    average = mean(values)
    return math.sqrt(math.fsum((value - average) ** 2 for value in values) / (len(values) - 1))


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, DIGITS)


def _mean_or_none(values: Sequence[float]) -> float | None:
    return _rounded(mean(values)) if values else None


def latency_stats(latencies: Sequence[float]) -> LatencyStats:
    if not latencies:
        return LatencyStats()
    ordered = sorted(latencies)

    def at(q: float) -> float | None:
        return _rounded(percentile(ordered, q))

    return LatencyStats(
        avg=_rounded(mean(ordered)),
        min=_rounded(ordered[0]),
        max=_rounded(ordered[-1]),
        std_dev=_rounded(sample_std_dev(ordered)),
        p25=at(25),
        p50=at(50),
        p75=at(75),
        p90=at(90),
        p95=at(95),
        p99=at(99),
    )


def ttft_stats(ttfts: Sequence[float]) -> TtftStats:
    if not ttfts:
        return TtftStats()
    ordered = sorted(ttfts)
    return TtftStats(
        avg=_rounded(mean(ordered)),
        p50=_rounded(percentile(ordered, 50)),
        p95=_rounded(percentile(ordered, 95)),
        p99=_rounded(percentile(ordered, 99)),
    )


def _decode_rate(result: RequestResult) -> float | None:
    """Tokens after the first over the time after the first: generation speed without queueing."""
    if result.ttft_seconds is None or result.completion_tokens < 2:
        return None
    decode_seconds = result.latency_seconds - result.ttft_seconds
    return (result.completion_tokens - 1) / decode_seconds if decode_seconds > 0 else None


def request_stats(results: Sequence[RequestResult], wall_seconds: float) -> RequestStats:
    """Statistics over a group of results; latency, ttft and rates count successes only."""
    succeeded = [result for result in results if result.ok]
    decode_rates = [rate for result in succeeded if (rate := _decode_rate(result)) is not None]
    output_rates = [
        result.completion_tokens / result.latency_seconds
        for result in succeeded
        if result.latency_seconds > 0
    ]
    ttfts = [result.ttft_seconds for result in succeeded if result.ttft_seconds is not None]
    return RequestStats(
        count=len(results),
        ok=len(succeeded),
        failed=len(results) - len(succeeded),
        latency=latency_stats([result.latency_seconds for result in succeeded]),
        ttft=ttft_stats(ttfts),
        tokens_total=sum(result.tokens_used for result in succeeded),
        avg_completion_tokens=_mean_or_none([result.completion_tokens for result in succeeded]),
        output_tokens_per_second=_mean_or_none(output_rates),
        decode_tokens_per_second=_mean_or_none(decode_rates),
        wall_seconds=round(wall_seconds, DIGITS),
        requests_per_second=round(len(results) / wall_seconds, DIGITS) if wall_seconds > 0 else 0.0,
        errors=dict(Counter(result.error_type for result in results if result.error_type)),
    )


def comparison_row(model: str, stats: RequestStats) -> ComparisonRow:
    return ComparisonRow(
        model=model,
        ok=stats.ok,
        failed=stats.failed,
        latency_avg=stats.latency.avg,
        latency_std_dev=stats.latency.std_dev,
        latency_p50=stats.latency.p50,
        latency_p95=stats.latency.p95,
        ttft_p50=stats.ttft.p50,
        output_tokens_per_second=stats.output_tokens_per_second,
    )
