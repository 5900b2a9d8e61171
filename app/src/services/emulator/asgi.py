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
    body, more = await _body_part(receive)
    if not more:  # one message: the usual case, no copy
        _check_size(len(body), limit)
        return body
    parts = [body]
    size = len(body)
    while more:
        chunk, more = await _body_part(receive)
        size += len(chunk)
        _check_size(size, limit)
        parts.append(chunk)
    return b"".join(parts)


async def _body_part(receive: Receive) -> tuple[bytes, bool]:
    """The next piece of the request body, and whether more follows."""
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGoneError
    return message.get("body", b""), message.get("more_body", False)


def _check_size(size: int, limit: int) -> None:
    if size > limit:
        raise HttpError(413, f"Request body is larger than {limit} bytes")


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
