"""Base async HTTP client: one shared httpx.AsyncClient, typed errors, tenacity retries.

This is the only retry layer of the service. The retry decision and the wait are small pure
functions so that they can be read, and tested, on their own.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import orjson
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from src.services.base.exceptions import (
    UpstreamConnectionError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)
from src.services.base.transport import AiohttpTransport

logger = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({408, 429, 502, 503, 504})
JSON_HEADERS = {"content-type": "application/json"}

Sleep = Callable[[float], Awaitable[None]]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 5
    multiplier: float = 1.0
    min_seconds: float = 1.0
    max_seconds: float = 30.0


def should_retry(error: BaseException) -> bool:
    """Is another attempt worth it? Only for transient upstream conditions."""
    if isinstance(error, UpstreamStatusError):
        if error.status_code in RETRYABLE_STATUSES:
            return True
        # 402 means "no credits"; it is only transient when the upstream says when to come back.
        return error.status_code == 402 and error.retry_after is not None
    if isinstance(error, UpstreamTimeoutError):
        # A read timeout may mean the upstream is still generating (and billing): do not repeat it.
        return error.during_connect
    return isinstance(error, UpstreamConnectionError)


def retry_wait_seconds(error: BaseException | None, attempt: int, policy: RetryPolicy) -> float:
    """Retry-After when given (capped), else capped exponential backoff with jitter."""
    retry_after = getattr(error, "retry_after", None)
    if isinstance(retry_after, float):
        return min(retry_after, policy.max_seconds)
    ceiling = min(policy.max_seconds, policy.multiplier * 2 ** (attempt - 1))
    floor = min(policy.min_seconds, policy.max_seconds)
    return random.uniform(floor, max(floor, ceiling))


async def retry_sleep(seconds: float) -> None:
    """The wait between attempts; tests replace it to record waits instead of sleeping."""
    await asyncio.sleep(seconds)


class BaseClient:
    """Wraps the process-wide httpx.AsyncClient; subclasses add the upstream's endpoints."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        retry_policy: RetryPolicy | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        self._http = http
        self._retry_policy = retry_policy or RetryPolicy()
        self._sleep = sleep
        self._urls: dict[str, httpx.URL] = {}

    def _url(self, path: str) -> httpx.URL:
        # Joined once per path: URL parsing and merging is a visible cost per request.
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = self._http.base_url.join(path)
        return url

    async def request_bytes(
        self, method: str, path: str, *, json: dict[str, Any] | None = None
    ) -> bytes:
        """Send a request (with retries) and return the body of a 2xx answer."""

        async def attempt() -> bytes:
            response = await self._send(method, path, json=json, stream=False)
            return response.content

        return await self._with_retries(attempt, method, path)

    @asynccontextmanager
    async def stream(
        self, method: str, path: str, *, json: dict[str, Any] | None = None
    ) -> AsyncIterator[httpx.Response]:
        """Open a streamed 2xx response. Retries happen only until the headers have arrived."""

        async def attempt() -> httpx.Response:
            return await self._send(method, path, json=json, stream=True)

        response = await self._with_retries(attempt, method, path)
        try:
            yield response
        finally:
            # Closing releases the connection, and on a client disconnect cancels the upstream.
            await response.aclose()

    @staticmethod
    async def iter_lines(response: httpx.Response) -> AsyncIterator[str]:
        """Lines of a streamed body; a connection that breaks mid-way raises a typed error."""
        try:
            async for line in response.aiter_lines():
                yield line
        except httpx.TimeoutException as exc:
            raise UpstreamTimeoutError(
                f"Upstream timed out mid-stream ({type(exc).__name__})"
            ) from exc
        except httpx.TransportError as exc:
            raise UpstreamConnectionError(
                f"Upstream connection broke mid-stream ({type(exc).__name__})"
            ) from exc

    async def _with_retries(self, attempt: Callable[[], Awaitable[T]], method: str, path: str) -> T:
        policy = self._retry_policy

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            return retry_wait_seconds(error, state.attempt_number, policy)

        def log_retry(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            status = getattr(error, "status_code", type(error).__name__)
            logger.warning(
                "RETRY | %s %s | status=%s | attempt=%d/%d | wait=%.2fs",
                method,
                path,
                status,
                state.attempt_number,
                policy.attempts,
                state.upcoming_sleep,
            )

        retrying = AsyncRetrying(
            stop=stop_after_attempt(policy.attempts),
            retry=retry_if_exception(should_retry),
            wait=wait,
            # Looked up per call so a patched module-level retry_sleep takes effect.
            sleep=self._sleep or (lambda seconds: retry_sleep(seconds)),
            before_sleep=log_retry,
            reraise=True,
        )
        return await retrying(attempt)

    async def _send(
        self, method: str, path: str, *, json: dict[str, Any] | None, stream: bool
    ) -> httpx.Response:
        content = orjson.dumps(json) if json is not None else None
        request = self._http.build_request(
            method, self._url(path), content=content, headers=JSON_HEADERS if content else None
        )
        try:
            response = await self._http.send(request, stream=stream)
        except httpx.TimeoutException as exc:
            during_connect = isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
            raise UpstreamTimeoutError(
                f"Upstream timed out ({type(exc).__name__}) on {method} {path}",
                during_connect=during_connect,
            ) from exc
        except httpx.TransportError as exc:
            raise UpstreamConnectionError(
                f"Upstream connection failed ({type(exc).__name__}) on {method} {path}"
            ) from exc
        if response.is_success:
            return response
        try:
            await response.aread()
        except httpx.HTTPError:
            pass
        finally:
            # A failed response is closed before any retry, or its pooled connection leaks.
            await response.aclose()
        raise UpstreamStatusError.from_response(response)


class _NoCookies(httpx.Cookies):
    def extract_cookies(self, response: httpx.Response) -> None:  # noqa: ARG002
        return None


class UpstreamHTTPClient(httpx.AsyncClient):
    """httpx.AsyncClient without a cookie jar.

    One client serves every caller of the proxy, so a cookie set by the upstream for one
    request must not ride along on the next caller's request. Skipping the jar also saves
    the per-response cookie parsing, which showed up in profiles of the hot path.
    """

    @property
    def cookies(self) -> httpx.Cookies:
        return _NoCookies()

    @cookies.setter
    def cookies(self, cookies: object) -> None:  # noqa: ARG002
        return None


def build_http_client(
    base_url: str,
    *,
    api_key: str,
    timeout_seconds: float,
    connect_timeout_seconds: float,
    max_connections: int,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """The one upstream client of the process. The key goes into its default headers, once.

    The default transport is aiohttp under httpx's API (see transport.py); tests inject
    httpx's own transport where respx must intercept it.
    """
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    return UpstreamHTTPClient(
        base_url=base_url.rstrip("/") + "/",
        headers=headers,
        timeout=httpx.Timeout(timeout_seconds, connect=connect_timeout_seconds),
        transport=transport or AiohttpTransport(max_connections=max_connections),
    )


__all__ = [
    "BaseClient",
    "RetryPolicy",
    "UpstreamError",
    "build_http_client",
    "retry_wait_seconds",
    "should_retry",
]
