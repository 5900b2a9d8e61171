"""The file implementation of the run store (store.py): what a benchmark leaves in
BENCHMARKS_DIR besides its CSV. The summary, written once at the end, and the small state
record that listing, progress, admission and cancellation go through.

Everything a worker or a replica needs to know about a run is in these files, so any of them
can answer for a run another one started. Every function here is synchronous; async callers
use `asyncio.to_thread`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from src.schemas.benchmarks import (
    BenchmarkFiles,
    BenchmarkListItem,
    BenchmarkState,
    BenchmarkStatus,
    BenchmarkSummary,
    ComparisonRow,
    Progress,
    RequestRecord,
    SavedParameters,
)
from src.services.base.exceptions import CapacityError, NotFoundError
from src.services.benchmarker.results.csv_writer import read_records
from src.services.benchmarker.results.file_utils import (
    BENCHMARK_ID_PATTERN,
    RESERVE_SUFFIX,
    RESULTS_SUFFIX,
    STATE_SUFFIX,
    SUMMARY_SUFFIX,
    TIMESTAMP_FORMAT,
    result_paths,
)
from src.services.benchmarker.runs.disk import make_reserve, storage_error
from src.services.benchmarker.runs.owners import EVERYONE, Caller
from src.services.benchmarker.runs.store import RunCaps

logger = logging.getLogger(__name__)

# A running run rewrites its state at least every second: one this old has lost its runner.
STALE_AFTER = timedelta(seconds=30)
ADMISSION_LOCK = ".admission.lock"
# What a refused submission is told: runs are long, so asking again at once is pointless.
CAPACITY_RETRY_AFTER_SECONDS = 30.0


def files_of(benchmark_id: str) -> BenchmarkFiles:
    """Names inside BENCHMARKS_DIR and download URLs: never a path of the server's disk."""
    return BenchmarkFiles(
        csv=f"{benchmark_id}{RESULTS_SUFFIX}",
        json_file=f"{benchmark_id}{SUMMARY_SUFFIX}",
        csv_url=f"/benchmarks/{benchmark_id}/results.csv",
        json_url=f"/benchmarks/{benchmark_id}/summary.json",
        report_url=f"/benchmarks/{benchmark_id}/report",
    )


# --- the summary -------------------------------------------------------------------------------


def write_summary(path: Path, summary: BenchmarkSummary) -> None:
    """Appears whole or not at all, and never replaces an existing summary.

    Written to a temporary name, then hard-linked into place: the link fails if the name is
    taken, and a crash mid-write leaves only the temporary file, never a half summary.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        with open(partial, "x", encoding="utf-8") as file:
            file.write(summary.model_dump_json(by_alias=True, indent=2))
            file.flush()
            os.fsync(file.fileno())
        os.link(partial, path)
    finally:
        _remove(partial)


def load_summary(directory: Path, benchmark_id: str) -> BenchmarkSummary:
    path = result_paths(directory, benchmark_id).json
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise NotFoundError(f"No benchmark with id '{benchmark_id}'.") from exc
    return BenchmarkSummary.model_validate_json(text)


# --- the state record ----------------------------------------------------------------------------


def write_state(path: Path, state: BenchmarkState) -> None:
    """Replaced whole (a temporary file renamed over it): a reader never sees half a record."""
    record = state.model_dump(mode="json", by_alias=True)
    record["owner"] = state.owner  # left out of every answer, but this is where it is kept
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    try:
        partial.write_bytes(orjson.dumps(record))
        os.replace(partial, path)
    finally:
        _remove(partial)  # gone already once renamed; never left behind by a failed write


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def read_state(path: Path) -> BenchmarkState | None:
    try:
        return BenchmarkState.model_validate_json(path.read_bytes())
    except (FileNotFoundError, ValidationError):
        return None


def effective_status(status: BenchmarkStatus, updated_at: datetime) -> BenchmarkStatus:
    """A run still marked running whose runner stopped writing died without a summary."""
    if status == "running" and datetime.now(UTC) - updated_at > STALE_AFTER:
        return "interrupted"
    return status


def current_view(directory: Path, benchmark_id: str) -> BenchmarkSummary | BenchmarkState:
    """The summary of a finished run, else the state of a running (or lost) one."""
    paths = result_paths(directory, benchmark_id)
    if paths.json.exists():
        return load_summary(directory, benchmark_id)
    state = read_state(paths.state)
    if state is None:
        raise NotFoundError(f"No benchmark with id '{benchmark_id}'.")
    return state.model_copy(update={"status": effective_status(state.status, state.updated_at)})


def check_access(directory: Path, benchmark_id: str, caller: Caller) -> None:
    """To a caller who may not see it, a run does not exist: the same 404, word for word.

    The owner is read from the state record; a run without one (saved before runs had owners,
    or whose record is unreadable) has no owner, so only a caller who sees every run sees it.
    """
    if caller.sees_all:
        return
    state = read_state(result_paths(directory, benchmark_id).state)
    if state is None or not caller.may_see(state.owner):
        raise NotFoundError(f"No benchmark with id '{benchmark_id}'.")


def request_cancel(directory: Path, benchmark_id: str) -> None:
    """Leave the mark its runner looks for (every fraction of a second), whichever process or
    machine runs it."""
    try:
        result_paths(directory, benchmark_id).cancel.touch()
    except OSError as exc:
        raise storage_error(exc, "asking the run to stop") from exc


# --- admission ---------------------------------------------------------------------------------


def check_capacity(
    directory: Path, concurrency: int, caps: RunCaps, live: Mapping[str, int] | None = None
) -> None:
    """Refuse a run the caps leave no room for (CapacityError, a 429).

    `live`: the runs this process hosts whose runner has not exited (id: concurrency). They
    count whatever their files say: a state record that went stale or was deleted with its
    folder does not free a place while the runner still sends.
    """
    running = {
        state.id: state.parameters.peak_concurrency
        for state in (_running_states(directory) if directory.is_dir() else ())
    }
    running.update(live or {})
    check_room(len(running), sum(running.values()), concurrency, caps)


def check_room(count: int, in_flight: int, concurrency: int, caps: RunCaps) -> None:
    """Refuse one more run of `concurrency` beside `count` running ones holding `in_flight`
    requests, when the caps leave it no room: every store refuses by this rule and says so."""
    if count >= caps.max_running:
        raise CapacityError(
            f"{count} benchmarks are running: MAX_RUNNING_BENCHMARKS={caps.max_running}. "
            "Try again when one has finished.",
            retry_after=CAPACITY_RETRY_AFTER_SECONDS,
        )
    if in_flight + concurrency > caps.max_in_flight:
        raise CapacityError(
            f"Running benchmarks hold {in_flight} requests in flight; {concurrency} more would "
            f"pass MAX_INFLIGHT_TOTAL={caps.max_in_flight}. Lower concurrency or try again later.",
            retry_after=CAPACITY_RETRY_AFTER_SECONDS,
        )


def admit(
    directory: Path, state: BenchmarkState, caps: RunCaps, live: Mapping[str, int] | None = None
) -> None:
    """Record a new run as running, if the caps allow it; every worker and replica that shares
    the directory counts the same runs, under one lock.

    A disk that cannot take the run's files refuses it (InsufficientStorageError, a 507) and
    keeps nothing of it: its state record and its disk reserve (disk.py) are made here.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        lock = open(directory / ADMISSION_LOCK, "a")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise storage_error(exc, "recording a new run") from exc
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if caps.keep_days is not None:
            prune(directory, caps.keep_days)
        _release_abandoned_reserves(directory, live or {})
        check_capacity(directory, state.parameters.peak_concurrency, caps, live)
        paths = result_paths(directory, state.id)
        try:
            make_reserve(paths.reserve)
            write_state(paths.state, state)
        except OSError as exc:
            _remove(paths.reserve)
            _remove(paths.state)
            raise storage_error(exc, "recording a new run") from exc


def _release_abandoned_reserves(directory: Path, live: Mapping[str, int]) -> None:
    """Give back the disk reserve of a run nobody writes any more (its runner died with its
    server, so no one could record its end)."""
    for name in os.listdir(directory):
        if not name.endswith(RESERVE_SUFFIX):
            continue
        benchmark_id = name.removesuffix(RESERVE_SUFFIX)
        if benchmark_id in live:
            continue
        state = read_state(directory / f"{benchmark_id}{STATE_SUFFIX}")
        if state is None or effective_status(state.status, state.updated_at) != "running":
            _remove(directory / name)


def _running_states(directory: Path) -> Iterator[BenchmarkState]:
    names = set(os.listdir(directory))
    for name in names:
        if not name.endswith(STATE_SUFFIX):
            continue
        benchmark_id = name.removesuffix(STATE_SUFFIX)
        if benchmark_id + SUMMARY_SUFFIX in names:
            continue  # finished: its summary is written
        state = read_state(directory / name)
        if state is not None and effective_status(state.status, state.updated_at) == "running":
            yield state


def prune(directory: Path, keep_days: float) -> int:
    """Remove the files of finished runs that started more than `keep_days` days ago."""
    cutoff = datetime.now(UTC) - timedelta(days=keep_days)
    names = set(os.listdir(directory))
    removed = 0
    for benchmark_id in _ids(names):
        started = datetime.strptime(benchmark_id[:16], TIMESTAMP_FORMAT).replace(tzinfo=UTC)
        finished = benchmark_id + SUMMARY_SUFFIX in names
        if started >= cutoff or not finished:
            continue
        paths = result_paths(directory, benchmark_id)
        for path in (paths.csv, paths.state, paths.cancel, paths.reserve, paths.json):
            path.unlink(missing_ok=True)
        removed += 1
    if removed:
        logger.info("BENCHMARKS PRUNED | %d runs older than %g days", removed, keep_days)
    return removed


def _ids(names: set[str]) -> set[str]:
    ids = set()
    for name in names:
        stem = name.removesuffix(STATE_SUFFIX) if name.endswith(STATE_SUFFIX) else None
        if stem is None and name.endswith(SUMMARY_SUFFIX):
            stem = name.removesuffix(SUMMARY_SUFFIX)
        if stem is not None and BENCHMARK_ID_PATTERN.fullmatch(stem):
            ids.add(stem)
    return ids


# --- listing -------------------------------------------------------------------------------------


class _Listed(BaseModel):
    """The fields a listing needs, read from a state record or a summary; the rest of the
    document is skipped, not validated."""

    model_config = ConfigDict(extra="ignore")

    id: str
    status: BenchmarkStatus
    started_at: datetime
    updated_at: datetime | None = None
    finished_at: datetime | None = None
    parameters: SavedParameters
    requests: int | None = None
    finished_requests: int | None = None
    progress: Progress | None = None
    cost: float | None = None
    comparison: list[ComparisonRow] = Field(default_factory=list)
    owner: str | None = None

    @model_validator(mode="after")
    def _count_older_records(self) -> _Listed:
        """A record written before its progress carried the measured counts: counted here,
        the one place that still reads such records."""
        progress = self.progress
        if progress is None or "finished_requests" in progress.model_fields_set:
            return self
        warmup = self.parameters.warmup
        total = progress.total
        progress.requests = None if total is None else max(total - warmup, 0)
        progress.finished_requests = max(progress.done - warmup, 0)
        return self


def list_runs(directory: Path, limit: int, caller: Caller = EVERYONE) -> list[BenchmarkListItem]:
    """The `limit` newest runs the caller may see, newest first, from the small records alone."""
    if not directory.is_dir():
        return []
    names = set(os.listdir(directory))
    items = []
    last_second = None
    for benchmark_id in sorted(_ids(names), reverse=True):
        # Ids start with the UTC start second: once `limit` runs are kept, only those of the
        # same second can still be among the newest (ties are ordered by their records).
        if last_second is not None and benchmark_id[:16] < last_second:
            break
        listed = _read_listed(directory, benchmark_id, names)
        if listed is None or not caller.may_see(listed.owner):
            continue
        items.append(_item(listed))
        if len(items) == limit:
            last_second = benchmark_id[:16]
    items.sort(key=lambda item: (item.started_at, item.id), reverse=True)
    return items[:limit]


def _read_listed(directory: Path, benchmark_id: str, names: set[str]) -> _Listed | None:
    # The state record is small; only a run from before state records has just a summary.
    name = benchmark_id + STATE_SUFFIX
    if name not in names:
        name = benchmark_id + SUMMARY_SUFFIX
    try:
        return _Listed.model_validate_json((directory / name).read_bytes())
    except (OSError, ValidationError) as exc:
        logger.warning("Skipping unreadable benchmark record %s: %s", name, exc)
        return None


def _item(listed: _Listed) -> BenchmarkListItem:
    status = listed.status
    if listed.updated_at is not None:
        status = effective_status(status, listed.updated_at)
    requests, finished = listed.requests, listed.finished_requests or 0
    if listed.progress is not None:
        # A listing counts what a summary counts: measured requests, warm-up left out.
        requests, finished = listed.progress.requests, listed.progress.finished_requests
    return BenchmarkListItem(
        id=listed.id,
        status=status,
        started_at=listed.started_at,
        finished_at=listed.finished_at,
        models=listed.parameters.models,
        providers=listed.parameters.providers,
        label=listed.parameters.label,
        requests=requests,
        finished_requests=finished,
        cost=listed.cost,
        comparison=listed.comparison,
        files=files_of(listed.id),
    )


# --- the store -----------------------------------------------------------------------------------


class FileRunStore:
    """The runs as files in one directory (a `RunStore`, store.py): every call goes through the
    functions above, so what is stored and how is theirs."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def admit(
        self, state: BenchmarkState, caps: RunCaps, live: Mapping[str, int] | None = None
    ) -> None:
        admit(self.directory, state, caps, live)

    def check_capacity(
        self, concurrency: int, caps: RunCaps, live: Mapping[str, int] | None = None
    ) -> None:
        check_capacity(self.directory, concurrency, caps, live)

    def write_state(self, benchmark_id: str, state: BenchmarkState) -> None:
        write_state(result_paths(self.directory, benchmark_id).state, state)

    def read_state(self, benchmark_id: str) -> BenchmarkState | None:
        return read_state(result_paths(self.directory, benchmark_id).state)

    def save_summary(self, benchmark_id: str, summary: BenchmarkSummary) -> None:
        write_summary(result_paths(self.directory, benchmark_id).json, summary)

    def has_summary(self, benchmark_id: str) -> bool:
        return result_paths(self.directory, benchmark_id).json.exists()

    def load_summary(self, benchmark_id: str) -> BenchmarkSummary:
        return load_summary(self.directory, benchmark_id)

    def current_view(self, benchmark_id: str) -> BenchmarkSummary | BenchmarkState:
        return current_view(self.directory, benchmark_id)

    def check_access(self, benchmark_id: str, caller: Caller) -> None:
        check_access(self.directory, benchmark_id, caller)

    def list_runs(self, limit: int, caller: Caller = EVERYONE) -> list[BenchmarkListItem]:
        return list_runs(self.directory, limit, caller)

    def request_cancel(self, benchmark_id: str) -> None:
        request_cancel(self.directory, benchmark_id)

    def is_cancel_requested(self, benchmark_id: str) -> bool:
        return result_paths(self.directory, benchmark_id).cancel.exists()

    def clear_cancel(self, benchmark_id: str) -> None:
        result_paths(self.directory, benchmark_id).cancel.unlink(missing_ok=True)

    def add_rows(self, benchmark_id: str, first: int, records: Sequence[RequestRecord]) -> None:
        """The run's CSV, written as requests finish, is where its rows are."""

    def set_rows(self, benchmark_id: str, records: Sequence[RequestRecord]) -> None:
        """Written by the run itself (execution.py) into its CSV."""

    def read_rows(self, benchmark_id: str, prompts: list[str]) -> list[RequestRecord]:
        return read_records(result_paths(self.directory, benchmark_id).csv, prompts)
