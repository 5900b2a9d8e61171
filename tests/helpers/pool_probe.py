"""`python -m tests.helpers.pool_probe`: the service as `make run` starts it, plus its upstream
pool's own counters, read at GET /e2e-probe/upstream-pool.

The counters are the transport's (`WireTransport.stats()`), kept in the app's own process as
connections open, are lent out and come back: exact, where a socket table read from outside
cannot tell a connection whose slot has just been freed from one still in use.
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from src.services.base.transport import WireTransport

PROBE_PATH = "/e2e-probe/upstream-pool"


class ProbeRoute:
    """Answers PROBE_PATH with the pool's counters; every other request goes to the service."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PROBE_PATH:
            await self.app(scope, receive, send)
            return
        transport = scope["state"]["openrouter"].transport
        assert isinstance(transport, WireTransport)
        stats = transport.stats()
        body = orjson.dumps(
            {"in_use": stats.in_use, "most_open": stats.most_open, "requests": stats.requests}
        )
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def main() -> None:
    import src.main
    from src.serve import main as serve

    # uvicorn imports "src.main:app" by name: the module is loaded already, so it gets this.
    src.main.app = ProbeRoute(src.main.app)  # type: ignore[assignment]
    serve()


if __name__ == "__main__":
    main()
