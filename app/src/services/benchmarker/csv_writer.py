"""The per-request CSV of a benchmark: one row per request, written as requests finish."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path
from typing import IO

from src.schemas.benchmarks import RequestRecord

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
    "error",
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
        _error_cell(record),
    ]


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
    every finished row is on disk (flushed) shortly after it was measured.
    """

    def __init__(self, file: IO[str]) -> None:
        self._file = file
        self._writer = csv.writer(file)
        self._queue: asyncio.Queue[RequestRecord | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._drain())

    @classmethod
    async def create(cls, path: Path) -> CsvResultWriter:
        file = await asyncio.to_thread(_create_csv, path)
        return cls(file)

    def put(self, record: RequestRecord) -> None:
        self._queue.put_nowait(record)

    async def close(self) -> None:
        """Write every queued row, then close the file."""
        self._queue.put_nowait(None)
        try:
            await self._task
        finally:
            await asyncio.to_thread(self._file.close)

    async def _drain(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            rows = [csv_row(record) for record in batch if record is not None]
            if rows:
                await asyncio.to_thread(self._write, rows)
            if None in batch:
                return

    def _write(self, rows: list[list[str]]) -> None:
        self._writer.writerows(rows)
        self._file.flush()


def _create_csv(path: Path) -> IO[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    # "x": a result file is never overwritten.
    file = open(path, "x", newline="", encoding="utf-8")  # noqa: SIM115 - closed by the writer
    try:
        csv.writer(file).writerow(CSV_COLUMNS)
        file.flush()
    except BaseException:
        file.close()
        raise
    return file
