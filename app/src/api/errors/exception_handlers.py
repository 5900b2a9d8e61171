"""Where errors raised inside the app become HTTP responses, in the shape of api/errors/payload.py.

The status of each error comes from services/base/error_status.py.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from src.api.errors.payload import error_body, error_headers
from src.api.plumbing.parsing import MAX_SHOWN_ERRORS, shown_error
from src.redaction import Redactor
from src.services.base.error_status import status_for
from src.services.base.exceptions import (
    ServiceError,
    UpstreamStatusError,
)


def request_id_of(request: Request) -> str:
    return str(getattr(request.state, "request_id", "-"))


def public_detail(request: Request, error: ServiceError) -> str:
    """The error text a client may see: upstream messages can echo keys back."""
    if isinstance(error, UpstreamStatusError) and error.status_code == 401:
        return "The upstream rejected the service's API key (OPENROUTER_API_KEY)."
    redactor: Redactor | None = getattr(request.state, "redactor", None)
    return redactor(error.detail) if redactor else error.detail


async def handle_service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    request.state.error = exc  # read by the logging middleware
    status = status_for(exc)
    return JSONResponse(
        error_body(type(exc).__name__, public_detail(request, exc), request_id_of(request)),
        status_code=status,
        headers=error_headers(exc, status),
    )


async def handle_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse(
        error_body("HTTPError", str(exc.detail), request_id_of(request)),
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def handle_validation_error(_: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own 422 shape, its inputs cut to excerpts: FastAPI's handler would echo each
    input whole, and fail on one it cannot write as JSON (NaN)."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()[:MAX_SHOWN_ERRORS]
    return JSONResponse({"detail": [shown_error(error) for error in errors]}, status_code=422)


Handler = Callable[[Request, Exception], Coroutine[Any, Any, Response]]


def register_exception_handlers(app: FastAPI, shape: Callable[[Handler], Handler]) -> None:
    """`shape` wraps each handler: it may answer some paths in another shape (OpenAI's)."""
    app.add_exception_handler(ServiceError, shape(handle_service_error))
    app.add_exception_handler(RequestValidationError, shape(handle_validation_error))
    app.add_exception_handler(StarletteHTTPException, shape(handle_http_exception))
