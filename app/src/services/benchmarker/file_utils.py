"""Prompt files in, result files out: parsing the upload, naming, writing and reading results.

Every filesystem call here is synchronous on purpose; async callers run them through
`asyncio.to_thread` (the CSV writer does so itself).
"""

from __future__ import annotations

import asyncio
import csv
import logging
import os
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Protocol

from src.schemas.benchmarks import BenchmarkSummary, RequestRecord
from src.services.base.exceptions import InvalidInputError, NotFoundError, PayloadTooLargeError

logger = logging.getLogger(__name__)

READ_CHUNK_BYTES = 64 * 1024
MAX_SLUG_CHARS = 80
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
# <UTC start>_<model slug>_<8 hex>: no "/" and no leading ".", so an id is always one plain
# file name inside the benchmarks directory.
BENCHMARK_ID_PATTERN = re.compile(
    rf"^\d{{8}}T\d{{6}}Z_[A-Za-z0-9._+-]{{1,{MAX_SLUG_CHARS}}}_[0-9a-f]{{8}}$"
)
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
    "error",
)
# Spreadsheets run a cell that starts with one of these as a formula (CSV injection).
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
# Harmless inside one file name, but "../" look-alikes in names only confuse whoever reads them.
_DOT_RUN = re.compile(r"\.{2,}")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


class AsyncReadable(Protocol):
    """What the prompt upload offers (Starlette's UploadFile among others)."""

    async def read(self, size: int = -1) -> bytes: ...


async def read_upload(upload: AsyncReadable, max_bytes: int) -> bytes:
    """Read the upload chunk by chunk: past `max_bytes` it is refused, never read whole."""
    chunks: list[bytes] = []
    total = 0
    while chunk := await upload.read(READ_CHUNK_BYTES):
        total += len(chunk)
        if total > max_bytes:
            raise PayloadTooLargeError(
                f"prompt_file is larger than MAX_UPLOAD_BYTES={max_bytes} bytes."
            )
        chunks.append(chunk)
    return b"".join(chunks)


def parse_prompts(data: bytes) -> list[str]:
    """One prompt per line, surrounding whitespace removed, blank lines skipped."""
    if not data:
        raise InvalidInputError("prompt_file is empty: put one prompt per line.")
    if b"\x00" in data:
        raise InvalidInputError("prompt_file contains NUL bytes: it must be a UTF-8 text file.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(
            f"prompt_file is not valid UTF-8 (first bad byte at offset {exc.start})."
        ) from exc
    prompts = [line.strip() for line in _LINE_BREAK.split(text)]
    prompts = [prompt for prompt in prompts if prompt]
    if not prompts:
        raise InvalidInputError("prompt_file has only blank lines: put one prompt per line.")
    return prompts


def model_slug(models: list[str]) -> str:
    joined = "+".join(_DOT_RUN.sub("-", _SLUG_UNSAFE.sub("-", model)) for model in models)
    return joined[:MAX_SLUG_CHARS]


def new_benchmark_id(started_at: datetime, models: list[str]) -> str:
    """Sortable by start time, readable, and unique even for benchmarks started in one second."""
    return f"{started_at.strftime(TIMESTAMP_FORMAT)}_{model_slug(models)}_{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class ResultPaths:
    csv: Path
    json: Path


def result_paths(directory: Path, benchmark_id: str) -> ResultPaths:
    """The two files of a benchmark; refuses any id that could name a file elsewhere."""
    if not BENCHMARK_ID_PATTERN.fullmatch(benchmark_id):
        raise NotFoundError(f"No benchmark with id '{benchmark_id}'.")
    root = directory.resolve()
    paths = ResultPaths(
        csv=(root / f"{benchmark_id}.csv").resolve(), json=(root / f"{benchmark_id}.json").resolve()
    )
    for path in (paths.csv, paths.json):
        if path.parent != root:
            raise NotFoundError(f"No benchmark with id '{benchmark_id}'.")
    return paths


def csv_row(record: RequestRecord) -> list[str]:
    return [
        neutralize_formula(record.model),
        str(record.prompt_index),
        neutralize_formula(record.prompt),
        str(record.run),
        str(record.status),
        f"{record.latency_seconds:.6f}",
        "" if record.ttft_seconds is None else f"{record.ttft_seconds:.6f}",
        str(record.prompt_tokens),
        str(record.completion_tokens),
        str(record.tokens_used),
        str(record.attempts),
        f"{record.total_seconds:.6f}",
        neutralize_formula(record.finish_reason or ""),
        ""
        if record.error_type is None
        else neutralize_formula(f"{record.error_type}: {record.error}"),
    ]


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


def write_summary(path: Path, summary: BenchmarkSummary) -> None:
    """Appears whole or not at all, and never replaces an existing summary.

    Written to a temporary name, then hard-linked into place: the link fails if the name is
    taken, and a crash mid-write leaves only the temporary file, never a half summary.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "x", encoding="utf-8") as file:
        file.write(summary.model_dump_json(by_alias=True, indent=2))
        file.flush()
        os.fsync(file.fileno())
    try:
        os.link(partial, path)
    finally:
        partial.unlink()


def load_summary(directory: Path, benchmark_id: str) -> BenchmarkSummary:
    path = result_paths(directory, benchmark_id).json
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise NotFoundError(f"No benchmark with id '{benchmark_id}'.") from exc
    return BenchmarkSummary.model_validate_json(text)


def list_summaries(directory: Path, limit: int) -> list[BenchmarkSummary]:
    """The `limit` newest summaries, newest first. Files that are not summaries are skipped."""
    if not directory.is_dir():
        return []
    # Names start with the UTC start second, so name order is start order up to that second:
    # only the newest files (and any that share the last second kept) need to be parsed.
    names = sorted(
        (p.stem for p in directory.glob("*.json") if BENCHMARK_ID_PATTERN.fullmatch(p.stem)),
        reverse=True,
    )
    if len(names) > limit:
        last_second = names[limit - 1][:16]
        names = [name for name in names if name[:16] >= last_second]
    summaries: list[BenchmarkSummary] = []
    for name in names:
        try:
            summaries.append(load_summary(directory, name))
        except (OSError, ValueError, NotFoundError) as exc:
            logger.warning("Skipping unreadable benchmark summary %s: %s", name, exc)
    summaries.sort(key=lambda summary: (summary.started_at, summary.id), reverse=True)
    return summaries[:limit]
