"""Runs as jobs on a Redis queue (JOBS_BACKEND=redis): API replicas admit and enqueue them,
runner processes (`python -m src.runner`, on any machine) take and run them.

The queue is SAQ's: a job holds only the run's id; the plan is in the run store, admitted
with it (redis_store.py), and the key, the upstream and every setting are the runner's own.

A runner shows it is alive with a key per runner and a key per run it hosts, both set to
expire after RUNNER_HEARTBEAT_TIMEOUT_SECONDS and renewed four times within it. Every API
replica and every runner looks, once a second, for running runs that a runner took and whose
key has expired: the runner died (or lost Redis for longer than the timeout), and the run is
recorded failed with the rows the store kept. A process that has itself just lost Redis does
not judge others until it has been back for a whole timeout: their keys expired during the
same outage and they have not had their turn to renew them yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from saq.queue.redis import RedisQueue

from src.config import Settings
from src.schemas.benchmarks import BenchmarkState, BenchmarkStatus
from src.services.base.timing import now
from src.services.benchmarker.load.plan import PlanRecord
from src.services.benchmarker.runs.redis_store import (
    RETRIES,
    RUNNING,
    RedisRunStore,
    answering,
    channel,
    client_options,
    key,
    runner_key,
)
from src.services.benchmarker.runs.store import RunCaps

logger = logging.getLogger(__name__)

QUEUE_NAME = "llm-gateway-benchmarks"
SAQ_JOB_PREFIX = "saq:job:"  # SAQ keeps a queued or running job at <prefix><queue>:<key>
JOB_FUNCTION = "run_benchmark"
REAP_SECONDS = 1.0
# A follower re-reads the run this often even without news: a lost message costs no more.
FOLLOW_SAFETY_SECONDS = 5.0
RECONNECT_SECONDS = 0.5


def saq_queue(settings: Settings) -> RedisQueue:
    client = aioredis.from_url(settings.redis_url, **async_client_options())
    return RedisQueue(client, name=QUEUE_NAME)


def async_client_options() -> dict[str, Any]:
    options = client_options()
    options["retry"] = AsyncRetry(ExponentialBackoff(cap=0.5, base=0.1), RETRIES)
    return options


async def enqueue_run(settings: Settings, state: BenchmarkState, plan: PlanRecord) -> None:
    """Admit the run (atomically, under the caps) with its plan, then queue it for a runner."""
    store = RedisRunStore.of(settings)
    await asyncio.to_thread(store.admit_job, state, RunCaps.of(settings), plan)
    queue = saq_queue(settings)
    try:
        with answering("queueing the run"):
            await queue.enqueue(
                JOB_FUNCTION,
                key=state.id,
                benchmark_id=state.id,
                timeout=0,  # a run ends by itself (MAX_RUN_SECONDS), not by the queue's clock
                retries=1,  # run once: a rerun would pay for every request again
            )
    except BaseException:
        # Not queued, so never run: it must not hold a place under the caps.
        await asyncio.to_thread(_forget_unqueued, store, state.id)
        raise
    finally:
        await queue.disconnect()


def _forget_unqueued(store: RedisRunStore, benchmark_id: str) -> None:
    with contextlib.suppress(redis.RedisError):
        store.redis.hdel(RUNNING, benchmark_id)
        store.redis.delete(key(benchmark_id, "state"), key(benchmark_id, "plan"))


# --- liveness --------------------------------------------------------------------------------


# Claimed and alive at once: a reaper never sees a run taken but not yet shown alive.
_CLAIM = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX') then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1
"""


class Heartbeat:
    """This runner's liveness keys: its own, and one per run it hosts."""

    def __init__(self, store: RedisRunStore, timeout: float) -> None:
        self.store = store
        self.runner_id = uuid.uuid4().hex[:12]
        self.timeout_ms = int(timeout * 1000)
        self.interval = timeout / 4
        self.hosted: set[str] = set()

    def claim(self, benchmark_id: str) -> bool:
        """Take the run; False if another runner took it first."""
        claimed = self.store.redis.eval(
            _CLAIM,
            2,
            key(benchmark_id, "claimed"),
            key(benchmark_id, "alive"),
            self.runner_id,
            self.timeout_ms,
        )
        if claimed:
            self.hosted.add(benchmark_id)
        return bool(claimed)

    def beat(self) -> None:
        pipe = self.store.redis.pipeline()
        pipe.set(runner_key(self.runner_id), b"1", px=self.timeout_ms)
        for benchmark_id in list(self.hosted):
            pipe.set(key(benchmark_id, "alive"), self.runner_id, px=self.timeout_ms)
        pipe.execute()

    def stop(self) -> None:
        with contextlib.suppress(redis.RedisError):
            self.store.redis.delete(runner_key(self.runner_id))

    async def run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.beat)
            except redis.RedisError as exc:
                logger.warning("RUNNER HEARTBEAT FAILING | %s", type(exc).__name__)
            await asyncio.sleep(self.interval)


class Reaper:
    """Finds runs whose runner stopped showing it is alive, and records them failed."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = RedisRunStore.of(settings)
        self.timeout = settings.runner_heartbeat_timeout_seconds
        self._connected_since: float | None = None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(REAP_SECONDS)
            try:
                dead = await asyncio.to_thread(self.dead_runs)
            except redis.RedisError:
                self._connected_since = None
                continue
            try:
                unqueued = await asyncio.to_thread(self.unqueued_runs)
            except redis.RedisError:
                unqueued = []
            for benchmark_id, reap in [
                *((found, self.reap) for found in dead),
                *((found, self.reap_unqueued) for found in unqueued),
            ]:
                try:
                    await asyncio.to_thread(reap, benchmark_id)
                except Exception:
                    logger.exception("BENCHMARK REAPER ERROR | id=%s", benchmark_id)

    def _running_ids(self) -> list[str]:
        return [raw.decode() for raw in self.store.redis.hkeys(RUNNING)]

    def _claimed_and(
        self, ids: list[str], other: Callable[[str], str]
    ) -> list[tuple[str, bool, bool]]:
        """Per run: whether a runner claimed it and whether its `other` key exists, asked in
        one round trip."""
        pipe = self.store.redis.pipeline()
        for benchmark_id in ids:
            pipe.exists(key(benchmark_id, "claimed"))
            pipe.exists(other(benchmark_id))
        found = pipe.execute()
        return list(zip(ids, found[::2], found[1::2], strict=True))

    def dead_runs(self) -> list[str]:
        ids = self._running_ids()
        moment = now()
        if self._connected_since is None:
            self._connected_since = moment
        if moment - self._connected_since < self.timeout or not ids:
            return []
        return [
            benchmark_id
            for benchmark_id, claimed, alive in self._claimed_and(
                ids, lambda benchmark_id: key(benchmark_id, "alive")
            )
            if claimed and not alive
        ]

    def unqueued_runs(self) -> list[str]:
        """Runs admitted more than a timeout ago that no runner took and the queue does not
        hold: the replica that admitted them stopped before it queued them."""
        ids = self._running_ids()
        if not ids:
            return []
        waiting = [
            benchmark_id
            for benchmark_id, claimed, queued in self._claimed_and(
                ids, lambda benchmark_id: f"{SAQ_JOB_PREFIX}{QUEUE_NAME}:{benchmark_id}"
            )
            if not claimed and not queued
        ]
        cutoff = datetime.now(UTC) - timedelta(seconds=self.timeout)
        return [
            benchmark_id
            for benchmark_id in waiting
            if (state := self.store.read_state(benchmark_id)) is None or state.started_at < cutoff
        ]

    def reap_unqueued(self, benchmark_id: str) -> None:
        if self.store.redis.set(key(benchmark_id, "claimed"), b"never queued", nx=True):
            cause = "the run was never queued: the replica that admitted it stopped first"
            end_run(self.settings, self.store, benchmark_id, "failed", cause)

    def reap(self, benchmark_id: str) -> None:
        # One reaper per run, whichever replica or runner noticed it first.
        if not self.store.redis.set(key(benchmark_id, "reaping"), b"1", nx=True, ex=60):
            return
        cause = (
            "the benchmark runner stopped showing it is alive (killed, crashed, or cut off "
            f"from Redis for over {self.timeout:g}s)"
        )
        end_run(self.settings, self.store, benchmark_id, "failed", cause)


def end_run(
    settings: Settings,
    store: RedisRunStore,
    benchmark_id: str,
    status: BenchmarkStatus,
    cause: str | None,
) -> None:
    """Record a run that no runner will finish as ended, with the rows Redis kept."""
    plan = store.load_plan(benchmark_id)
    if plan is None:  # admitted without a plan: nothing to sum up, only the place to free
        store.redis.hdel(RUNNING, benchmark_id)
        return
    # Imported here: the launcher imports this module.
    from src.services.benchmarker.runs.launcher import record_lost_run

    record_lost_run(settings, benchmark_id, plan.plan(settings), cause, store, status)


def cancel_unclaimed(settings: Settings, benchmark_id: str) -> None:
    """A cancelled run still waiting in the queue ends at once: taking its claim first keeps
    every runner off it."""
    store = RedisRunStore.of(settings)
    with answering("cancelling the run"):
        if store.redis.set(key(benchmark_id, "claimed"), b"cancelled", nx=True):
            end_run(settings, store, benchmark_id, "cancelled", None)


@asynccontextmanager
async def watching_runners(settings: Settings) -> AsyncIterator[None]:
    """A reaper (see Reaper) for as long as the block runs."""
    task = asyncio.create_task(Reaper(settings).run(), name="runner reaper")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# --- following a run -------------------------------------------------------------------------


async def run_changes(settings: Settings, benchmark_id: str) -> AsyncGenerator[None]:
    """A tick each time the run's state may have changed: on each message of its channel, at
    least every FOLLOW_SAFETY_SECONDS, and once more as soon as a lost Redis is back."""
    # No read timeout: this connection waits for messages.
    client = aioredis.from_url(
        settings.redis_url, **{**async_client_options(), "socket_timeout": None}
    )
    try:
        while True:
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel(benchmark_id))
                yield  # what changed before the subscription
                while True:
                    await pubsub.get_message(timeout=FOLLOW_SAFETY_SECONDS)
                    yield
            except (redis.ConnectionError, redis.TimeoutError):
                await asyncio.sleep(RECONNECT_SECONDS)
            finally:
                with contextlib.suppress(redis.RedisError, OSError):
                    await pubsub.aclose()
    finally:
        await client.aclose()


# --- health ----------------------------------------------------------------------------------


async def redis_health(settings: Settings) -> tuple[str, int | None]:
    """Whether Redis answers ("ok" or "unreachable"), and how many runners are alive."""
    store = RedisRunStore.of(settings)
    try:
        runners = await asyncio.to_thread(store.live_runners)
    except redis.RedisError:
        return "unreachable", None
    return "ok", runners
