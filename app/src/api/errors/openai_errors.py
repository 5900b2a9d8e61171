"""OpenAI's error shape, `{"error": {"message", "type", "param", "code"}}`, for the /v1 routes.

A second shape, not a second table: services/base/error_status.py decides the status of every
error, exactly as on the other routes, and the headers (`Retry-After`, `WWW-Authenticate`) are
the same. Only the wording differs, so that OpenAI's clients raise their own typed errors.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from src.api.errors.exception_handlers import Handler, public_detail
from src.api.errors.payload import error_headers
from src.api.plumbing.parsing import MAX_SHOWN_ERRORS, shown_error
from src.excerpt import MAX_SHOWN_ID_CHARS, cut
from src.services.base.error_status import status_for
from src.services.base.exceptions import InvalidInputError, ServiceError
from src.services.base.sse import encode_event

OPENAI_PREFIX = "/v1"
OPENAI_ROUTES = "POST /v1/chat/completions, GET /v1/models and GET /v1/models/{id}"
# OpenAI's `type` for each status it documents; any other is a client or a server error.
_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def error_type(status: int) -> str:
    return _TYPE_BY_STATUS.get(status, "server_error" if status >= 500 else "invalid_request_error")


def openai_error(
    message: str, status: int, code: str | None, param: str | None = None
) -> dict[str, dict[str, str | None]]:
    return {"error": {"message": message, "type": error_type(status), "param": param, "code": code}}


def service_error(request: Request, exc: ServiceError) -> tuple[int, dict[str, Any]]:
    """The status and body of a service error, with the message any error answer would have."""
    status = status_for(exc)
    param = exc.param if isinstance(exc, InvalidInputError) else None
    return status, openai_error(public_detail(request, exc), status, type(exc).__name__, param)


def stream_error_event(request: Request, exc: ServiceError) -> bytes:
    """A stream's last event when it fails after it has started: OpenAI's SDKs raise it."""
    return encode_event(orjson.dumps(service_error(request, exc)[1]))


def _json(body: object, status: int, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def _validation_error(exc: RequestValidationError) -> Response:
    """FastAPI's 422, worded as OpenAI words an invalid request: the field in `param`."""
    problems = []
    for error in exc.errors()[:MAX_SHOWN_ERRORS]:
        shown = shown_error(error)
        where = ".".join(str(part) for part in shown["loc"] if part != "body")
        problems.append((where, shown["msg"] or "invalid", str(shown["type"])))
    message = "; ".join(f"{where}: {msg}" if where else msg for where, msg, _ in problems)
    first_where, _, first_type = problems[0] if problems else ("", "", "")
    body = openai_error(message or "Invalid request", 422, first_type or None, first_where or None)
    return _json(body, 422)


def openai_error_response(request: Request, exc: Exception) -> Response:
    if isinstance(exc, ServiceError):
        request.state.error = exc  # read by the logging middleware
        status, body = service_error(request, exc)
        return _json(body, status, error_headers(exc, status))
    if isinstance(exc, RequestValidationError):
        return _validation_error(exc)
    assert isinstance(exc, StarletteHTTPException)
    message = _http_error_message(request, exc)
    return _json(openai_error(message, exc.status_code, "HTTPError"), exc.status_code, exc.headers)


def _http_error_message(request: Request, exc: StarletteHTTPException) -> str:
    """Routing's own refusals say which request they refuse: an SDK shows only this message."""
    detail = str(exc.detail)
    if exc.status_code not in (404, 405):
        return detail
    asked = f"{request.method} {cut(request.scope['path'], MAX_SHOWN_ID_CHARS)}"
    if exc.status_code == 405:
        return f"{detail}: {asked}."
    return f"{detail}: {asked}. The OpenAI-compatible routes are {OPENAI_ROUTES}."


def openai_shaped(path: str) -> bool:
    """Every answer under /v1, whichever route or none, is in OpenAI's shape."""
    return path == OPENAI_PREFIX or path.startswith(OPENAI_PREFIX + "/")


def by_path(service_shape: Handler) -> Handler:
    """An app-wide exception handler: OpenAI's shape under /v1 (where no route caught the
    error: an unknown path, a method a route does not take), else the service's own."""

    async def handler(request: Request, exc: Exception) -> Response:
        if openai_shaped(request.scope["path"]):
            return openai_error_response(request, exc)
        return await service_shape(request, exc)

    return handler


class OpenAIErrorRoute(APIRoute):
    """A route whose errors, its dependencies' included, take OpenAI's shape instead of the
    service's `{"detail", "error", "request_id"}`. (The inbound key is checked before any route,
    by InboundKeyMiddleware, which answers /v1 in the same shape.)"""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def openai_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except (ServiceError, RequestValidationError, StarletteHTTPException) as exc:
                return openai_error_response(request, exc)

        return openai_handler
