"""The request logging middleware (pure ASGI): the outermost layer a request meets, so every
request, refused or not, gets an X-Request-ID, one log line, and a JSON 500 if it crashes."""

from __future__ import annotations

import logging
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from src import metrics
from src.api.errors.payload import new_request_id, send_error
from src.api.gate.asgi import HttpMiddleware
from src.excerpt import MAX_LOGGED_CHARS, cut
from src.services.base.exceptions import InternalServerError, UpstreamError
from src.services.base.timing import UpstreamCall, now

REQUEST_ID_HEADER = b"x-request-id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Where a route leaves its UpstreamCall, in the request's scope state.
UPSTREAM_CALL_KEY = "upstream_call"

logger = logging.getLogger(__name__)


class RequestLoggingMiddleware(HttpMiddleware):
    """One log line per HTTP request, an X-Request-ID on every response, a JSON 500 for crashes;
    with `metrics`, the same outcome counted for Prometheus (src/metrics.py)."""

    def __init__(self, app: ASGIApp, metrics: bool = False) -> None:
        self.app = app
        self.metrics = metrics

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.metrics:
            await self._answer(scope, receive, send)
            return
        metrics.request_started()
        try:
            await self._answer(scope, receive, send)
        finally:
            metrics.request_ended()

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = _incoming_request_id(scope) or new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        request_id_header = (REQUEST_ID_HEADER, request_id.encode())
        started = now()
        status_code = 500
        response_started = False

        async def send_with_request_id(message: Message) -> None:
            nonlocal status_code, response_started
            if message["type"] == "http.response.start":
                status_code = message["status"]
                response_started = True
                # No route of ours sets this header, so it is added, not replaced.
                message["headers"] = [*message.get("headers", ()), request_id_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        except Exception as exc:
            self._record(scope, started, 500, exc)
            if response_started:
                raise  # a stream broke mid-way: let the server drop the connection
            error = InternalServerError("Internal server error")
            await send_error(send_with_request_id, error, request_id)
            return
        self._record(scope, started, status_code, scope["state"].get("error"))

    def _record(self, scope: Scope, started: float, status_code: int, error: Any) -> None:
        elapsed = now() - started
        _log_request(scope, elapsed, status_code, error)
        if self.metrics:
            _count_request(scope, elapsed, status_code, error)


def note_upstream_call(scope: Scope, model: str) -> UpstreamCall:
    """A route's upstream call for `model`, for the route to fill in and the log to read."""
    call = UpstreamCall(model)
    scope["state"][UPSTREAM_CALL_KEY] = call
    return call


def _count_request(scope: Scope, elapsed: float, status_code: int, error: Any) -> None:
    route_path = getattr(scope.get("route"), "path", metrics.NO_ROUTE)
    call = scope["state"].get(UPSTREAM_CALL_KEY)
    call = call if isinstance(call, UpstreamCall) else None
    metrics.record_request(route_path, scope["method"], status_code, elapsed, call)
    failure = error if isinstance(error, UpstreamError) or call is None else call.failure
    if isinstance(failure, UpstreamError):
        metrics.record_upstream_error(failure)
    if call is not None and call.timing.sent and status_code < 400:
        metrics.record_upstream(call)


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            candidate = value.decode("latin-1")
            return candidate if _VALID_REQUEST_ID.match(candidate) else None
    return None


def _log_request(scope: Scope, elapsed: float, status_code: int, error: Any) -> None:
    endpoint = scope.get("endpoint")
    handler = getattr(endpoint, "__name__", "-")
    line = "%s | %s %s | handler=%s | time=%.4fs | status_code=%d"
    path = cut(scope["path"], MAX_LOGGED_CHARS)
    args: tuple[Any, ...] = (scope["method"], path, handler, elapsed)
    if isinstance(error, UpstreamError):
        # Not our fault: the message is enough, a traceback would only be noise. A 429 is the
        # upstream asking the caller to come back later (with Retry-After): nothing is broken.
        message = cut(str(error), MAX_LOGGED_CHARS)
        level, tag = (
            (logging.WARNING, "RATE_LIMITED") if status_code == 429 else (logging.ERROR, "ERROR")
        )
        upstream_args = (*args, status_code, type(error).__name__, message)
        logger.log(level, line + " | %s: %s", tag, *upstream_args)
    elif isinstance(error, BaseException) and status_code >= 500:
        logger.error(line, "ERROR", *args, status_code, exc_info=error)
    elif status_code >= 400:
        detail = (
            f" | {type(error).__name__}: {cut(str(error), MAX_LOGGED_CHARS)}"
            if isinstance(error, BaseException)
            else ""
        )
        logger.warning(line + "%s", "CLIENT_ERROR", *args, status_code, detail)
    else:
        logger.info(line, "OK", *args, status_code)
