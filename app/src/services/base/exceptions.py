"""Errors raised by services. One handler module maps them to HTTP responses."""

from __future__ import annotations

import httpx

from src.services.base.retry_after import parse_retry_after


class ServiceError(Exception):
    """Base of every error a service raises on purpose."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidInputError(ServiceError):
    """The caller sent something we cannot use (beyond what schema validation catches)."""


class LimitExceededError(InvalidInputError):
    """A configured limit (prompts, runs, concurrency, total requests) was exceeded."""


class PayloadTooLargeError(InvalidInputError):
    """An upload is larger than MAX_UPLOAD_BYTES."""


class AuthenticationError(ServiceError):
    """The caller did not present one of PROXY_API_KEYS."""


class NotFoundError(ServiceError):
    """A resource of ours (a saved benchmark) does not exist."""


class UnknownModelError(ServiceError):
    """A model id the upstream does not list."""


class ClientDisconnectedError(ServiceError):
    """The caller went away before its answer was ready; the work for it was cancelled."""


class UpstreamError(ServiceError):
    """The upstream failed: not the caller's fault and not ours, so no traceback is logged."""


class UpstreamStatusError(UpstreamError):
    """The upstream answered with an HTTP error status."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        retry_after: float | None = None,
        code: str | int | None = None,
    ) -> None:
        super().__init__(f"Upstream returned {status_code}: {message}")
        self.status_code = status_code
        self.message = message
        self.retry_after = retry_after
        self.code = code

    @classmethod
    def from_response(cls, response: httpx.Response) -> UpstreamStatusError:
        """Build the error from a response whose body has been read."""
        return cls(
            response.status_code,
            _upstream_message(response),
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )


class UpstreamStreamError(UpstreamError):
    """The upstream reported an error inside a stream that had already started."""

    def __init__(self, message: str, code: str | int | None = None) -> None:
        super().__init__(f"Upstream stream failed: {message}")
        self.message = message
        self.code = code


class UpstreamTimeoutError(UpstreamError):
    def __init__(self, detail: str, *, during_connect: bool = False) -> None:
        super().__init__(detail)
        self.during_connect = during_connect


class UpstreamConnectionError(UpstreamError):
    """The upstream could not be reached, or dropped the connection."""


class UpstreamInvalidResponseError(UpstreamError):
    """The upstream answered 2xx with a body we cannot parse."""


_MAX_MESSAGE_CHARS = 500


def _upstream_message(response: httpx.Response) -> str:
    """OpenRouter's error body is {"error": {"code", "message"}}; fall back to the raw text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])[:_MAX_MESSAGE_CHARS]
        if isinstance(error, str):
            return error[:_MAX_MESSAGE_CHARS]
        if isinstance(body.get("detail"), str):
            return str(body["detail"])[:_MAX_MESSAGE_CHARS]
    text = response.text.strip()
    return text[:_MAX_MESSAGE_CHARS] or response.reason_phrase or "no message"
