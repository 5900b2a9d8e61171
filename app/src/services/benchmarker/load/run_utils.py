"""Generating load: how a benchmark's requests are sent (closed or open loop), and one
measured request. Nothing here keeps a run or writes a file (runs/, results/ do)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from src.schemas.benchmarks import CostSource, RequestRecord
from src.schemas.prompts import GenerationResult, SamplingParams
from src.services.base.error_status import status_for
from src.services.base.exceptions import ServiceError, UpstreamInvalidResponseError
from src.services.base.timing import Timing, now
from src.services.benchmarker.load.plan import BenchmarkJob, BenchmarkPlan
from src.services.openrouter.catalog import TokenPrices
from src.services.openrouter.client import OpenRouterClient
from src.services.openrouter.schemas import ChatCall, Prompt, pinned

logger = logging.getLogger(__name__)

OK_STATUS = 200

# One job, and the moment it was scheduled to be sent (None: closed loop, no schedule).
Executor = Callable[[BenchmarkJob, float | None], Awaitable[RequestRecord]]
OnRecord = Callable[[RequestRecord], None]


async def run_closed_loop(
    jobs: Iterable[BenchmarkJob], *, concurrency: int, execute: Executor, on_record: OnRecord
) -> None:
    """Run every job with at most `concurrency` in flight, each worker starting its next job
    when its last one ends.

    A fixed pool of workers pulls from one shared iterator: no task per job is created up front.
    Cancelling the caller cancels the in-flight jobs and starts no new one.
    """
    pending = iter(jobs)

    async def worker() -> None:
        # next() never awaits, so two workers can never take the same job.
        for job in pending:
            on_record(await execute(job, None))
            # Let the other workers run before this one starts its next request: recording is
            # cheap, but a burst of answers should not queue behind one worker's next send.
            await asyncio.sleep(0)

    await _all_or_none([asyncio.create_task(worker()) for _ in range(concurrency)])


async def run_open_loop(
    jobs: Iterable[BenchmarkJob],
    offsets: Iterator[float],
    *,
    concurrency: int,
    execute: Executor,
    on_record: OnRecord,
    duration: float | None = None,
    start: float | None = None,
) -> float | None:
    """Send each job at its scheduled offset from the start, whether or not earlier ones have
    finished; a job whose time has come waits only for a free slot when `concurrency` are in
    flight, and that wait shows as its send lag. Returns the offset of the last send.

    `start`: a `now()` reading that processes sharing one schedule agree on; default: now.
    """
    start = now() if start is None else start
    slots = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()
    last_sent: float | None = None

    async def one(job: BenchmarkJob, scheduled: float) -> None:
        try:
            on_record(await execute(job, scheduled))
        finally:
            slots.release()

    try:
        for job, offset in zip(jobs, offsets, strict=False):
            if duration is not None and offset > duration:
                break
            delay = start + offset - now()
            if delay > 0:
                await asyncio.sleep(delay)
            await slots.acquire()
            last_sent = now() - start
            task = asyncio.create_task(one(job, start + offset))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await _all_or_none(list(tasks))
    finally:
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return last_sent


async def _all_or_none(tasks: list[asyncio.Task[None]]) -> None:
    """Wait for every task; on the first failure or a cancellation, cancel the rest."""
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def until(jobs: Iterable[BenchmarkJob], deadline: float | None) -> Iterator[BenchmarkJob]:
    """The jobs, until `deadline` (a `now()` reading) has passed."""
    for job in jobs:
        if deadline is not None and now() >= deadline:
            return
        yield job


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What every request of a run shares."""

    client: OpenRouterClient
    plan: BenchmarkPlan
    redact: Callable[[str], str]
    # The series (model, pinned provider) whose first request has started.
    started_series: set[tuple[str, str | None]] = field(default_factory=set)


def sends_turns(job: BenchmarkJob, turns: int) -> bool:
    """Whether the job is a conversation of more than one request."""
    return job.conversation is not None and min(turns, len(job.conversation.turns)) > 1


async def execute_conversation(
    context: RequestContext, job: BenchmarkJob, scheduled: float | None, on_record: OnRecord
) -> RequestRecord:
    """The conversation's turns in order, each carrying the history and the model's real
    answers so far; every turn but the last is recorded here, the last is returned. A failed
    turn ends the conversation: the next one would have no real answer to carry."""
    conversation = job.conversation
    assert conversation is not None
    count = min(context.plan.parameters.turns, len(conversation.turns))
    messages = [message.model_dump() for message in conversation.history]
    for turn, text in enumerate(conversation.turns[:count], start=1):
        messages.append({"role": "user", "content": text})
        record = await execute_request(
            context,
            job,
            scheduled if turn == 1 else None,
            messages=list(messages),
            turn=turn,
            keep_text=turn < count,
        )
        if turn == count or not record.ok:
            return record
        messages.append({"role": "assistant", "content": record.text})
        on_record(record.model_copy(update={"text": ""}))
    raise AssertionError("a conversation has at least one turn")


def _log_start(context: RequestContext, job: BenchmarkJob) -> None:
    """At INFO for a series' first request, at DEBUG for the others: a line per request would
    flood a long run's log."""
    series = (job.model, job.provider)
    level = logging.DEBUG if series in context.started_series else logging.INFO
    context.started_series.add(series)
    logger.log(level, "STARTED SINGLE PROMPT IN BENCHMARK MODEL: %s, RUN: %d", job.model, job.run)


async def execute_request(
    context: RequestContext,
    job: BenchmarkJob,
    scheduled: float | None,
    *,
    messages: Sequence[Mapping[str, str]] | None = None,
    turn: int = 1,
    keep_text: bool = False,
) -> RequestRecord:
    """One measured request: the job's prompt, or `messages` when given. A failure is a
    record, never an exception: the run goes on. The answer's text is kept only if asked.

    Its numbers are the client's wire timings; nothing here reads the clock.
    """
    _log_start(context, job)
    run_parameters = context.plan.parameters
    parameters = _sampling(run_parameters, job)
    prompt = _prompt(job) if messages is None else messages
    timing = Timing(content_arrivals=[] if run_parameters.stream else None)
    call = ChatCall(
        job.model, prompt, parameters, pinned(job.provider, run_parameters.provider_sort)
    )
    try:
        if run_parameters.stream:
            result = await _stream_once(context.client, call, timing, keep_text)
        else:
            result = await context.client.complete(call, timing)
    except ServiceError as error:
        logger.warning(
            "BENCHMARK REQUEST FAILED | model=%s | run=%d | %s", job.model, job.run, error.detail
        )
        return RequestRecord.model_construct(
            **_job_fields(job, timing, scheduled, turn),
            text="",
            provider=None,
            generation_id=None,
            finish_reason=None,
            prompt_tokens=0,
            completion_tokens=0,
            tokens_used=0,
            latency_seconds=timing.latency,
            ttft_seconds=None,
            attempts=max(timing.attempts, 1),
            total_seconds=timing.total,
            status=status_for(error),
            error_type=type(error).__name__,
            error=context.redact(error.detail),
            itl=[],
            cost=None,
            cost_source=None,
        )
    cost, source = cost_of(result, context.plan.prices.get(job.model))
    arrivals = timing.content_arrivals or []
    # The job's fields come last: the model asked for groups the statistics, where the
    # upstream may report a more specific one (a dated version).
    fields: dict[str, Any] = {
        **result.__dict__,
        **_job_fields(job, timing, scheduled, turn),
        "text": result.text if keep_text else "",
        "cost": cost,
        "cost_source": source,
    }
    return RequestRecord.model_construct(
        **fields,
        status=OK_STATUS,
        error_type=None,
        error=None,
        itl=[later - earlier for earlier, later in zip(arrivals, arrivals[1:], strict=False)],
    )


def _sampling(parameters: SamplingParams, job: BenchmarkJob) -> SamplingParams:
    """The run's sampling, with the job's own max_tokens (output_tokens, a dataset's line)."""
    wanted = None if job.conversation is None else job.conversation.max_tokens
    if wanted is None or wanted == parameters.max_tokens:
        return parameters
    return parameters.model_copy(update={"max_tokens": wanted})


def _prompt(job: BenchmarkJob) -> Prompt:
    """A bare prompt is sent as one user message; a dataset's history goes before it."""
    if job.conversation is None or not job.conversation.history:
        return job.prompt
    history = [message.model_dump() for message in job.conversation.history]
    return [*history, {"role": "user", "content": job.prompt}]


def _job_fields(
    job: BenchmarkJob, timing: Timing, scheduled: float | None, turn: int = 1
) -> dict[str, Any]:
    prompt = job.prompt
    if job.conversation is not None and turn > 1:
        prompt = job.conversation.turns[turn - 1]
    return {
        "model": job.model,
        "prompt_index": job.prompt_index,
        "prompt": prompt,
        "run": job.run,
        "turn": turn,
        "warmup": job.warmup,
        "pinned_provider": job.provider,
        "send_lag_seconds": None if scheduled is None else max(timing.began - scheduled, 0.0),
        "scheduled_latency_seconds": None if scheduled is None else timing.ended - scheduled,
    }


def cost_of(
    result: GenerationResult, prices: TokenPrices | None
) -> tuple[float | None, CostSource | None]:
    """The upstream's own charge when it reports one, else tokens x the model's prices;
    unknown (None) when neither is known: never a made-up 0. Token counts that were not
    reported, or not believable, price nothing."""
    if result.cost is not None:
        return result.cost, "upstream"
    if prices is not None and result.usage_problem is None:
        return prices.cost(result.prompt_tokens, result.completion_tokens), "pricing"
    return None, None


async def _stream_once(
    client: OpenRouterClient, call: ChatCall, timing: Timing, keep_text: bool
) -> GenerationResult:
    result: GenerationResult | None = None
    text: list[str] = []
    items = client.stream(call, timing)
    try:
        async for item in items:
            if isinstance(item, GenerationResult):
                result = item
            elif keep_text:
                text.append(item.text)
    finally:
        await items.aclose()
    if result is None:
        raise UpstreamInvalidResponseError("Upstream stream ended without a final item")
    return result.model_copy(update={"text": "".join(text)}) if keep_text else result
