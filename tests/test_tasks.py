"""cancel_and_wait (src/tasks.py): what the balancer, the runner and the metrics flush use to
end the tasks a block started."""

from __future__ import annotations

import asyncio

import pytest

from src.tasks import cancel_and_wait


@pytest.mark.anyio
async def test_running_tasks_end_cancelled_and_a_failed_one_raises_nothing_here() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    async def fails() -> None:
        raise RuntimeError("boom")

    running = asyncio.create_task(forever())
    failed = asyncio.create_task(fails())
    await asyncio.wait_for(started.wait(), 10)
    await asyncio.wait({failed}, timeout=10)

    await asyncio.wait_for(cancel_and_wait(running, failed), 10)

    assert running.cancelled()
    assert failed.done() and isinstance(failed.exception(), RuntimeError)
