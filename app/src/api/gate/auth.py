"""Optional inbound authentication: with PROXY_API_KEYS set, every route but the open ones
(health and the API docs) needs one of the keys.

Pure ASGI middleware, deciding from the headers alone: a refused request's body is never
read, and a route added later is covered without being listed anywhere. A request it lets
through carries who its key makes the caller (`caller_of`): benchmark runs belong to their key.
"""

from __future__ import annotations

import hmac
import inspect
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence

from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from src.api.errors.exception_handlers import handle_service_error
from src.services.base.exceptions import AuthenticationError
from src.services.benchmarker.runs.owners import Caller

# Worded so that the secret redaction (which rewrites "Authorization: <value>") leaves the
# instruction readable.
REFUSAL = (
    "Missing or invalid API key: send one of PROXY_API_KEYS in the Authorization header, "
    "as 'Bearer <key>'."
)
# RFC 6455 "policy violation": a WebSocket handshake refused for the same reason.
_WEBSOCKET_POLICY_VIOLATION = 1008

# Where an accepted request carries its Caller, in the ASGI scope.
CALLER_SCOPE_KEY = "llm_gateway.caller"

# An exception handler: the error answer for a request, in the shape its routes use.
Answer = Callable[[Request, Exception], Response | Awaitable[Response]]


class InboundKeyMiddleware:
    """`keys` pairs each key with the caller it makes. `open_paths` and `open_prefixes` need
    no key. `keyless_pages` (paths; one ending in "/" other than the root is a prefix) pass as
    no caller without a valid key: pages a browser navigates to (a link sends no header), which
    answer with the key prompt and no data. A refusal is answered by the handler of the longest
    matching prefix in `answers`, else by the service's own."""

    def __init__(
        self,
        app: ASGIApp,
        keys: Sequence[tuple[SecretStr, Caller]],
        open_paths: Collection[str],
        open_prefixes: Sequence[str] = (),
        answers: Mapping[str, Answer] | None = None,
        keyless_pages: Sequence[str] = (),
    ) -> None:
        self.app = app
        self._keys = [(key.get_secret_value().encode(), caller) for key, caller in keys]
        self._open_paths = frozenset(open_paths)
        self._open_prefixes = tuple(open_prefixes)
        self._answers = sorted((answers or {}).items(), key=lambda item: -len(item[0]))
        self._pages = tuple(keyless_pages)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._open(scope["path"]):
            await self.app(scope, receive, send)
        elif (caller := self._caller(scope)) is not None:
            scope[CALLER_SCOPE_KEY] = caller
            await self.app(scope, receive, send)
        elif scope["type"] == "http" and self._page(scope["path"]):
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

    def _open(self, path: str) -> bool:
        return path in self._open_paths or path.startswith(self._open_prefixes)

    def _page(self, path: str) -> bool:
        return any(
            path == page or (page.endswith("/") and page != "/" and path.startswith(page))
            for page in self._pages
        )

    def _answer_for(self, path: str) -> Answer:
        for prefix, answer in self._answers:
            if path.startswith(prefix):
                return answer
        return handle_service_error

    def _caller(self, scope: Scope) -> Caller | None:
        """The caller the request's key makes, None without a valid key."""
        value = b""
        for name, header in scope["headers"]:
            if name == b"authorization":
                value = header
                break
        scheme, _, presented = value.partition(b" ")
        candidate = presented.strip()
        # Compare against every key, always: the time taken says nothing about which matched.
        caller = None
        for key, keyed in self._keys:
            if hmac.compare_digest(candidate, key):
                caller = keyed
        return caller if scheme.lower() == b"bearer" else None


def caller_of(scope: Scope) -> Caller | None:
    """Who the key check found the caller to be; None where no check ran."""
    caller = scope.get(CALLER_SCOPE_KEY)
    return caller if isinstance(caller, Caller) else None
