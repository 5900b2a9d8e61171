"""A run's files on a disk that may fill up, turn read-only or vanish.

What is written is written whole or not at all (a row never ends half-way), a failed write is
tried again for BENCHMARK_WRITE_RETRY_SECONDS (never skipped), and past that the run fails with
the cause. While any of its writes is failing a run sends nothing new: no paid request whose
result could not be kept.

The synchronous functions here are for `asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from src.services.base.exceptions import InsufficientStorageError
from src.services.base.timing import now

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Pause between two tries of a failed write.
RETRY_PAUSE_SECONDS = 0.2
# Held by every running run and given back before its final records are written, so that a run
# on a full disk can still record that it failed, and why.
RESERVE_BYTES = 64 * 1024
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
_NOT_WRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
_GONE = frozenset({errno.ENOENT, errno.ENOTDIR})


class StoreUnreachableError(OSError):
    """A run store on the network (Redis) did not answer a write: retried, and failed on, as a
    failing disk write is. Its message names the store."""


def storage_error(exc: OSError, doing: str) -> InsufficientStorageError:
    """The cause in words a user can act on; never a path of the server's disk."""
    if isinstance(exc, StoreUnreachableError):
        cause = str(exc)
    elif exc.errno in _NO_SPACE:
        cause = "no space left on BENCHMARKS_DIR"
    elif exc.errno in _NOT_WRITABLE:
        cause = "BENCHMARKS_DIR is not writable"
    elif exc.errno in _GONE:
        cause = "BENCHMARKS_DIR was deleted"
    else:
        cause = f"cannot write to BENCHMARKS_DIR ({exc.strerror or type(exc).__name__})"
    return InsufficientStorageError(f"{cause} ({doing}).")


def append_whole(fd: int, data: bytes, size: int) -> int:
    """Write `data` at offset `size` (the file's length) and return the new length; on a
    failure the file is cut back to `size`, so a half-written row never stays."""
    view = memoryview(data)
    offset = size
    try:
        while view:
            written = os.pwrite(fd, view, offset)
            view, offset = view[written:], offset + written
    except OSError:
        try:
            os.ftruncate(fd, size)
        except OSError:
            logger.exception("Could not cut a half-written row off a results file")
        raise
    return offset


def create_whole(path: Path, data: bytes, mode: int) -> tuple[int, int]:
    """A new file holding `data`, open for appending: its descriptor and length. Never an
    existing file (O_EXCL); nothing is left if the write fails."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        return fd, append_whole(fd, data, 0)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise


def make_reserve(path: Path) -> None:
    """Take RESERVE_BYTES of real blocks (a sparse file would free nothing)."""
    fd, _ = create_whole(path, b"\0" * RESERVE_BYTES, 0o600)
    os.close(fd)


def release_reserve(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        logger.warning("Could not release a benchmark's disk reserve: %s", exc.strerror)


class DiskHealth:
    """Whether a run's files are being written. Senders wait on `writable`; a write that has
    failed for longer than `retry_seconds` raises InsufficientStorageError, which ends the run.
    """

    def __init__(self, benchmark_id: str, retry_seconds: float) -> None:
        self.benchmark_id = benchmark_id
        self.retry_seconds = retry_seconds
        self.writable = asyncio.Event()
        self.writable.set()
        self._failing_since: dict[str, float] = {}

    def failed(self, what: str, exc: OSError) -> None:
        """Record a failed write of `what`; raises once it has failed for too long."""
        moment = now()
        since = self._failing_since.setdefault(what, moment)
        self.writable.clear()
        if since == moment:
            logger.warning(
                "BENCHMARK WRITE FAILING | id=%s | %s | retrying for up to %gs, sending nothing",
                self.benchmark_id,
                storage_error(exc, f"writing the {what}").detail,
                self.retry_seconds,
            )
        # A deleted folder does not come back by itself: the run ends at once, and its end
        # writes its files again (execution.py), rather than running on with nowhere to be seen.
        if exc.errno in _GONE or moment - since >= self.retry_seconds:
            raise storage_error(exc, f"writing the {what}") from exc

    def succeeded(self, what: str) -> None:
        if self._failing_since.pop(what, None) is not None:
            logger.warning(
                "BENCHMARK WRITE RECOVERED | id=%s | the %s is written again",
                self.benchmark_id,
                what,
            )
        if not self._failing_since:
            self.writable.set()

    async def try_write(self, what: str, write: Callable[[], object]) -> bool:
        """One try of `write` in a thread: False if it failed (the caller tries again later),
        and raises once it has failed for too long."""
        try:
            await asyncio.to_thread(write)
        except OSError as exc:
            self.failed(what, exc)
            return False
        self.succeeded(what)
        return True

    async def write(self, what: str, write: Callable[[], T]) -> T:
        """Run `write` in a thread until it succeeds, or raise once it has failed too long."""
        while True:
            try:
                result = await asyncio.to_thread(write)
            except FileExistsError:
                raise  # a file of this run is there already: no disk trouble, and never replaced
            except OSError as exc:
                self.failed(what, exc)
                await asyncio.sleep(RETRY_PAUSE_SECONDS)
                continue
            self.succeeded(what)
            return result
