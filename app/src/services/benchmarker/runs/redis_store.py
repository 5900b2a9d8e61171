"""The Redis implementation of the run store (store.py), for JOBS_BACKEND=redis: every API
replica and every runner process, on any machine, shares the runs through REDIS_URL alone.

Per run: its state record (rewritten as requests finish, and published on the run's channel
so followers need not poll), its summary (set once), its rows (a stream, one CSV row an
entry, so any replica serves the CSV and a dead runner's rows are kept), its plan (what a
runner needs to run it) and its cancel mark. Admission is one Lua script over the hash of
running runs: atomic for every replica. Finished runs expire after BENCHMARKS_KEEP_DAYS.

Every method is synchronous, as the protocol wants (callers use `asyncio.to_thread`). A Redis
that cannot be reached is a 503 (JobsBackendUnavailableError) where a caller waits for an
answer, and an OSError where a run writes, so a run pauses its sends as on a failing disk.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import orjson
import redis
from pydantic import BaseModel, ValidationError
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from src.config import Settings
from src.schemas.benchmarks import (
    FINISHED,
    BenchmarkListItem,
    BenchmarkState,
    BenchmarkSummary,
    RequestRecord,
)
from src.services.base.exceptions import (
    JobsBackendUnavailableError,
    NotFoundError,
)
from src.services.benchmarker.load.plan import PlanRecord
from src.services.benchmarker.results.csv_writer import encode_records, parse_records
from src.services.benchmarker.results.file_utils import result_paths
from src.services.benchmarker.runs.disk import StoreUnreachableError
from src.services.benchmarker.runs.file_store import (
    _item,
    _Listed,
    check_room,
    write_summary,
)
from src.services.benchmarker.runs.owners import EVERYONE, Caller
from src.services.benchmarker.runs.store import RunCaps

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

PREFIX = "llm-gateway"
RUNNING = f"{PREFIX}:running"  # hash: id -> concurrency, the runs admission counts
RUNS = f"{PREFIX}:runs"  # sorted set: id by start time, for listing and retention
RUNNER_KEYS = f"{PREFIX}:runner:*"
# Short: a Redis that stops answering (paused, cut off) is noticed, not waited for.
SOCKET_TIMEOUT_SECONDS = 2.0
RETRIES = 1
_UNREACHABLE = (redis.ConnectionError, redis.TimeoutError)

# Counts the running runs and admits the new one in one step: no replica can slip in between.
_ADMIT = """
local running = redis.call('HGETALL', KEYS[1])
local inflight = 0
for i = 2, #running, 2 do inflight = inflight + tonumber(running[i]) end
local count = #running / 2
if count >= tonumber(ARGV[3]) then return {1, count, inflight} end
if inflight + tonumber(ARGV[2]) > tonumber(ARGV[4]) then return {2, count, inflight} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[5])
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[1])
if ARGV[7] ~= '' then redis.call('SET', KEYS[4], ARGV[7]) end
return {0, count, inflight}
"""


# A run's state record, unless the run has ended and this one says it runs.
_WRITE_STATE = """
if ARGV[2] == '0' and redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
if ARGV[2] == '1' then redis.call('SET', KEYS[2], '1') end
return 1
"""


def key(benchmark_id: str, part: str) -> str:
    return f"{PREFIX}:run:{benchmark_id}:{part}"


def channel(benchmark_id: str) -> str:
    """Where a run's state changes are announced."""
    return key(benchmark_id, "events")


def runner_key(runner_id: str) -> str:
    return f"{PREFIX}:runner:{runner_id}"


_RUN_PARTS = (
    "state",
    "ended",
    "summary",
    "rows",
    "plan",
    "cancel",
    "claimed",
    "alive",
    "reaping",
)


@lru_cache(maxsize=8)
def redis_client(url: str) -> Any:
    """One pool per process and URL: the store is made per call, its connections are not.

    Typed Any: redis-py types every answer as bytes or str, and these are always bytes."""
    return redis.Redis.from_url(url, **client_options())


def client_options() -> dict[str, Any]:
    """Short timeouts and a single quick retry (a dropped connection), for every client: a
    Redis that went away is said at once, and a runner's heartbeat cannot hang for longer
    than its timeout."""
    return {
        "socket_timeout": SOCKET_TIMEOUT_SECONDS,
        "socket_connect_timeout": SOCKET_TIMEOUT_SECONDS,
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.1), RETRIES),
    }


class RedisUnreachableError(StoreUnreachableError):
    """Redis did not answer a run's write: retried like a failing disk write (disk.py)."""


@contextmanager
def answering(doing: str) -> Iterator[None]:
    """A Redis that cannot be reached, said as a 503 to whoever waits for the answer."""
    try:
        yield
    except _UNREACHABLE as exc:
        logger.warning("REDIS UNREACHABLE | %s | %s", doing, type(exc).__name__)
        raise JobsBackendUnavailableError(
            f"The run store (Redis) cannot be reached ({doing}); try again shortly."
        ) from exc


@contextmanager
def writing() -> Iterator[None]:
    """What a run writes: the caller (disk.py) says what, and retries."""
    try:
        yield
    except _UNREACHABLE as exc:
        raise RedisUnreachableError(
            f"the run store (Redis) cannot be reached ({type(exc).__name__})"
        ) from exc


def _dump_state(state: BenchmarkState) -> bytes:
    record = state.model_dump(mode="json", by_alias=True)
    record["owner"] = state.owner  # left out of every answer, but this is where it is kept
    return orjson.dumps(record)


def _parsed(model: type[M], raw: bytes | None, unreadable: str | None = None) -> M | None:
    """The record in `raw`; None when there is none or it does not parse (then logged as
    `unreadable`, when given)."""
    if raw is None:
        return None
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        if unreadable is not None:
            logger.warning("%s: %s", unreadable, exc)
        return None


def _load_state(raw: bytes | None) -> BenchmarkState | None:
    return _parsed(BenchmarkState, raw)


class RedisRunStore:
    """The runs in Redis (a `RunStore`, store.py). `directory`: this process's BENCHMARKS_DIR,
    where a runner also writes each summary it saves."""

    def __init__(self, url: str, directory: Path, keep_days: float | None = None) -> None:
        self.redis = redis_client(url)
        self.directory = directory
        self.keep_days = keep_days

    @classmethod
    def of(cls, settings: Settings) -> RedisRunStore:
        return cls(settings.redis_url, settings.benchmarks_dir, settings.benchmarks_keep_days)

    # --- admission -----------------------------------------------------------------------------

    def admit(
        self,
        state: BenchmarkState,
        caps: RunCaps,
        live: Mapping[str, int] | None = None,  # noqa: ARG002 - see below
    ) -> None:
        """`live` is for runners hosted by the admitting process: here runners are elsewhere,
        and every run counts from the hash of running runs alone."""
        self.admit_job(state, caps, None)

    def admit_job(self, state: BenchmarkState, caps: RunCaps, plan: PlanRecord | None) -> None:
        """Record the run as running, with the plan a runner will take it from, if the caps
        allow it (CapacityError if not), atomically for every replica."""
        started = state.started_at.timestamp()
        with answering("recording a new run"):
            if caps.keep_days is not None:
                self.prune(caps.keep_days)
            refused, count, in_flight = self.redis.eval(
                _ADMIT,
                4,
                RUNNING,
                key(state.id, "state"),
                RUNS,
                key(state.id, "plan"),
                state.id,
                state.parameters.peak_concurrency,
                caps.max_running,
                caps.max_in_flight,
                _dump_state(state),
                started,
                b"" if plan is None else plan.model_dump_json().encode(),
            )
        if int(refused):
            # The script refused by the same rule, on the counts it answers with.
            check_room(int(count), int(in_flight), state.parameters.peak_concurrency, caps)

    def check_capacity(
        self,
        concurrency: int,
        caps: RunCaps,
        live: Mapping[str, int] | None = None,  # noqa: ARG002 - as in admit
    ) -> None:
        with answering("counting the running runs"):
            running = self.redis.hvals(RUNNING)
        check_room(len(running), sum(int(value) for value in running), concurrency, caps)

    def prune(self, keep_days: float) -> int:
        """Forget finished runs that started more than `keep_days` days ago (their keys expire
        by themselves; this keeps the listing's index from growing)."""
        cutoff = (datetime.now(UTC) - timedelta(days=keep_days)).timestamp()
        old = [raw.decode() for raw in self.redis.zrangebyscore(RUNS, "-inf", cutoff)]
        running = {raw.decode() for raw in self.redis.hkeys(RUNNING)} if old else set()
        gone = [benchmark_id for benchmark_id in old if benchmark_id not in running]
        if gone:
            pipe = self.redis.pipeline()
            pipe.zrem(RUNS, *gone)
            for benchmark_id in gone:
                pipe.delete(*(key(benchmark_id, part) for part in _RUN_PARTS))
            pipe.execute()
            logger.info("BENCHMARKS PRUNED | %d runs older than %g days", len(gone), keep_days)
        return len(gone)

    # --- a run's records -----------------------------------------------------------------------

    def write_state(self, benchmark_id: str, state: BenchmarkState) -> None:
        """Replaced whole, and announced; a final state frees the run's place under the caps
        and starts the countdown of its retention, and is never replaced by a running one (a
        progress write a retry sends again after the end)."""
        final = state.status in FINISHED
        pipe = self.redis.pipeline()
        pipe.eval(
            _WRITE_STATE,
            2,
            key(benchmark_id, "state"),
            key(benchmark_id, "ended"),
            _dump_state(state),
            int(final),
        )
        if final:
            pipe.hdel(RUNNING, benchmark_id)
            if self.keep_days is not None:
                seconds = int(self.keep_days * 86400)
                for part in _RUN_PARTS:
                    pipe.expire(key(benchmark_id, part), seconds)
        pipe.publish(channel(benchmark_id), state.status)
        with writing():
            pipe.execute()

    def read_state(self, benchmark_id: str) -> BenchmarkState | None:
        with answering("reading a run"):
            return _load_state(self.redis.get(key(benchmark_id, "state")))

    def save_summary(self, benchmark_id: str, summary: BenchmarkSummary) -> None:
        """Set once (an existing summary is kept); the runner keeps a copy in its own
        BENCHMARKS_DIR, which nobody else needs."""
        data = summary.model_dump_json(by_alias=True, indent=2)
        with writing():
            self.redis.set(key(benchmark_id, "summary"), data, nx=True)
        try:
            write_summary(result_paths(self.directory, benchmark_id).json, summary)
        except OSError as exc:  # FileExistsError included: the copy is there already
            logger.debug("Summary copy not written to BENCHMARKS_DIR: %s", exc)

    def has_summary(self, benchmark_id: str) -> bool:
        with answering("reading a run"):
            return bool(self.redis.exists(key(benchmark_id, "summary")))

    def load_summary(self, benchmark_id: str) -> BenchmarkSummary:
        with answering("reading a run"):
            raw = self.redis.get(key(benchmark_id, "summary"))
        if raw is None:
            raise NotFoundError(f"No benchmark with id '{benchmark_id}'.")
        return BenchmarkSummary.model_validate_json(raw)

    def summary_json(self, benchmark_id: str) -> bytes | None:
        with answering("reading a run"):
            raw = self.redis.get(key(benchmark_id, "summary"))
        return None if raw is None else bytes(raw)

    def current_view(self, benchmark_id: str) -> BenchmarkSummary | BenchmarkState:
        """No staleness rule here, unlike the files: a queued run waits for a runner without
        writing, and a runner's death is found by its heartbeat (redis_runners.py)."""
        with answering("reading a run"):
            summary, state = self.redis.mget(
                key(benchmark_id, "summary"), key(benchmark_id, "state")
            )
        if summary is not None:
            return BenchmarkSummary.model_validate_json(summary)
        view = _load_state(state)
        if view is None:
            raise NotFoundError(f"No benchmark with id '{benchmark_id}'.")
        return view

    def check_access(self, benchmark_id: str, caller: Caller) -> None:
        if caller.sees_all:
            return
        state = self.read_state(benchmark_id)
        if state is None or not caller.may_see(state.owner):
            raise NotFoundError(f"No benchmark with id '{benchmark_id}'.")

    def list_runs(self, limit: int, caller: Caller = EVERYONE) -> list[BenchmarkListItem]:
        items: list[BenchmarkListItem] = []
        start, batch = 0, max(limit, 50)
        with answering("listing runs"):
            while len(items) < limit:
                ids = [raw.decode() for raw in self.redis.zrevrange(RUNS, start, start + batch - 1)]
                if not ids:
                    break
                records = self.redis.mget([key(benchmark_id, "state") for benchmark_id in ids])
                for raw in records:
                    listed = _listed(raw)
                    if listed is not None and caller.may_see(listed.owner):
                        items.append(_item(listed))
                start += batch
        items.sort(key=lambda item: (item.started_at, item.id), reverse=True)
        return items[:limit]

    def request_cancel(self, benchmark_id: str) -> None:
        """A message any replica can send; the runner reads the mark at its next look."""
        with answering("asking the run to stop"):
            pipe = self.redis.pipeline()
            pipe.set(key(benchmark_id, "cancel"), b"1")
            pipe.publish(channel(benchmark_id), b"cancel")
            pipe.execute()

    def is_cancel_requested(self, benchmark_id: str) -> bool:
        """False while Redis cannot be reached: the run's own writes notice the outage, and
        pause the run (execution.py) until it ends."""
        try:
            return bool(self.redis.exists(key(benchmark_id, "cancel")))
        except _UNREACHABLE:
            return False

    def clear_cancel(self, benchmark_id: str) -> None:
        with writing():
            self.redis.delete(key(benchmark_id, "cancel"))

    # --- rows ----------------------------------------------------------------------------------

    def add_rows(self, benchmark_id: str, first: int, records: Sequence[RequestRecord]) -> None:
        """Append the rows numbered `first`.. of the run. Each row is kept under its number
        (stream id `<n>-0`), and Redis refuses an id at or below the last: a row written
        again (a retry, or a write sent again after a lost answer, however late) adds nothing."""
        pipe = self.redis.pipeline(transaction=False)
        _add_numbered(pipe, key(benchmark_id, "rows"), first, records)
        with writing():
            _refused_only_as_seen(pipe.execute(raise_on_error=False))

    def set_rows(self, benchmark_id: str, records: Sequence[RequestRecord]) -> None:
        """The run's rows replaced whole, at once (the rows a finished run's summary counts)."""
        stream = key(benchmark_id, "rows")
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(stream)
        _add_numbered(pipe, stream, 0, records)
        with writing():
            pipe.execute()

    def rows_csv(self, benchmark_id: str) -> bytes:
        """The results file, header first, from the run's stream."""
        with answering("reading a run's results"):
            entries = self.redis.xrange(key(benchmark_id, "rows"))
        return encode_records([], header=True) + b"".join(fields[b"row"] for _, fields in entries)

    def read_rows(self, benchmark_id: str, prompts: list[str]) -> list[RequestRecord]:
        text = self.rows_csv(benchmark_id).decode("utf-8")
        return parse_records(text.splitlines(keepends=True), prompts)

    def load_plan(self, benchmark_id: str) -> PlanRecord | None:
        with answering("reading a run's plan"):
            raw = self.redis.get(key(benchmark_id, "plan"))
        return None if raw is None else PlanRecord.model_validate_json(raw)

    # --- health --------------------------------------------------------------------------------

    def live_runners(self) -> int:
        return sum(1 for _ in self.redis.scan_iter(match=RUNNER_KEYS, count=100))


def _add_numbered(pipe: Any, stream: str, first: int, records: Sequence[RequestRecord]) -> None:
    for number, record in enumerate(records, start=first + 1):
        pipe.xadd(stream, {b"row": encode_records([record])}, id=f"{number}-0")


def _refused_only_as_seen(answers: list[Any]) -> None:
    """A row already there is refused (its id is not above the last): that is the point. Any
    other error is raised."""
    for answer in answers:
        if isinstance(answer, redis.ResponseError) and "equal or smaller" not in str(answer):
            raise answer


def _listed(raw: bytes | None) -> _Listed | None:
    listed = _parsed(_Listed, raw, "Skipping an unreadable benchmark record")
    if listed is not None:
        listed.updated_at = None  # no staleness rule in Redis (see current_view)
    return listed
