"""Stop the work of a request whose caller has gone away."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request

from src.services.base.exceptions import ClientDisconnectedError

T = TypeVar("T")


async def cancel_on_disconnect(
    request: Request,
    work: Awaitable[T],
    message: str = "The client disconnected before the answer was ready.",
) -> T:
    """Await `work`, cancelling it if the caller disconnects first.

    Servers do not cancel a handler whose caller left: without this, an abandoned request keeps
    its upstream call (and its pooled connection) until the upstream answers, and a burst of
    callers who give up can take the whole pool. Cancelling closes the upstream connection,
    which also tells the upstream to stop generating.

    Call it only once the request body has been read: the next message is then the disconnect.
    """
    task = asyncio.ensure_future(work)
    disconnected = False

    async def watch() -> None:
        nonlocal disconnected
        try:
            while (await request.receive())["type"] != "http.disconnect":
                pass
        except Exception:
            return  # a server that cannot tell us: the work simply runs to its end
        disconnected = True
        task.cancel()

    watcher = asyncio.create_task(watch())
    try:
        return await task
    except asyncio.CancelledError:
        if not disconnected:
            raise  # the handler itself was cancelled (server shutdown): let it end
        # Answered (to no one) as an error, so the request log shows what happened.
        raise ClientDisconnectedError(message) from None
    finally:
        watcher.cancel()
