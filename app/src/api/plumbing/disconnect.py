"""Stop the work of a request whose caller has gone away."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request

from src.services.base.exceptions import ClientDisconnectedError

T = TypeVar("T")

WATCH_AFTER_SECONDS = 0.05


async def cancel_on_disconnect(
    request: Request,
    work: Awaitable[T],
    message: str = "The client disconnected before the answer was ready.",
) -> T:
    """Await `work` in this task, cancelling it if the caller disconnects first.

    Servers do not cancel a handler whose caller left: without this, an abandoned request keeps
    its upstream call (and its pooled connection) until the upstream answers, and a burst of
    callers who give up can take the whole pool. Cancelling closes the upstream connection,
    which also tells the upstream to stop generating.

    The watcher task starts only once the work has run for WATCH_AFTER_SECONDS: a watcher costs
    CPU (a task, and its cancellation through every ASGI layer), which an answer that is ready
    sooner does not need. A caller who left before it starts is noticed as soon
    as it does.

    Call it only once the request body has been read: the next message is then the disconnect.
    """
    handler = asyncio.current_task()
    assert handler is not None
    state = {"finished": False, "disconnected": False}
    watcher: asyncio.Task[None] | None = None

    async def watch() -> None:
        try:
            while (await request.receive())["type"] != "http.disconnect":
                pass
        except Exception:
            return  # a server that cannot tell us: the work simply runs to its end
        if not state["finished"]:
            state["disconnected"] = True
            handler.cancel()

    def start_watching() -> None:
        nonlocal watcher
        if not state["finished"]:
            watcher = asyncio.create_task(watch())

    timer = asyncio.get_running_loop().call_later(WATCH_AFTER_SECONDS, start_watching)
    try:
        result = await work
        state["finished"] = True
        return result
    except asyncio.CancelledError:
        state["finished"] = True
        if not state["disconnected"]:
            raise  # the handler itself was cancelled (server shutdown): let it end
        handler.uncancel()
        # Answered (to no one) as an error, so the request log shows what happened.
        raise ClientDisconnectedError(message) from None
    finally:
        state["finished"] = True
        timer.cancel()
        if watcher is not None:
            watcher.cancel()
