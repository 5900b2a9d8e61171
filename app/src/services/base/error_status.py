"""Which HTTP status each service error stands for.

One table for the error responses (api/errors/exception_handlers.py) and for the status a benchmark
records for a failed request, so the two never disagree.
"""

from __future__ import annotations

from src.services.base.exceptions import (
    AuthenticationError,
    CapacityError,
    ClientDisconnectedError,
    ConflictError,
    CrossSiteRequestError,
    InsufficientStorageError,
    InternalServerError,
    InvalidHostError,
    InvalidInputError,
    JobsBackendUnavailableError,
    LimitExceededError,
    NotFoundError,
    PayloadTooLargeError,
    RequestHeadersTooLarge,
    RequestTimeout,
    RunnerFailedError,
    ServiceError,
    ServiceUnavailable,
    UnknownModelError,
    UpstreamConnectionError,
    UpstreamInvalidResponseError,
    UpstreamStatusError,
    UpstreamStreamError,
    UpstreamTimeoutError,
)

# Checked in order: the first class the error is an instance of decides the status.
STATUS_BY_ERROR: tuple[tuple[type[ServiceError], int], ...] = (
    (AuthenticationError, 401),
    (CrossSiteRequestError, 403),
    (InvalidHostError, 400),
    (RequestHeadersTooLarge, 431),
    (RequestTimeout, 408),
    (ServiceUnavailable, 503),
    (JobsBackendUnavailableError, 503),
    (InternalServerError, 500),
    (CapacityError, 429),
    (ConflictError, 409),
    (PayloadTooLargeError, 413),
    (LimitExceededError, 422),
    (InvalidInputError, 422),
    (NotFoundError, 404),
    (UnknownModelError, 404),
    (InsufficientStorageError, 507),
    (RunnerFailedError, 500),
    (ClientDisconnectedError, 499),  # nginx's "client closed request"; nobody reads it
    (UpstreamTimeoutError, 504),
    (UpstreamConnectionError, 502),
    (UpstreamInvalidResponseError, 502),
    (UpstreamStreamError, 502),
)

# Upstream statuses passed through as they are; 401 means OUR key is wrong, so it is a 502.
UPSTREAM_STATUS_PASSTHROUGH = frozenset({400, 402, 403, 404, 429})
UPSTREAM_TIMEOUT_STATUSES = frozenset({408, 504})


def status_for(error: ServiceError) -> int:
    if isinstance(error, UpstreamStatusError):
        if error.status_code in UPSTREAM_STATUS_PASSTHROUGH:
            return error.status_code
        return 504 if error.status_code in UPSTREAM_TIMEOUT_STATUSES else 502
    for error_type, status in STATUS_BY_ERROR:
        if isinstance(error, error_type):
            return status
    return 500
