"""Work that a stopping server waits for, within a bound."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ShutdownGuard:
    """Tracks tasks whose clean-up must outlive a cancelled request.

    When uvicorn's graceful shutdown runs out, it cancels the running requests and goes straight
    on to the lifespan shutdown: a cancelled benchmark would still be writing its summary when
    the event loop closes. The lifespan waits here first, so the summary is on disk.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    async def run(self, work: Awaitable[T]) -> T:
        """Await `work` as a tracked task; cancelling the caller cancels it as usual."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await task

    async def wait(self, timeout_seconds: float) -> None:
        pending = set(self._tasks)
        if not pending:
            return
        logger.info("Waiting up to %.1fs for %d task(s) to finish", timeout_seconds, len(pending))
        _, late = await asyncio.wait(pending, timeout=timeout_seconds)
        if late:
            logger.warning("%d task(s) did not finish before shutdown", len(late))
