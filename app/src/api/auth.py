"""Optional inbound authentication: with PROXY_API_KEYS set, every route but the open ones
(health and the API docs) needs one of the keys.

Pure ASGI middleware, deciding from the headers alone: a refused request's body is never
read, and a route added later is covered without being listed anywhere.
"""

from __future__ import annotations

import hmac
import inspect
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence

from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from src.api.exception_handlers import handle_service_error
from src.services.base.exceptions import AuthenticationError

# Worded so that the secret redaction (which rewrites "Authorization: <value>") leaves the
# instruction readable.
REFUSAL = (
    "Missing or invalid API key: send one of PROXY_API_KEYS in the Authorization header, "
    "as 'Bearer <key>'."
)
# RFC 6455 "policy violation": a WebSocket handshake refused for the same reason.
_WEBSOCKET_POLICY_VIOLATION = 1008

# An exception handler: the error answer for a request, in the shape its routes use.
Answer = Callable[[Request, Exception], Response | Awaitable[Response]]


class InboundKeyMiddleware:
    """`open_paths` and `open_prefixes` need no key. A refusal is answered by the exception
    handler of the longest matching prefix in `answers`, else by the service's own."""

    def __init__(
        self,
        app: ASGIApp,
        keys: Sequence[SecretStr],
        open_paths: Collection[str],
        open_prefixes: Sequence[str] = (),
        answers: Mapping[str, Answer] | None = None,
    ) -> None:
        self.app = app
        self._keys = [key.get_secret_value().encode() for key in keys]
        self._open_paths = frozenset(open_paths)
        self._open_prefixes = tuple(open_prefixes)
        self._answers = sorted((answers or {}).items(), key=lambda item: -len(item[0]))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._allowed(scope):
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": _WEBSOCKET_POLICY_VIOLATION})
        else:
            # The error mapping every other error goes through; it also tells the logging
            # middleware (outside this one) what the request failed with.
            answer = self._answer_for(scope["path"])
            result = answer(Request(scope), AuthenticationError(REFUSAL))
            response = await result if inspect.isawaitable(result) else result
            await response(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        path: str = scope["path"]
        return (
            path in self._open_paths
            or path.startswith(self._open_prefixes)
            or self._authorized(scope)
        )

    def _answer_for(self, path: str) -> Answer:
        for prefix, answer in self._answers:
            if path.startswith(prefix):
                return answer
        return handle_service_error

    def _authorized(self, scope: Scope) -> bool:
        value = b""
        for name, header in scope["headers"]:
            if name == b"authorization":
                value = header
                break
        scheme, _, presented = value.partition(b" ")
        candidate = presented.strip()
        # Compare against every key, always: the time taken says nothing about which matched.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        return matched and scheme.lower() == b"bearer"
