"""The service's error answer, `{"detail", "error", "request_id"}`, and the request id it
carries: built here whoever answers, a route's exception handler, a middleware before the
app, or the connection itself before uvicorn hands the request on (api/gate/http_limits.py).

The status of each error comes from services/base/error_status.py.
"""

from __future__ import annotations

import random

import orjson
from starlette.types import Message, Scope, Send

from src.services.base.error_status import status_for
from src.services.base.exceptions import ServiceError
from src.services.base.retry_after import retry_after_header

# Statuses whose answer says when to come back.
_RETRY_STATUSES = frozenset({429, 503})


def new_request_id() -> str:
    return f"{random.getrandbits(128):032x}"


def scope_request_id(scope: Scope) -> str:
    """The id the logging middleware gave the request; "-" before it ran."""
    return str(scope.get("state", {}).get("request_id", "-"))


def error_body(error_name: str, detail: str, request_id: str) -> dict[str, str]:
    return {"detail": detail, "error": error_name, "request_id": request_id}


def error_headers(error: ServiceError, status: int) -> dict[str, str]:
    """What an error answer with `status` tells the client besides its body."""
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if status in _RETRY_STATUSES:
        headers["Retry-After"] = retry_after_header(error.retry_after)
    return headers


def error_answer(
    error: ServiceError, request_id: str
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers and JSON body of an error answered outside any exception handler."""
    status = status_for(error)
    body = orjson.dumps(error_body(type(error).__name__, error.detail, request_id))
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    headers += [
        (name.lower().encode(), value.encode())
        for name, value in error_headers(error, status).items()
    ]
    return status, headers, body


def error_messages(error: ServiceError, request_id: str) -> list[Message]:
    """The ASGI messages answering `error`, for a middleware that answers before the app."""
    status, headers, body = error_answer(error, request_id)
    return [
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": body},
    ]


async def send_error(send: Send, error: ServiceError, request_id: str) -> None:
    for message in error_messages(error, request_id):
        await send(message)
