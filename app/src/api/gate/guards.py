"""What a browser on another site can and cannot make this service do.

- `CrossSiteGuard`: a state-changing request (POST, PUT, PATCH, DELETE) that a browser sent
  from another site is refused with 403 before anything runs. A page elsewhere could otherwise
  POST a benchmark form to 127.0.0.1 and spend the user's credit: the browser only keeps the
  page from reading the answer, not the request from running. Same-origin pages (Swagger UI),
  curl and scripts (no browser headers) are unaffected; CORS_ORIGINS lists sites allowed too.
- `TrustedHosts` (Starlette's TrustedHostMiddleware, ALLOWED_HOSTS): a request whose Host is not
  ours, or that carries two Host headers, is refused, which defeats DNS rebinding (a site's
  name pointed at 127.0.0.1).
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from src.api.errors.payload import error_messages, scope_request_id, send_error
from src.api.gate.asgi import HttpMiddleware
from src.services.base.exceptions import CrossSiteRequestError, InvalidHostError

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Sec-Fetch-Site values a browser sends for a request the user's own page made or typed in.
_OWN = frozenset({b"same-origin", b"none"})
_HOST_REFUSAL = b"Invalid host header"


class CrossSiteGuard:
    """Pure ASGI: refuses state-changing requests a browser sent from another site."""

    def __init__(self, app: ASGIApp, allowed_origins: Sequence[str] = ()) -> None:
        self.app = app
        self.allowed_origins = frozenset(origin.rstrip("/").lower() for origin in allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in STATE_CHANGING:
            reason = self._refusal(scope)
            if reason is not None:
                await send_error(send, CrossSiteRequestError(reason), scope_request_id(scope))
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope) -> str | None:
        fetch_site = origin = host = None
        for name, value in scope["headers"]:
            if name == b"sec-fetch-site":
                fetch_site = value
            elif name == b"origin":
                origin = value.decode("latin-1").rstrip("/").lower()
            elif name == b"host" and host is None:  # the one TrustedHosts checked
                host = value.decode("latin-1").lower()
        if origin is not None and origin in self.allowed_origins:
            return None
        if fetch_site is not None and fetch_site not in _OWN:
            return (
                f"Cross-site request refused (Sec-Fetch-Site: {fetch_site.decode('latin-1')}): "
                "a page on another site cannot make this service run or spend anything. "
                "List the site in CORS_ORIGINS to allow it."
            )
        if origin is not None and origin != "null" and not _same_site(origin, host, scope):
            return (
                f"Cross-site request refused (Origin: {origin}). "
                "List the site in CORS_ORIGINS to allow it."
            )
        if origin == "null":
            return (
                "Cross-site request refused (Origin: null, a sandboxed or local page). "
                "Only sites listed in CORS_ORIGINS may call the service from a browser."
            )
        return None


def _same_site(origin: str, host: str | None, scope: Scope) -> bool:
    """The page's origin is this service: same host and port, and same scheme (an http page
    is another site for an https service, and the other way round)."""
    parts = urlsplit(origin)
    return parts.netloc == host and parts.scheme == scope.get("scheme", "http")


class TrustedHosts(HttpMiddleware, TrustedHostMiddleware):
    """Starlette's TrustedHostMiddleware, its refusal given in the service's JSON error shape.

    A request with two Host headers is refused whatever ALLOWED_HOSTS says: one of them would
    be checked here and another read elsewhere (the cross-site check, a proxy behind us)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if sum(1 for name, _ in scope["headers"] if name == b"host") > 1:
            detail = "The request has more than one Host header; send one."
            await send_error(send, InvalidHostError(detail), scope_request_id(scope))
            return
        if self.allow_any:
            await self.app(scope, receive, send)
            return
        held: list[Message] = []

        async def reshape(message: Message) -> None:
            # The middleware's own refusal is a plain-text 400; anything else passes as it is.
            if held or (message["type"] == "http.response.start" and message["status"] == 400):
                held.append(message)
                if message["type"] != "http.response.body" or message.get("more_body"):
                    return
                if message.get("body") == _HOST_REFUSAL:
                    detail = (
                        "The Host header names a host this service does not serve (ALLOWED_HOSTS)."
                    )
                    held[:] = error_messages(InvalidHostError(detail), scope_request_id(scope))
                for kept in held:
                    await send(kept)
                held.clear()
                return
            await send(message)

        await TrustedHostMiddleware.__call__(self, scope, receive, reshape)
