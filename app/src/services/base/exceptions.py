"""Errors raised by services. One handler module maps them to HTTP responses."""

from __future__ import annotations

import orjson

from src.services.base.retry_after import parse_retry_after


class ServiceError(Exception):
    """Base of every error a service raises on purpose. `retry_after`: the seconds after which
    the caller may try again, when the error says so (a 429's or 503's Retry-After)."""

    retry_after: float | None = None

    def __init__(self, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if retry_after is not None:
            self.retry_after = retry_after


class InvalidInputError(ServiceError):
    """The caller sent something we cannot use (beyond what schema validation catches).

    `param`: the request field at fault, by the name the caller sent it under, if one is.
    """

    def __init__(self, detail: str, *, param: str | None = None) -> None:
        super().__init__(detail)
        self.param = param


class LimitExceededError(InvalidInputError):
    """A configured limit (prompts, runs, concurrency, total requests) was exceeded."""


class UnknownProviderError(InvalidInputError):
    """A provider that does not serve the model it was asked for."""


class PayloadTooLargeError(InvalidInputError):
    """A request body past its limit (MAX_JSON_BODY_BYTES, MAX_UPLOAD_BYTES)."""


class CapacityError(ServiceError):
    """The service is at one of its limits on total work; the caller may come back later."""


class ConflictError(ServiceError):
    """The request does not fit the resource's state (cancelling a finished run)."""


class AuthenticationError(ServiceError):
    """The caller did not present one of PROXY_API_KEYS."""


class NotFoundError(ServiceError):
    """A resource of ours (a saved benchmark) does not exist."""


class UnknownModelError(ServiceError):
    """A model id the upstream does not list."""


class InsufficientStorageError(ServiceError):
    """BENCHMARKS_DIR cannot take a run's files: full, not writable, or deleted."""


class JobsBackendUnavailableError(ServiceError):
    """The run store (Redis, JOBS_BACKEND=redis) cannot be reached: nothing is admitted."""

    retry_after = 5.0


class RunnerFailedError(ServiceError):
    """A benchmark runner process ended without recording its run: a fault of ours."""


class ClientDisconnectedError(ServiceError):
    """The caller went away before its answer was ready; the work for it was cancelled."""


class RefusedRequestError(ServiceError):
    """A request refused before any route ran (api/gate): its connection, its Host, its
    origin, or the server's room for it."""


class CrossSiteRequestError(RefusedRequestError):
    """A state-changing request a browser sent from another site."""


class InvalidHostError(RefusedRequestError):
    """A Host header this service does not serve, or more than one."""


class RequestHeadersTooLarge(RefusedRequestError):
    """The request line and headers pass MAX_HEADER_BYTES."""


class RequestTimeout(RefusedRequestError):
    """The headers or the body did not arrive within their timeout."""


class ServiceUnavailable(RefusedRequestError):
    """The server is at MAX_CONNECTIONS; the caller may come back shortly."""

    retry_after = 1.0


class InternalServerError(ServiceError):
    """A fault of ours that no handler answered: the request crashed."""


class UnsafeHeaderError(ServiceError):
    """A request header holds CR, LF or NUL: written, it would split the request. A fault of
    ours (or of a setting), so it is refused before anything is sent."""


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
        super().__init__(f"Upstream returned {status_code}: {message}", retry_after=retry_after)
        self.status_code = status_code
        self.message = message
        self.code = code

    @classmethod
    def from_answer(
        cls, status_code: int, body: bytes, retry_after: str | None, reason: str = ""
    ) -> UpstreamStatusError:
        """Build the error from an upstream answer whose body has been read."""
        return cls(
            status_code,
            _upstream_message(body, reason),
            retry_after=parse_retry_after(retry_after),
        )


class UpstreamStreamError(UpstreamError):
    """The upstream reported an error inside a stream that had already started."""

    def __init__(self, message: str, code: str | int | None = None) -> None:
        # The upstream's own words, as long as it likes: cut as an error answer's are.
        message = message[:_MAX_MESSAGE_CHARS]
        super().__init__(f"Upstream stream failed: {message}")
        self.message = message
        self.code = code


class UpstreamTimeoutError(UpstreamError):
    def __init__(self, detail: str, *, during_connect: bool = False) -> None:
        super().__init__(detail)
        # Waiting for a connection or connecting: nothing of the request was written yet.
        self.during_connect = during_connect


class UpstreamConnectionError(UpstreamError):
    """The upstream could not be reached, or dropped the connection."""

    def __init__(self, detail: str, *, before_answer: bool = False, written: bool = True) -> None:
        super().__init__(detail)
        # Nothing of an answer arrived.
        self.before_answer = before_answer
        # Whether the request's bytes went out: once they did, the upstream may have run (and
        # billed) it, so it is never sent again. Assumed unless the raiser knows better.
        self.written = written


class UpstreamCertificateError(UpstreamConnectionError):
    """The upstream's TLS certificate failed verification: trying again cannot heal it."""


class UpstreamInvalidResponseError(UpstreamError):
    """The upstream answered 2xx with a body we cannot parse."""


_MAX_MESSAGE_CHARS = 500


def _upstream_message(body: bytes, reason: str) -> str:
    """OpenRouter's error body is {"error": {"code", "message"}}; fall back to the raw text."""
    try:
        parsed: object = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])[:_MAX_MESSAGE_CHARS]
        if isinstance(error, str):
            return error[:_MAX_MESSAGE_CHARS]
        if isinstance(parsed.get("detail"), str):
            return str(parsed["detail"])[:_MAX_MESSAGE_CHARS]
    text = body[: _MAX_MESSAGE_CHARS * 4].decode("utf-8", "replace").strip()
    return text[:_MAX_MESSAGE_CHARS] or reason or "no message"
