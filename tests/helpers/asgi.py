"""Driving an ASGI app by hand: for what an HTTP client cannot send, such as a caller who
leaves halfway through its request."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.types import Message, Scope


def http_scope(
    method: str, path: str, headers: Mapping[str, str] | None = None, server: str = "service.test"
) -> Scope:
    """An HTTP request's scope; `path` may carry a query string."""
    route, _, query = path.partition("?")
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": route,
        "raw_path": route.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [
            (name.lower().encode(), value.encode()) for name, value in (headers or {}).items()
        ],
        "client": ("127.0.0.1", 50000),
        "server": (server, 80),
    }


class Recorder:
    """An ASGI `send` that keeps every message."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)
