"""Small raw-ASGI helpers: the emulator carries no framework on its request path."""

from __future__ import annotations

import asyncio

from starlette.types import Receive, Send

from src.services.emulator.wire import Headers


class HttpError(Exception):
    """Raised before a response starts; the app turns it into an OpenRouter error body."""

    def __init__(
        self,
        status: int,
        message: str,
        headers: Headers | None = None,
        metadata: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []
        self.metadata = metadata


class ClientGoneError(Exception):
    """The client disconnected while its request body was still being read."""


async def read_body(receive: Receive, limit: int) -> bytes:
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGoneError
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):  # one message: the usual case, no copy
        if len(body) > limit:
            raise HttpError(413, f"Request body is larger than {limit} bytes")
        return body
    parts = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGoneError
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"Request body is larger than {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


async def send_bytes(send: Send, status: int, body: bytes, headers: Headers) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def sleep_unless_disconnected(receive: Receive, seconds: float) -> bool:
    """Sleep, but stop early when the client goes away. True when the full time passed.

    Servers do not cancel an app whose client left, so without this a `timeout` scenario
    would hold its task for the whole sleep. Only call it once the body has been read: the
    next message is then `http.disconnect`.
    """
    waiter = asyncio.ensure_future(receive())
    try:
        done, _ = await asyncio.wait({waiter}, timeout=seconds)
    finally:
        if not waiter.done():
            waiter.cancel()
    return not done


async def lifespan(receive: Receive, send: Send) -> None:
    """Acknowledge startup and shutdown: the emulator has nothing to build or close."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
