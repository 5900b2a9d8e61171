"""The gateway's Prometheus metrics: every instrument, and the scrape's text.

With PROMETHEUS_MULTIPROC_DIR set before this module is first imported (serve.py sets it for
every `make run`), each process writes its values to files there and a scrape adds up every
worker's, and every benchmark runner's. Without it (an app built in-process, as tests do) the
values live in this process alone.

The request-level instruments are recorded where the request log line is written
(api/gate/request_log.py): that line is the one place that knows a request's outcome. They are
counted in plain dicts on the event loop and written to prometheus-client's values about once
a second (`flushing`) and before each scrape: in multiprocess mode each `inc()` or `observe()`
takes a lock and writes a file per value, several per request.
"""

from __future__ import annotations

import asyncio
import math
import os
from bisect import bisect_left
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from src.config import MULTIPROC_ENV
from src.services.base.timing import UpstreamCall
from src.tasks import cancel_and_wait

METRICS_PATH = "/metrics"
CONTENT_TYPE = CONTENT_TYPE_LATEST
# A route label for requests no route answered: refused at the gate, or no such path. The path
# itself is the caller's to choose, so it would make a label without bound.
NO_ROUTE = "-"
# A model label for a model this process has not seen answered: a caller's typo or a made-up
# id is not a new series.
OTHER = "other"
# At most this many models get their own series per process; the rest share OTHER.
MAX_MODEL_LABELS = 500
MAX_LABEL_CHARS = 100
# Requests are counted in plain dicts and written to prometheus-client's values this often (and
# before each scrape this process answers): another worker's latest second may be missing from
# a scrape, never lost.
FLUSH_SECONDS = 1.0

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_WAIT_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60)

REQUESTS = Counter(
    "llm_gateway_requests",
    "HTTP requests answered, by route, method, status, model and provider",
    ["route", "method", "status", "model", "provider"],
)
REQUEST_SECONDS = Histogram(
    "llm_gateway_request_duration_seconds",
    "Time from a request's arrival to its answer's last byte, by route",
    ["route"],
    buckets=_LATENCY_BUCKETS,
)


def _upstream_latency(name: str, documentation: str) -> Histogram:
    """A histogram of upstream times, a series per model and provider."""
    return Histogram(name, documentation, ["model", "provider"], buckets=_LATENCY_BUCKETS)


TTFT_SECONDS = _upstream_latency(
    "llm_gateway_ttft_seconds",
    "Streamed requests: upstream time to first token (request sent to first content)",
)
UPSTREAM_SECONDS = _upstream_latency(
    "llm_gateway_upstream_latency_seconds",
    "The upstream's answer, final attempt: request sent to last byte received",
)
IN_FLIGHT = Gauge(
    "llm_gateway_requests_in_flight",
    "HTTP requests being answered",
    multiprocess_mode="livesum",
)
RETRIES = Counter(
    "llm_gateway_upstream_retries",
    "Upstream attempts that failed and were tried again, by what failed",
    ["reason"],
)
RETRY_WAIT_SECONDS = Histogram(
    "llm_gateway_upstream_retry_wait_seconds",
    "The wait before each retry of an upstream call",
    buckets=_WAIT_BUCKETS,
)
UPSTREAM_ERRORS = Counter(
    "llm_gateway_upstream_errors",
    "Requests that ended in an upstream error (mid-stream failures included), by type",
    ["type"],
)
BENCHMARKS_ADMITTED = Counter("llm_gateway_benchmarks_admitted", "Benchmark runs admitted")
BENCHMARKS_RUNNING = Gauge(
    "llm_gateway_benchmarks_running",
    "Benchmark runs hosted by the service that have not ended",
    multiprocess_mode="livesum",
)
BENCHMARKS_REFUSED = Counter(
    "llm_gateway_benchmarks_refused",
    "Benchmark runs refused at admission (the caps on running runs and requests in flight, "
    "or a full disk), by the error answered",
    ["reason"],
)


class _Tally:
    """One histogram child's observations since the last flush, bucketed as it buckets them
    (the first upper bound at or above the value)."""

    __slots__ = ("counts", "total")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * buckets
        self.total = 0.0


class BatchedCounter:
    """A labelled counter's increments, added up in a dict and written at the next flush."""

    __slots__ = ("_labels", "_pending")

    def __init__(self, counter: Counter) -> None:
        self._labels = counter.labels
        self._pending: dict[tuple[str, ...], int] = {}

    def inc(self, *values: str) -> None:
        self._pending[values] = self._pending.get(values, 0) + 1

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for values, count in pending.items():
            self._labels(*values).inc(count)


class BatchedHistogram:
    """A labelled histogram's observations, bucketed in a dict and written at the next flush:
    one `observe()` costs a lock and a file write per bucket and sum in multiprocess mode."""

    __slots__ = ("_bounds", "_labels", "_pending")

    def __init__(self, histogram: Histogram, buckets: tuple[float, ...]) -> None:
        self._labels = histogram.labels
        self._bounds = (*buckets, math.inf)
        self._pending: dict[tuple[str, ...], _Tally] = {}

    def observe(self, value: float, *values: str) -> None:
        tally = self._pending.get(values)
        if tally is None:
            tally = self._pending[values] = _Tally(len(self._bounds))
        tally.counts[bisect_left(self._bounds, value)] += 1
        tally.total += value

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for values, tally in pending.items():
            # prometheus-client's own per-bucket values (tests/test_library_internals.py).
            child = self._labels(*values)
            child._sum.inc(tally.total)
            for bucket, count in zip(child._buckets, tally.counts, strict=True):
                if count:
                    bucket.inc(count)


_requests = BatchedCounter(REQUESTS)
_request_seconds = BatchedHistogram(REQUEST_SECONDS, _LATENCY_BUCKETS)
_ttft_seconds = BatchedHistogram(TTFT_SECONDS, _LATENCY_BUCKETS)
_upstream_seconds = BatchedHistogram(UPSTREAM_SECONDS, _LATENCY_BUCKETS)
_known_models: set[str] = set()
_in_flight = 0


def request_started() -> None:
    global _in_flight
    _in_flight += 1


def request_ended() -> None:
    global _in_flight
    _in_flight -= 1


def flush() -> None:
    """Write what the requests counted since the last flush where a scrape reads it. Called on
    the event loop: every FLUSH_SECONDS, before this process answers a scrape, at shutdown."""
    for batched in (_requests, _request_seconds, _ttft_seconds, _upstream_seconds):
        batched.flush()
    IN_FLIGHT.set(_in_flight)


@asynccontextmanager
async def flushing(seconds: float = FLUSH_SECONDS) -> AsyncIterator[None]:
    """Flush every `seconds` while the app runs, and once more as it stops."""

    async def every() -> None:
        while True:
            await asyncio.sleep(seconds)
            flush()

    task = asyncio.create_task(every(), name="metrics flush")
    try:
        yield
    finally:
        await cancel_and_wait(task)
        flush()


def model_label(model: str | None, answered: bool) -> str:
    """The model as a label: its own once the upstream has answered for it, OTHER before."""
    if not model:
        return NO_ROUTE
    if model in _known_models:
        return model
    if answered and len(_known_models) < MAX_MODEL_LABELS and len(model) <= MAX_LABEL_CHARS:
        _known_models.add(model)
        return model
    return OTHER


def provider_label(provider: str | None) -> str:
    """The provider as a label, cut short: the upstream names it, so its length is not ours."""
    return (provider or NO_ROUTE)[:MAX_LABEL_CHARS]


def record_request(
    route: str, method: str, status: int, seconds: float, call: UpstreamCall | None
) -> None:
    """One answered request, with the upstream call its route made, if it made one."""
    model, provider = (call.model, call.provider) if call else (None, None)
    labels = (model_label(model, status < 400), provider_label(provider))
    _requests.inc(route, method, str(status), *labels)
    _request_seconds.observe(seconds, route)


def record_upstream(call: UpstreamCall) -> None:
    """An upstream call's final attempt, for a model the upstream answered for."""
    labels = (model_label(call.model, True), provider_label(call.provider))
    latency, ttft = call.timing.latency, call.timing.ttft
    if latency is not None:
        _upstream_seconds.observe(latency, *labels)
    if ttft is not None:
        _ttft_seconds.observe(ttft, *labels)


def record_upstream_error(error: BaseException) -> None:
    UPSTREAM_ERRORS.labels(type(error).__name__).inc()


def record_retry(reason: str, wait_seconds: float) -> None:
    """Written at once: benchmark runner processes retry too, and flush nothing."""
    RETRIES.labels(reason).inc()
    RETRY_WAIT_SECONDS.observe(wait_seconds)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def exposition() -> bytes:
    """The scrape's body: every process's values in multiprocess mode. Reads files: call it
    in a thread, not on the event loop."""
    if multiprocess_dir() is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def forget_this_process() -> None:
    """At a worker's shutdown: its gauges (requests in flight, running runs) stop counting.
    Its counters stay in the totals, as a restarted worker's must."""
    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
