"""Prompt files in and the names of result files: parsing the upload, ids and paths.

Every filesystem call here is synchronous on purpose; async callers run them through
`asyncio.to_thread`.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from src.excerpt import MAX_SHOWN_ID_CHARS, cut
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
_SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
# Harmless inside one file name, but "../" look-alikes in names only confuse whoever reads them.
_DOT_RUN = re.compile(r"\.{2,}")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


class AsyncReadable(Protocol):
    """What the prompt upload offers (Starlette's UploadFile among others)."""

    async def read(self, size: int = -1) -> bytes: ...


async def read_upload(upload: AsyncReadable, max_bytes: int, name: str = "prompt_file") -> bytes:
    """Read the upload chunk by chunk: past `max_bytes` it is refused, never read whole."""
    chunks: list[bytes] = []
    total = 0
    while chunk := await upload.read(READ_CHUNK_BYTES):
        total += len(chunk)
        if total > max_bytes:
            raise PayloadTooLargeError(f"{name} is larger than MAX_UPLOAD_BYTES={max_bytes} bytes.")
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
    """The files of one run, all inside BENCHMARKS_DIR."""

    csv: Path
    json: Path
    state: Path  # the small record that listing and progress read
    cancel: Path  # present once a DELETE asked the run to stop
    reserve: Path  # disk space held while the run lives, for its final records


RESULTS_SUFFIX = ".csv"
SUMMARY_SUFFIX = ".json"
STATE_SUFFIX = ".state"
CANCEL_SUFFIX = ".cancel"
RESERVE_SUFFIX = ".reserve"


def result_paths(directory: Path, benchmark_id: str) -> ResultPaths:
    """The files of a benchmark; refuses any id that could name a file elsewhere."""
    if not BENCHMARK_ID_PATTERN.fullmatch(benchmark_id):
        raise NotFoundError(f"No benchmark with id '{cut(benchmark_id, MAX_SHOWN_ID_CHARS)}'.")
    root = directory.resolve()
    paths = ResultPaths(
        csv=root / f"{benchmark_id}{RESULTS_SUFFIX}",
        json=root / f"{benchmark_id}{SUMMARY_SUFFIX}",
        state=root / f"{benchmark_id}{STATE_SUFFIX}",
        cancel=root / f"{benchmark_id}{CANCEL_SUFFIX}",
        reserve=root / f"{benchmark_id}{RESERVE_SUFFIX}",
    )
    for path in (paths.csv, paths.json, paths.state, paths.cancel, paths.reserve):
        if path.resolve().parent != root:
            raise NotFoundError(f"No benchmark with id '{benchmark_id}'.")
    return paths
