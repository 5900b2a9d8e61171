"""Keeping runs: the one interface through which the service, the launcher and a run's
execution admit, record, read, list and cancel runs.

Everything a worker or a replica needs to know about a run goes through a `RunStore`, so any of
them can answer for a run another one started. Today's implementation keeps the runs as small
files in BENCHMARKS_DIR (file_store.py); another backend is another implementation of this
protocol, chosen in backend.py, not a fork of its callers. The per-request CSV and the disk
reserve are result files on BENCHMARKS_DIR whatever the store (results/, disk.py).

Every method is synchronous: async callers use `asyncio.to_thread`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from src.config import Settings
from src.schemas.benchmarks import (
    BenchmarkListItem,
    BenchmarkState,
    BenchmarkSummary,
    RequestRecord,
)
from src.services.benchmarker.runs.owners import EVERYONE, Caller


@dataclass(frozen=True)
class RunCaps:
    """What admission allows, across every worker and replica that shares the store."""

    max_running: int  # MAX_RUNNING_BENCHMARKS
    max_in_flight: int  # MAX_INFLIGHT_TOTAL
    keep_days: float | None = None  # BENCHMARKS_KEEP_DAYS: older finished runs go at admission

    @classmethod
    def of(cls, settings: Settings) -> RunCaps:
        return cls(
            settings.max_running_benchmarks,
            settings.max_inflight_total,
            settings.benchmarks_keep_days,
        )


class RunStore(Protocol):
    def admit(
        self, state: BenchmarkState, caps: RunCaps, live: Mapping[str, int] | None = None
    ) -> None:
        """Record a new run as running if the caps allow it (CapacityError, a 429, if not),
        atomically for every worker and replica that shares the store. `live`: the runs this
        process hosts whose runner has not exited (id: concurrency), counted whatever the
        store says."""
        ...

    def check_capacity(
        self, concurrency: int, caps: RunCaps, live: Mapping[str, int] | None = None
    ) -> None:
        """Refuse early (CapacityError) a run the caps leave no room for; `admit` checks again."""
        ...

    def write_state(self, benchmark_id: str, state: BenchmarkState) -> None:
        """Replace the run's state record whole: a reader never sees half of one."""
        ...

    def read_state(self, benchmark_id: str) -> BenchmarkState | None: ...

    def save_summary(self, benchmark_id: str, summary: BenchmarkSummary) -> None:
        """Keep the run's summary once, whole or not at all; an existing one is never replaced."""
        ...

    def has_summary(self, benchmark_id: str) -> bool: ...

    def load_summary(self, benchmark_id: str) -> BenchmarkSummary:
        """The run's summary, or NotFoundError."""
        ...

    def current_view(self, benchmark_id: str) -> BenchmarkSummary | BenchmarkState:
        """The summary of a finished run, else the state of a running (or lost) one."""
        ...

    def check_access(self, benchmark_id: str, caller: Caller) -> None:
        """NotFoundError, word for word the unknown run's, for a caller who may not see it."""
        ...

    def list_runs(self, limit: int, caller: Caller = EVERYONE) -> list[BenchmarkListItem]:
        """The `limit` newest runs the caller may see, newest first."""
        ...

    def request_cancel(self, benchmark_id: str) -> None:
        """Ask the run to stop, whichever process or machine runs it."""
        ...

    def is_cancel_requested(self, benchmark_id: str) -> bool: ...

    def clear_cancel(self, benchmark_id: str) -> None:
        """Forget the request to stop once the run has ended."""
        ...

    def add_rows(self, benchmark_id: str, first: int, records: Sequence[RequestRecord]) -> None:
        """Keep the run's rows numbered `first`.. where every replica reads them (the files
        store has them in the run's CSV already)."""
        ...

    def set_rows(self, benchmark_id: str, records: Sequence[RequestRecord]) -> None:
        """The run's rows, replaced whole by those its summary counts."""
        ...

    def read_rows(self, benchmark_id: str, prompts: list[str]) -> list[RequestRecord]:
        """The rows kept so far, for a run whose runner died before its summary."""
        ...
