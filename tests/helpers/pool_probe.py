"""`python -m tests.helpers.pool_probe`: the service as `make run` starts it, plus a count of the
upstream responses it holds open, read at GET /e2e-probe/upstream-responses.

A streamed upstream response holds a pooled connection from its headers until it is closed,
so the count can never pass the pool's limit while the limit holds, and it must come back to 0
once every caller has gone: a response left open is a leaked connection. The count is kept in
the app's own process, on its own event loop, as responses open and close, so it is exact: a
socket table read from outside cannot tell a connection whose slot has just been freed from
one still in use.

It wraps httpx.AsyncClient.send, the one call through which the service's upstream client
sends; nothing else in the process uses httpx.AsyncClient.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

PROBE_PATH = "/e2e-probe/upstream-responses"


class OpenResponses:
    def __init__(self) -> None:
        self.open = 0
        self.most = 0
        self.opened = 0

    def opening(self) -> None:
        self.open += 1
        self.opened += 1
        self.most = max(self.most, self.open)

    def closing(self) -> None:
        self.open -= 1


COUNT = OpenResponses()


class _CountedStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self._inner = inner
        self._closed = False
        COUNT.opening()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            if not self._closed:
                self._closed = True
                COUNT.closing()


def count_streamed_responses() -> None:
    send = httpx.AsyncClient.send

    async def counting_send(
        self: httpx.AsyncClient, request: httpx.Request, *, stream: bool = False, **kwargs: Any
    ) -> httpx.Response:
        response = await send(self, request, stream=stream, **kwargs)
        if stream and isinstance(response.stream, httpx.AsyncByteStream):
            response.stream = _CountedStream(response.stream)
        return response

    httpx.AsyncClient.send = counting_send  # type: ignore[method-assign]


class ProbeRoute:
    """Answers PROBE_PATH with the count; every other request goes to the service."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PROBE_PATH:
            await self.app(scope, receive, send)
            return
        body = orjson.dumps({"open": COUNT.open, "most": COUNT.most, "opened": COUNT.opened})
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def main() -> None:
    count_streamed_responses()
    import src.main
    from src.serve import main as serve

    # uvicorn imports "src.main:app" by name: the module is loaded already, so it gets this.
    src.main.app = ProbeRoute(src.main.app)  # type: ignore[assignment]
    serve()


if __name__ == "__main__":
    main()
