"""The second upstream transport: httpx's own, for networks the wire transport does not serve.

`UPSTREAM_TRANSPORT=httpx` puts this adapter under the same `BaseClient`. It sends through one
inner `httpx.AsyncClient` with `trust_env`, so proxies (`HTTP(S)_PROXY`, `ALL_PROXY`, `NO_PROXY`,
SOCKS through `socks5://`), `SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured as httpx honours
them (not for the embedded emulator, which is on this machine), with optional HTTP/2 and a
client certificate.

What it gives up: the clock. httpx hands bytes to the awaiting task, so the client's
`_TimedStream` reads the time there, after whatever else the loop ran first, not when the bytes
left or reached the socket (`make perf` shows the difference).

httpx's exceptions become the service's own here, at the one place they can arise: while
sending (`handle_async_request`) and while the body is read (`_MappedBody`).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx

from src.services.base.exceptions import (
    UpstreamCertificateError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamInvalidResponseError,
    UpstreamTimeoutError,
)

# The wire transport keeps an idle connection this long; httpx's own default is 5 s.
KEEPALIVE_SECONDS = 30.0

E = TypeVar("E", bound=BaseException)


@dataclass(frozen=True, slots=True)
class HttpxOptions:
    """What only this transport speaks: HTTP/2 and a client certificate (UPSTREAM_HTTP2,
    UPSTREAM_CLIENT_CERT, UPSTREAM_CLIENT_KEY)."""

    http2: bool = False
    client_cert: Path | None = None
    client_key: Path | None = None


class HttpxTransport(httpx.AsyncBaseTransport):
    """At most `max_connections` upstream connections, through httpx's pool."""

    def __init__(
        self,
        *,
        max_connections: int = 1000,
        max_body_bytes: int | None = None,
        options: HttpxOptions = HttpxOptions(),
        trust_env: bool = True,
    ) -> None:
        self._max_connections = max_connections
        self._max_body_bytes = max_body_bytes
        self._in_use = 0
        self._client = httpx.AsyncClient(
            trust_env=trust_env,
            http2=options.http2,
            verify=_ssl_context(options, trust_env),
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=KEEPALIVE_SECONDS,
            ),
            follow_redirects=False,
        )

    @property
    def in_use(self) -> int:
        """Requests sent whose answer has not been closed yet."""
        return self._in_use

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        max_body = request.extensions.get("max_body_bytes", self._max_body_bytes)
        self._in_use += 1
        try:
            answer = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            self._in_use -= 1
            raise self._sending_error(exc, timeouts, request.url) from exc
        except BaseException:
            self._in_use -= 1
            raise
        return httpx.Response(
            answer.status_code,
            headers=answer.headers.raw,
            stream=_MappedBody(self, answer, max_body, timeouts.get("read")),
            extensions=answer.extensions,
            request=request,
        )

    def release(self) -> None:
        self._in_use -= 1

    async def aclose(self) -> None:
        await self._client.aclose()

    def _sending_error(
        self, exc: httpx.HTTPError, timeouts: dict[str, float | None], url: httpx.URL
    ) -> UpstreamError:
        """Before an answer's head: only a failure to connect leaves the request unsent."""
        where = f"{url.scheme}://{url.host}:{url.port or _DEFAULT_PORTS.get(url.scheme, 80)}"
        if isinstance(exc, httpx.PoolTimeout):
            return UpstreamTimeoutError(
                f"No free upstream connection within {timeouts.get('pool')} s "
                f"(UPSTREAM_MAX_CONNECTIONS={self._max_connections})",
                during_connect=True,
            )
        if isinstance(exc, httpx.ConnectTimeout):
            return UpstreamTimeoutError(
                f"Upstream timed out: connecting to {where} took over {timeouts.get('connect')} s",
                during_connect=True,
            )
        if isinstance(exc, httpx.UnsupportedProtocol):
            # A URL or proxy scheme httpx cannot speak: no attempt would fare better.
            return UpstreamConnectionError(f"Upstream connection failed: {exc}", written=False)
        if isinstance(exc, httpx.ConnectError | httpx.ProxyError):
            return _connect_error(exc, where)
        if isinstance(exc, httpx.WriteTimeout):
            return UpstreamTimeoutError(
                f"Upstream timed out: sending the request to {where} took over "
                f"{timeouts.get('write')} s"
            )
        return _exchange_error(exc, timeouts.get("read"), head_done=False)


@dataclass(eq=False)
class _MappedBody(httpx.AsyncByteStream):
    """The answer's body as httpx reads it, with its failures and its size limit ours."""

    pool: HttpxTransport
    answer: httpx.Response
    max_body_bytes: int | None
    read_timeout: float | None
    _released: bool = field(default=False, init=False)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = 0
        chunks = self.answer.aiter_raw()
        while True:
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            except httpx.HTTPError as exc:
                raise _exchange_error(exc, self.read_timeout, head_done=True) from exc
            size += len(chunk)
            if self.max_body_bytes is not None and size > self.max_body_bytes:
                # Closed unread: the connection is dropped, and the upstream stops sending.
                await self.aclose()
                raise UpstreamInvalidResponseError(
                    f"Upstream answer is larger than MAX_UPSTREAM_RESPONSE_BYTES="
                    f"{self.max_body_bytes} bytes"
                )
            yield chunk

    async def aclose(self) -> None:
        if not self._released:
            self._released = True
            try:
                await self.answer.aclose()
            finally:
                self.pool.release()


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _ssl_context(options: HttpxOptions, trust_env: bool) -> ssl.SSLContext:
    # httpx's own defaults (certifi, or SSL_CERT_FILE / SSL_CERT_DIR), plus our certificate:
    # httpx's `cert=` argument is deprecated in favour of a context that carries it.
    context = httpx.create_ssl_context(trust_env=trust_env)
    if options.client_cert is not None:
        context.load_cert_chain(options.client_cert, options.client_key)
    return context


def _connect_error(exc: httpx.HTTPError, where: str) -> UpstreamConnectionError:
    """Nothing was written: the request may go again, unless the certificate was refused."""
    refused = _cause_of(exc, ssl.SSLCertVerificationError)
    if refused is not None:
        problem = refused.verify_message or refused.reason or str(refused)
        return UpstreamCertificateError(
            f"Upstream certificate check failed for {where}: certificate verify failed: "
            f"{problem}. If the upstream (or a proxy that inspects TLS) uses a private CA, set "
            f"SSL_CERT_FILE (a PEM bundle) or SSL_CERT_DIR to certificates that include it",
            written=False,
        )
    return UpstreamConnectionError(
        f"Upstream connection failed: cannot reach {where} ({type(exc).__name__}: {exc})",
        before_answer=True,
        written=False,
    )


def _exchange_error(
    exc: httpx.HTTPError, read_timeout: float | None, *, head_done: bool
) -> UpstreamError:
    """Once the request may have been written, nothing here is safe to send again."""
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeoutError(f"Upstream timed out: nothing received for {read_timeout} s")
    if isinstance(exc, httpx.RemoteProtocolError) and not _is_disconnect(exc):
        return UpstreamInvalidResponseError(f"Upstream sent invalid HTTP: {exc}")
    if head_done:
        return UpstreamConnectionError(
            f"Upstream connection broke mid-answer ({type(exc).__name__}: {exc})"
        )
    return UpstreamConnectionError(
        f"Upstream connection failed: closed after the request was sent ({type(exc).__name__}: "
        f"{exc})"
    )


def _is_disconnect(exc: httpx.RemoteProtocolError) -> bool:
    # h11 names a peer that closed early this way; every other protocol error is bad bytes.
    text = str(exc)
    return "disconnected" in text or "peer closed" in text


def _cause_of(exc: BaseException, kind: type[E]) -> E | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
