"""The upstream transport: HTTP/1.1 on asyncio and httptools, under httpx's transport API.

Two reasons it exists instead of httpx's own pool or aiohttp:
- The clock. A response's bytes are stamped in the protocol's `data_received`, the moment the
  loop reads them off the socket, and the request's when it is handed to the socket. Any
  client that reads the clock in the awaiting task instead also counts every other task the
  loop runs first, and under a burst of answers that is most of the error (`make perf`
  compares this against a plain aiohttp client).
- The cost. It does only what a proxy needs of HTTP/1.1 (keep-alive pool, chunked bodies,
  TLS, timeouts), a fraction of the Python per request of a general-purpose client.

Failures become the service's own errors right here, in `_connection_error` and its callers:
there is no second translation layer above.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final, cast

import httptools
import httpx

from src.services.base.connect import (
    Resolver,
    Route,
    open_connection,
    route_through,
    system_resolver,
)
from src.services.base.exceptions import (
    UpstreamConnectionError,
    UpstreamInvalidResponseError,
    UpstreamTimeoutError,
)
from src.services.base.proxies import ProxyEndpoint, ProxyRules
from src.services.base.timing import now

DEFAULT_PORTS: Final = {"http": 80, "https": 443}
# Reading pauses while this much of a body waits for its consumer, and resumes below half.
_HIGH_WATER: Final = 1024 * 1024
# An answer's status line and headers; httptools would otherwise buffer any amount of them.
MAX_HEAD_BYTES: Final = 256 * 1024

Origin = tuple[str, str, int]


@dataclass(slots=True)
class WireTiming:
    """When one HTTP exchange crossed the socket, in `now()` seconds."""

    sent: float = 0.0
    head: float = 0.0
    end: float = 0.0


@dataclass(frozen=True, slots=True)
class PoolStats:
    open: int  # connections open now, in use or idle
    in_use: int
    most_open: int  # the highest `open` ever reached
    requests: int  # requests sent since the pool was made


class _Connection(asyncio.Protocol):
    """One keep-alive connection: writes a request, parses the response as bytes arrive."""

    def __init__(self, origin: Origin, loop: asyncio.AbstractEventLoop) -> None:
        self.origin = origin
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.counted = True  # in the pool's count of open connections until dropped
        self.exchanges = 0
        self.idle_since = 0.0
        self._begin_exchange(WireTiming(), None)

    def _begin_exchange(self, timing: WireTiming, max_body_bytes: int | None) -> None:
        self.timing = timing
        self.max_body_bytes = max_body_bytes
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.keep_alive = False
        self.complete = False
        self.received_any = False
        self.chunks: collections.deque[tuple[bytes, float]] = collections.deque()
        self.buffered = 0
        self.body_bytes = 0
        self.head_bytes = 0
        self.failure: Exception | None = None
        self.callback_failure: Exception | None = None
        self.waiter: asyncio.Future[None] | None = None
        self._arrived = 0.0
        self._paused = False

    # --- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they implement it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._arrived = now()
        self.received_any = True
        try:
            self.parser.feed_data(data)
        except Exception as exc:
            # What a callback raised arrives as it is or wrapped by httptools; the callback
            # left the reason here either way.
            self._fail(
                self.callback_failure
                or UpstreamInvalidResponseError(f"Upstream sent invalid HTTP: {exc}")
            )
            return
        if not self.head_done:  # then every byte so far belongs to the head
            self.head_bytes += len(data)
            if self.head_bytes > MAX_HEAD_BYTES:
                self._fail(
                    UpstreamInvalidResponseError(
                        f"Upstream answer's headers are larger than {MAX_HEAD_BYTES} bytes"
                    )
                )

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.complete or self.failure is not None:
            return
        if self.head_done and exc is None and self._body_until_close():
            self.timing.end = now()
            self._finish()
            return
        self._fail(_closed_error(self.head_done, exc))

    # --- httptools callbacks -----------------------------------------------------------------

    def on_status(self, status: bytes) -> None:
        self.reason = status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        # Asked now: llhttp forgets it once the message is complete.
        self.keep_alive = self.parser.should_keep_alive()
        self.timing.head = self._arrived
        self.head_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if self.max_body_bytes is not None and self.body_bytes > self.max_body_bytes:
            self.callback_failure = UpstreamInvalidResponseError(
                f"Upstream answer is larger than MAX_UPSTREAM_RESPONSE_BYTES="
                f"{self.max_body_bytes} bytes"
            )
            raise self.callback_failure  # stops the parser
        self.chunks.append((body, self._arrived))
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.timing.end = self._arrived
        self._finish()

    # --- used by the transport -----------------------------------------------------------------

    def send(self, head: bytes, body: bytes, max_body_bytes: int | None) -> WireTiming:
        assert self.transport is not None
        timing = WireTiming()
        self._begin_exchange(timing, max_body_bytes)
        self.exchanges += 1
        message = head + body  # one send: one syscall
        timing.sent = now()  # before the send, so the upstream cannot have started earlier
        self.transport.write(message)
        return timing

    async def wait_head(self, timeout: float | None) -> None:
        while not self.head_done:
            await self.wait(timeout)

    async def next_chunk(self, timeout: float | None) -> tuple[bytes, float] | None:
        """The next piece of body and when it arrived; None once the body is complete."""
        while not self.chunks:
            if self.complete:
                return None
            await self.wait(timeout)
        data, arrived = self.chunks.popleft()
        self.buffered -= len(data)
        if self._paused and self.buffered < _HIGH_WATER // 2 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data, arrived

    @property
    def reusable(self) -> bool:
        return self.complete and not self.closed and self.keep_alive

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # --- internals -------------------------------------------------------------------------------

    async def wait(self, timeout: float | None) -> None:
        """Until something arrives (or the timeout, or a failure, which is raised)."""
        if self.failure is not None:
            raise self.failure
        waiter = self.waiter = self.loop.create_future()
        timer = (
            self.loop.call_later(timeout, _expire, waiter, timeout) if timeout is not None else None
        )
        try:
            await waiter
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()
        if self.failure is not None:
            raise self.failure

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _finish(self) -> None:
        self.complete = True
        self._wake()

    def _fail(self, error: Exception) -> None:
        if self.failure is None:
            self.failure = error
        self.close()
        self._wake()

    def _body_until_close(self) -> bool:
        names = {name.lower() for name, _ in self.headers}
        return b"content-length" not in names and b"transfer-encoding" not in names


def _expire(waiter: asyncio.Future[None], timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(
            UpstreamTimeoutError(f"Upstream timed out: nothing received for {timeout:g} s")
        )


def _closed_error(head_done: bool, exc: Exception | None) -> UpstreamConnectionError:
    reason = f" ({type(exc).__name__}: {exc})" if exc else ""
    if head_done:
        return UpstreamConnectionError(f"Upstream connection broke mid-answer{reason}")
    return UpstreamConnectionError(
        f"Upstream connection failed: closed before answering{reason}", before_answer=True
    )


def _connection_error(exc: OSError, origin: Origin) -> UpstreamConnectionError:
    scheme, host, port = origin
    return UpstreamConnectionError(
        f"Upstream connection failed: cannot reach {scheme}://{host}:{port} ({type(exc).__name__}: "
        f"{exc.strerror or exc})",
        before_answer=True,
    )


class WireBody(httpx.AsyncByteStream):
    """A response body as it arrives: `next()` gives each piece with its arrival time."""

    def __init__(
        self, pool: WireTransport, connection: _Connection, read_timeout: float | None
    ) -> None:
        self._pool = pool
        self._connection = connection
        self._read_timeout = read_timeout
        self._released = False
        self.timing = connection.timing

    async def next(self) -> tuple[bytes, float] | None:
        """The next piece of body and when it arrived; None once the body is complete."""
        return await self._connection.next_chunk(self._read_timeout)

    async def read(self) -> bytes:
        """The whole body; the exchange's end is stamped when its last byte arrived."""
        parts = []
        while (item := await self.next()) is not None:
            parts.append(item[0])
        return b"".join(parts)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (item := await self.next()) is not None:
            yield item[0]

    async def aclose(self) -> None:
        if not self._released:
            self._released = True
            self._pool.release(self._connection)


class WireTransport(httpx.AsyncBaseTransport):
    """A pool of keep-alive connections, at most `max_connections` open at once."""

    def __init__(
        self,
        *,
        max_connections: int = 1000,
        keepalive_seconds: float = 30.0,
        max_body_bytes: int | None = None,
        trust_env: bool = True,
        resolver: Resolver = system_resolver,
    ) -> None:
        """`trust_env`: the proxy variables are read now, as httpx's client reads them."""
        self._proxies = ProxyRules.from_environment() if trust_env else ProxyRules.none()
        self._routes: dict[Origin, Route] = {}
        self._resolver = resolver
        self._limit = asyncio.Semaphore(max_connections)
        self._max_connections = max_connections
        self._keepalive_seconds = keepalive_seconds
        self._max_body_bytes = max_body_bytes
        self._idle: dict[Origin, list[_Connection]] = {}
        self._open = 0
        self._in_use = 0
        self._most_open = 0
        self._requests = 0
        self._ssl: ssl.SSLContext | None = None
        self._closed = False

    def stats(self) -> PoolStats:
        return PoolStats(
            open=self._open,
            in_use=self._in_use,
            most_open=self._most_open,
            requests=self._requests,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        read_timeout = timeouts.get("read")
        url = request.url
        origin = (url.scheme, url.host, url.port or DEFAULT_PORTS.get(url.scheme, 80))
        head = _encode_head(request, self._routes.get(origin) or self._route(origin))
        body = await request.aread()
        max_body = request.extensions.get("max_body_bytes", self._max_body_bytes)
        while True:
            connection = await self._checkout(origin, timeouts)
            reused = connection.exchanges > 0
            self._requests += 1
            try:
                connection.send(head, body, max_body)
                await connection.wait_head(read_timeout)
            except UpstreamConnectionError as exc:
                self.release(connection)
                # The server closed an idle connection as we reused it: nothing was answered,
                # so the request goes again on a fresh connection (every HTTP client does this).
                if reused and exc.before_answer and not connection.received_any:
                    continue
                raise
            except BaseException:
                self.release(connection)
                raise
            return httpx.Response(
                connection.status,
                headers=connection.headers,
                stream=WireBody(self, connection, read_timeout),
                extensions={"http_version": b"HTTP/1.1", "reason_phrase": connection.reason},
                request=request,
            )

    def release(self, connection: _Connection) -> None:
        """Back to the pool if its answer was read whole, else closed (the upstream stops)."""
        self._in_use -= 1
        if connection.reusable and not self._closed:
            connection.idle_since = now()
            self._idle.setdefault(connection.origin, []).append(connection)
        else:
            self._drop(connection)
        self._limit.release()

    async def aclose(self) -> None:
        self._closed = True
        for connections in self._idle.values():
            for connection in connections:
                self._drop(connection)
        self._idle.clear()

    async def _checkout(self, origin: Origin, timeouts: dict[str, float | None]) -> _Connection:
        if self._limit.locked():
            try:
                async with asyncio.timeout(timeouts.get("pool")):
                    await self._limit.acquire()
            except TimeoutError:
                raise UpstreamTimeoutError(
                    f"No free upstream connection within {timeouts.get('pool')} s "
                    f"(UPSTREAM_MAX_CONNECTIONS={self._max_connections})",
                    during_connect=True,
                ) from None
        else:
            await self._limit.acquire()
        self._in_use += 1
        try:
            return self._reuse(origin) or await self._connect(origin, timeouts.get("connect"))
        except BaseException:
            self._in_use -= 1
            self._limit.release()
            raise

    def _reuse(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        expiry = now() - self._keepalive_seconds
        while idle:
            connection = idle.pop()
            if not connection.closed and connection.idle_since > expiry:
                return connection
            self._drop(connection)
        return None

    def proxy_for(self, url: httpx.URL) -> ProxyEndpoint | None:
        """The proxy that requests to `url` go through, or None."""
        port = url.port or DEFAULT_PORTS.get(url.scheme, 80)
        return self._route((url.scheme, url.host, port)).proxy

    def _route(self, origin: Origin) -> Route:
        """Decided once per origin, when it is first asked for."""
        route = self._routes.get(origin)
        if route is None:
            scheme, host, port = origin
            route = self._routes[origin] = route_through(
                self._proxies.proxy_for(scheme, host, port), scheme
            )
        return route

    async def _connect(self, origin: Origin, timeout: float | None) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls = self._ssl_context() if scheme == "https" else None
        route = self._route(origin)
        self._open += 1
        self._most_open = max(self._most_open, self._open)
        try:
            async with asyncio.timeout(timeout):
                connection = await open_connection(
                    lambda: _Connection(origin, loop),
                    host=host,
                    port=port,
                    route=route,
                    tls=tls,
                    resolver=self._resolver,
                )
        except TimeoutError:
            self._open -= 1
            through = f" through proxy {route.proxy.label}" if route.proxy else ""
            raise UpstreamTimeoutError(
                f"Upstream timed out: connecting to {host}:{port}{through} took over {timeout} s",
                during_connect=True,
            ) from None
        except OSError as exc:
            self._open -= 1
            raise _connection_error(exc, origin) from exc
        except BaseException:
            self._open -= 1
            raise
        return connection

    def _drop(self, connection: _Connection) -> None:
        if connection.counted:
            connection.counted = False
            self._open -= 1
        connection.close()

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            # httpx's own defaults: certifi's CA bundle, or SSL_CERT_FILE / SSL_CERT_DIR.
            self._ssl = httpx.create_ssl_context()
        return self._ssl


def _encode_head(request: httpx.Request, route: Route) -> bytes:
    url = request.url
    if route.forward:
        # To a forward proxy the target is the whole URL, and the proxy wants its credentials.
        target = url.scheme.encode("ascii") + b"://" + url.netloc + url.raw_path
    else:
        target = url.raw_path
    parts = [request.method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n"]
    for name, value in request.headers.raw:
        parts += (name, b": ", value, b"\r\n")
    if route.forward and route.proxy is not None and route.proxy.authorization is not None:
        parts += (b"Proxy-Authorization: ", route.proxy.authorization, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)
