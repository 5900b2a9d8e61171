"""The per-request CSV of a benchmark: one row per request, written as requests finish."""

from __future__ import annotations

import asyncio
import csv
import io
import os
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

from src.schemas.benchmarks import RequestRecord
from src.schemas.prompts import GenerationStats
from src.services.benchmarker.runs.disk import DiskHealth, append_whole, create_whole

CSV_COLUMNS = (
    "model",
    "prompt_index",
    "prompt",
    "run",
    "status",
    "latency_seconds",
    "ttft_seconds",
    "prompt_tokens",
    "completion_tokens",
    "tokens_used",
    "attempts",
    "total_seconds",
    "finish_reason",
    "warmup",
    "send_lag_seconds",
    "scheduled_latency_seconds",
    "chunks",
    "itl_avg_seconds",
    "tpot_seconds",
    "cost",
    "cost_source",
    # After the older columns, so a script that reads them by position still finds them.
    "pinned_provider",
    "provider",
    "generation_id",
    # OpenRouter's own record (GENERATION_STATS=true): found, missing, or empty when not asked.
    "generation_record",
    "upstream_latency_seconds",
    "upstream_generation_seconds",
    "native_prompt_tokens",
    "native_completion_tokens",
    "generation_cost",
    "error",
    "turn",
    "step",
    "finished_seconds",
)
# Spreadsheets run a cell that starts with one of these as a formula (CSV injection).
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def csv_row(record: RequestRecord) -> list[str]:
    itl_avg = sum(record.itl) / len(record.itl) if record.itl else None
    return [
        neutralize_formula(record.model),
        str(record.prompt_index),
        neutralize_formula(record.prompt),
        str(record.run),
        str(record.status),
        _seconds(record.latency_seconds),
        _seconds(record.ttft_seconds),
        str(record.prompt_tokens),
        str(record.completion_tokens),
        str(record.tokens_used),
        str(record.attempts),
        _seconds(record.total_seconds),
        neutralize_formula(record.finish_reason or ""),
        "true" if record.warmup else "false",
        _seconds(record.send_lag_seconds),
        _seconds(record.scheduled_latency_seconds),
        str(len(record.itl) + 1) if record.ttft_seconds is not None else "",
        _seconds(itl_avg),
        _seconds(record.tpot_seconds),
        "" if record.cost is None else f"{record.cost:.10f}",
        record.cost_source or "",
        neutralize_formula(record.pinned_provider or ""),
        neutralize_formula(record.provider or ""),
        neutralize_formula(record.generation_id or ""),
        *_generation_cells(record),
        _error_cell(record),
        str(record.turn),
        "" if record.step is None else str(record.step),
        _seconds(record.finished_seconds),
    ]


def _generation_cells(record: RequestRecord) -> list[str]:
    stats = record.generation
    if stats is None:
        return [record.generation_record or "", "", "", "", "", ""]
    return [
        record.generation_record or "",
        _seconds(stats.latency_seconds),
        _seconds(stats.generation_seconds),
        _count(stats.native_prompt_tokens),
        _count(stats.native_completion_tokens),
        "" if stats.cost is None else f"{stats.cost:.10f}",
    ]


def _count(value: int | None) -> str:
    return "" if value is None else str(value)


def _error_cell(record: RequestRecord) -> str:
    if record.error_type is not None:
        return neutralize_formula(f"{record.error_type}: {record.error}")
    # A success all the same (its text and timings stand); only its usage is unknown.
    return neutralize_formula(record.usage_problem or "")


def neutralize_formula(cell: str) -> str:
    """A leading quote makes spreadsheets show the text instead of evaluating it."""
    return "'" + cell if cell.startswith(_FORMULA_PREFIXES) else cell


class CsvResultWriter:
    """The one writer of a benchmark's CSV: rows are queued as requests finish and written in
    batches by a single task through a thread, so the event loop never waits on the disk and
    every finished row is on disk shortly after it was measured.

    A batch is appended whole or not at all; one that cannot be written is tried again through
    the run's DiskHealth (which holds back new requests meanwhile) and, past its retry time,
    the task fails with InsufficientStorageError. `rows_written` counts the rows in the file.
    """

    def __init__(self, fd: int, size: int, health: DiskHealth) -> None:
        self._fd = fd
        self._size = size
        self._health = health
        self.rows_written = 0
        self.detached = False  # the file was deleted (with its folder) while being written
        self._queue: asyncio.Queue[RequestRecord | None] = asyncio.Queue()
        self.task = asyncio.create_task(self._drain())

    @classmethod
    async def create(cls, path: Path, health: DiskHealth) -> CsvResultWriter:
        fd, size = await health.write(RESULTS_FILE, partial(_create_csv, path))
        return cls(fd, size, health)

    def put(self, record: RequestRecord) -> None:
        self._queue.put_nowait(record)

    async def close(self) -> None:
        """Write every queued row, then close the file (raises if the rows could not be)."""
        self._queue.put_nowait(None)
        try:
            await self.task
        finally:
            await asyncio.to_thread(self._close)

    async def _drain(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            rows = [csv_row(record) for record in batch if record is not None]
            if rows:
                await self._health.write(RESULTS_FILE, partial(self._write, rows))
                self.rows_written += len(rows)
            if None in batch:
                return

    def _write(self, rows: list[list[str]]) -> None:
        self._size = append_whole(self._fd, _encode(rows), self._size)

    def _close(self) -> None:
        try:
            self.detached = os.fstat(self._fd).st_nlink == 0
        finally:
            os.close(self._fd)


RESULTS_FILE = "results file"


def encode_records(records: Iterable[RequestRecord], header: bool = False) -> bytes:
    """Rows of a results file, as written to it (with the header row first if asked)."""
    rows = [csv_row(record) for record in records]
    return _encode([list(CSV_COLUMNS), *rows] if header else rows)


def _encode(rows: list[list[str]]) -> bytes:
    text = io.StringIO()
    csv.writer(text).writerows(rows)
    return text.getvalue().encode("utf-8")


def _create_csv(path: Path) -> tuple[int, int]:
    """The new file with its header row, and its length; nothing is left if that fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Never an existing file: a result file is never overwritten.
    return create_whole(path, _encode([list(CSV_COLUMNS)]), 0o644)


def replace_csv(path: Path, records: list[RequestRecord]) -> None:
    """The results file rewritten whole (rows gained OpenRouter's records after the run): a
    new file renamed over the old, so a reader sees one or the other, never half of one."""
    partial_path = path.with_name(path.name + ".partial")
    partial_path.unlink(missing_ok=True)
    write_csv(partial_path, records)
    os.replace(partial_path, path)


def write_csv(path: Path, records: list[RequestRecord]) -> None:
    """A whole results file at once: for a run whose file was deleted while it ran."""
    fd, size = _create_csv(path)
    try:
        append_whole(fd, _encode([csv_row(record) for record in records]), size)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


def read_records(path: Path, prompts: list[str]) -> list[RequestRecord]:
    """The records of a results file, for a run whose runner died before its summary.

    A row that is not whole is left out. The file keeps each request's mean gap between
    chunks, not every gap: the gaps read back are that mean, repeated.
    """
    try:
        with open(path, newline="", encoding="utf-8") as file:
            return parse_records(file, prompts)
    except FileNotFoundError:
        return []


def parse_records(lines: Iterable[str], prompts: list[str]) -> list[RequestRecord]:
    """The records of a results file's text, header first (see `read_records`)."""
    rows = list(csv.DictReader(lines))
    records = []
    for row in rows:
        try:
            records.append(_record(row, prompts))
        except (KeyError, TypeError, ValueError, IndexError):
            continue
    return records


def _record(row: dict[str, str], prompts: list[str]) -> RequestRecord:
    """One row back into its record; a cell that does not read raises (the row is skipped)."""
    if None in row or any(value is None for value in row.values()):
        raise ValueError("not a whole row")
    chunks = int(row["chunks"]) if row["chunks"] else 0
    itl_avg = _number(row["itl_avg_seconds"])
    error_type, _, error = row["error"].partition(": ")
    index = int(row["prompt_index"])
    return RequestRecord(
        text="",
        model=_plain(row["model"]),
        pinned_provider=_plain(row["pinned_provider"]) or None,
        provider=_plain(row["provider"]) or None,
        generation_id=_plain(row["generation_id"]) or None,
        generation_record=row["generation_record"] or None,
        generation=_generation(row),
        finish_reason=_plain(row["finish_reason"]) or None,
        **{name: read(row[name]) for name, read in _FIGURES.items()},
        prompt_index=index,
        prompt=prompts[index - 1],
        turn=int(row.get("turn") or 1),
        error_type=_plain(error_type) or None,
        error=error or None,
        warmup=row["warmup"] == "true",
        itl=[] if itl_avg is None else [itl_avg] * max(chunks - 1, 0),
        cost_source=row["cost_source"] or None,
        step=int(row["step"]) if row.get("step") else None,
        # Absent from files written before the column was.
        finished_seconds=_number(row.get("finished_seconds") or ""),
    )


def _generation(row: dict[str, str]) -> GenerationStats | None:
    if row["generation_record"] != "found":
        return None
    return GenerationStats(
        latency_seconds=_number(row["upstream_latency_seconds"]),
        generation_seconds=_number(row["upstream_generation_seconds"]),
        native_prompt_tokens=int(row["native_prompt_tokens"])
        if row["native_prompt_tokens"]
        else None,
        native_completion_tokens=(
            int(row["native_completion_tokens"]) if row["native_completion_tokens"] else None
        ),
        cost=_number(row["generation_cost"]),
    )


def _number(cell: str) -> float | None:
    return float(cell) if cell else None


def _plain(cell: str) -> str:
    """A cell as it was before neutralize_formula."""
    if cell.startswith("'") and cell[1:].startswith(_FORMULA_PREFIXES):
        return cell[1:]
    return cell


# The columns that hold a figure of the record under the same name, and how each is read.
_FIGURES: dict[str, Callable[[str], float | None]] = {
    "prompt_tokens": int,
    "completion_tokens": int,
    "tokens_used": int,
    "latency_seconds": float,
    "ttft_seconds": _number,
    "attempts": int,
    "total_seconds": float,
    "cost": _number,
    "run": int,
    "status": int,
    "send_lag_seconds": _number,
    "scheduled_latency_seconds": _number,
}
