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
import select
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
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
    UnsafeHeaderError,
    UpstreamConnectionError,
    UpstreamInvalidResponseError,
    UpstreamTimeoutError,
)
from src.services.base.proxies import ProxyEndpoint, ProxyRules
from src.services.base.timing import now

# Reading pauses while more than this much of a body waits for its consumer, and resumes
# below half of it.
_HIGH_WATER: Final = 1024 * 1024
_LOW_WATER: Final = _HIGH_WATER // 2
# An answer's status line and headers; httptools would otherwise buffer any amount of them.
MAX_HEAD_BYTES: Final = 256 * 1024

Origin = tuple[str, str, int]


@dataclass(slots=True)
class WireTiming:
    """When one HTTP exchange crossed the socket, in `now()` seconds."""

    sent: float = 0.0
    head: float = 0.0
    end: float = 0.0


@dataclass(slots=True)
class PoolStats:
    """The pool's counters; `WireTransport.stats()` hands out a copy."""

    open: int = 0  # connections open now, in use or idle
    in_use: int = 0
    most_open: int = 0  # the highest `open` ever reached
    requests: int = 0  # requests sent since the pool was made


class _Stop(Exception):
    """Raised from a parser callback to stop the parser: the answer is whole, and whatever
    follows it on the connection belongs to no request."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection: writes a request, parses the response as bytes arrive.

    `complete` is true whenever no exchange is in flight (before the first request too): bytes
    arriving then answer nothing we asked, so the connection is closed rather than let them
    reach the next request. The state of an exchange starts in `_begin_exchange`, when its
    request is sent: of it, only `complete` is read before.
    """

    # Set by `connection_made`, which the loop calls before the connection is handed to us.
    transport: asyncio.Transport
    idle_since: float  # set by the pool when it takes the connection back
    # Set in `send` when the exchange has a deadline, and read only then.
    deadline: float

    def __init__(self, origin: Origin, loop: asyncio.AbstractEventLoop) -> None:
        self.origin = origin
        self.loop = loop
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.counted = True  # in the pool's count of open connections until dropped
        # Set by the pool while the connection waits in it, so that losing it leaves the pool.
        self.on_idle_lost: Callable[[_Connection], None] | None = None
        self.write_paused = False
        self._paused = False  # reading, while a body waits for its reader
        self.complete = True

    def _begin_exchange(
        self, timing: WireTiming, max_body_bytes: int | None, head_request: bool
    ) -> None:
        # The status, the version, `keep_alive` and the arrival time are set from the answer
        # before they are read (`reusable` asks `keep_alive` only once the answer is complete),
        # so they start nowhere.
        self.timing = timing
        self.max_body_bytes = max_body_bytes
        self.deadline_at: float | None = None
        self.head_request = head_request
        self.reason = b""  # an answer may leave its reason phrase out
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.informational = False
        self.complete = False
        self.chunks: collections.deque[tuple[bytes, float]] = collections.deque()
        self.buffered = 0
        self.body_bytes = 0
        self.head_bytes = 0
        self.failure: Exception | None = None
        self.callback_failure: Exception | None = None
        self.waiter: asyncio.Future[None] | None = None
        if self._paused:  # the last answer arrived whole but was put back unread
            self._paused = False
            self.transport.resume_reading()

    # --- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they implement it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._arrived = now()
        if self.complete:  # bytes that answer no request in flight: they must reach none
            self.close()
            return
        if not self.head_done:  # counted before parsing, so the read that ends the head is too
            if not self.head_bytes:  # the answer's first bytes: its status line starts here
                self.http_version = _version_of(data)
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except Exception as exc:
            if self.complete:  # stopped after the whole answer: what followed it is no one's
                self.close()
                return
            # What a callback raised arrives as it is or wrapped by httptools; the callback
            # left the reason here either way.
            self._fail(
                self.callback_failure
                or UpstreamInvalidResponseError(f"Upstream sent invalid HTTP: {exc}")
            )
            return
        if not self.head_done and self.head_bytes > MAX_HEAD_BYTES:
            self._fail(_head_too_large())

    def eof_received(self) -> bool:
        return False  # close our side too

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.on_idle_lost is not None:
            self.on_idle_lost(self)
        if self.complete or self.failure is not None:
            return
        if self.head_done and exc is None and self._body_until_close():
            self.timing.end = now()
            self._finish()
            return
        self._fail(_closed_error(self.head_done, exc))

    # --- httptools callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:  # a second answer in the same read as the first
            raise _Stop

    def on_status(self, status: bytes) -> None:
        self.reason = status

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.head_done:  # after the head come trailers, which are not its headers
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        status = parser.get_status_code()
        if status < 200:
            self._informational(status)
            return
        if self.head_bytes > MAX_HEAD_BYTES and _head_size(self) > MAX_HEAD_BYTES:
            self.callback_failure = _head_too_large()
            raise self.callback_failure
        self.status = status
        # Asked now: llhttp forgets it once the message is complete.
        self.keep_alive = parser.should_keep_alive()
        if not self.http_version:  # not found in the answer's first bytes: the parser knows
            self.http_version = b"HTTP/1.0" if parser.get_http_version() == "1.0" else b"HTTP/1.1"
        self.timing.head = self._arrived
        self.head_done = True
        if self.head_request:
            # A HEAD's answer has no body whatever its headers say, which httptools cannot be
            # told: the answer ends here, and the connection with it (the `_Stop` lands in
            # `data_received`, which closes a connection whose answer is complete).
            self.timing.end = self._arrived
            self._finish()
            raise _Stop
        self._wake()

    def _informational(self, status: int) -> None:
        if status == 101:
            self.callback_failure = UpstreamInvalidResponseError(
                "Upstream switched protocols (101) though no upgrade was asked for"
            )
            raise self.callback_failure
        # 100 Continue, 103 Early Hints...: the answer is still to come, and their headers
        # are not its headers.
        self.informational = True
        self.headers = []
        self.http_version = b""  # the final answer's own status line will say

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
        if self.buffered > _HIGH_WATER and not self._paused:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.informational:
            self.informational = False
            return
        self.timing.end = self._arrived
        self._finish()

    # --- used by the transport -----------------------------------------------------------------

    def send(
        self,
        message: bytes,
        max_body_bytes: int | None,
        deadline: float | None,
        head_request: bool,
    ) -> WireTiming:
        if self.closed:  # lost, or sent bytes unasked, before we wrote anything
            raise UpstreamConnectionError(
                "Upstream connection failed: closed before the request was sent",
                before_answer=True,
                written=False,
            )
        timing = WireTiming()
        self._begin_exchange(timing, max_body_bytes, head_request)
        timing.sent = now()  # before the send, so the upstream cannot have started earlier
        if deadline is not None:
            self.deadline = deadline
            self.deadline_at = timing.sent + deadline
        self.transport.write(message)  # head and body at once: one syscall
        return timing

    async def wait_written(self, timeout: float | None) -> None:
        """Until the socket has taken the whole request, or an answer came first."""
        try:
            async with asyncio.timeout(timeout):
                while self.write_paused and not self.head_done:
                    await self.wait(None)
        except TimeoutError:
            raise UpstreamTimeoutError(
                f"Upstream timed out writing the request: not taken within {timeout:g} s"
            ) from None

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
        if self._paused and self.buffered < _LOW_WATER:
            # A body that never runs dry never waits, so its deadline is checked here too.
            if self.deadline_at is not None and now() > self.deadline_at:
                error = _past_deadline(self.deadline)
                self._fail(error)
                raise error
            self._paused = False
            self.transport.resume_reading()
        return data, arrived

    @property
    def reusable(self) -> bool:
        return self.complete and not self.closed and self.keep_alive

    def has_unread_input(self) -> bool:
        """Whether the socket holds bytes or a close that the loop has not delivered yet.

        An idle connection has nothing to read unless the upstream closed it or sent what no
        one asked for; a busy loop may not have run our callbacks since. Asking the socket
        itself, as httpcore does, keeps a request from being written into a closed connection,
        where it could not be sent again.
        """
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return False
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))

    def close(self) -> None:
        self.closed = True
        self.transport.abort()

    # --- internals -------------------------------------------------------------------------------

    async def wait(self, timeout: float | None) -> None:
        """Until something arrives (or the timeout or the deadline, or a failure: raised)."""
        if self.failure is not None:
            raise self.failure
        deadline = None
        if self.deadline_at is not None:
            left = self.deadline_at - now()
            if timeout is None or left < timeout:
                if left <= 0:
                    raise _past_deadline(self.deadline)
                timeout, deadline = left, self.deadline
        waiter = self.waiter = self.loop.create_future()
        timer = (
            self.loop.call_later(timeout, _expire, waiter, timeout, deadline)
            if timeout is not None
            else None
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


def _expire(waiter: asyncio.Future[None], timeout: float, deadline: float | None) -> None:
    if not waiter.done():
        waiter.set_exception(
            _past_deadline(deadline)
            if deadline is not None
            else UpstreamTimeoutError(f"Upstream timed out: nothing received for {timeout:g} s")
        )


def _past_deadline(deadline: float) -> UpstreamTimeoutError:
    return UpstreamTimeoutError(
        f"Upstream timed out: the answer took longer than UPSTREAM_DEADLINE_SECONDS={deadline:g} s"
    )


def _version_of(start: bytes) -> bytes:
    """The HTTP version an answer's first bytes name; empty when too few arrived to tell."""
    if start.startswith(b"HTTP/1.1"):
        return b"HTTP/1.1"
    if start.startswith(b"HTTP/1.0"):
        return b"HTTP/1.0"
    return b""


def _head_too_large() -> UpstreamInvalidResponseError:
    return UpstreamInvalidResponseError(
        f"Upstream answer's headers are larger than {MAX_HEAD_BYTES} bytes"
    )


def _head_size(connection: _Connection) -> int:
    """The final answer's status line and headers, as sent (give or take their spacing)."""
    lines = sum(len(name) + len(value) + 4 for name, value in connection.headers)
    return len(connection.reason) + lines + 17


def _closed_error(head_done: bool, exc: Exception | None) -> UpstreamConnectionError:
    reason = f" ({type(exc).__name__}: {exc})" if exc else ""
    if head_done:
        return UpstreamConnectionError(f"Upstream connection broke mid-answer{reason}")
    # The request went out whole or in part: the upstream may be running it, so it is not
    # sent again, and the message says so.
    return UpstreamConnectionError(
        f"Upstream connection failed: closed before answering{reason}; the request was sent, "
        "so it is not sent again",
        before_answer=True,
        written=True,
    )


def _connection_error(exc: OSError, origin: Origin) -> UpstreamConnectionError:
    scheme, host, port = origin
    return UpstreamConnectionError(
        f"Upstream connection failed: cannot reach {scheme}://{host}:{port} ({type(exc).__name__}: "
        f"{exc.strerror or exc})",
        before_answer=True,
        written=False,
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
        # Per origin, idle connections in the order they were put back (a dict: an idle
        # connection that is lost leaves it at once); the last one is reused first.
        self._idle: dict[Origin, dict[_Connection, None]] = {}
        self._forget = self._forget_idle
        self._counts = PoolStats()
        self._ssl: ssl.SSLContext | None = None
        self._closed = False

    def stats(self) -> PoolStats:
        return replace(self._counts)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """One exchange. Sent once: a connection found dead is found so before anything is
        written (it leaves the pool when lost), and once the request is written, a failure is
        the caller's to see, never a reason to send it again.

        Extensions: `timeout` (httpx's), `max_body_bytes`, and `deadline`: the seconds the
        whole exchange may take, from sending to the last byte.
        """
        extensions = request.extensions
        timeouts: dict[str, float | None] = extensions.get("timeout", {})
        read_timeout = timeouts.get("read")
        url = request.url
        # httpx leaves a URL's port out when it is its scheme's default.
        origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        route = self._routes.get(origin) or self._route(origin)
        stream = request.stream
        if isinstance(stream, httpx.ByteStream):  # a body already in memory: the common case
            message = _encode_request(request, b"".join(stream), route)
        else:
            message = await _encode_streamed(request, route)
        max_body = extensions.get("max_body_bytes", self._max_body_bytes)
        connection = await self._checkout(origin, timeouts)
        self._counts.requests += 1
        try:
            connection.send(message, max_body, extensions.get("deadline"), request.method == "HEAD")
            if connection.write_paused:  # the peer is not taking the request as fast as sent
                await connection.wait_written(timeouts.get("write"))
            await connection.wait_head(read_timeout)
        except BaseException:
            self.release(connection)
            raise
        return httpx.Response(
            connection.status,
            headers=connection.headers,
            stream=WireBody(self, connection, read_timeout),
            extensions={
                "http_version": connection.http_version,
                "reason_phrase": connection.reason,
            },
            request=request,
        )

    def release(self, connection: _Connection) -> None:
        """Back to the pool if its answer was read whole, else closed (the upstream stops)."""
        self._counts.in_use -= 1
        if connection.reusable and not self._closed:
            connection.idle_since = now()
            connection.on_idle_lost = self._forget
            self._idle.setdefault(connection.origin, {})[connection] = None
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
        self._counts.in_use += 1
        try:
            return self._reuse(origin) or await self._connect(origin, timeouts.get("connect"))
        except BaseException:
            self._counts.in_use -= 1
            self._limit.release()
            raise

    def _reuse(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        expiry = now() - self._keepalive_seconds
        while idle:
            connection, _ = idle.popitem()
            connection.on_idle_lost = None
            if (
                not connection.closed
                and connection.idle_since > expiry
                and not connection.has_unread_input()
            ):
                return connection
            self._drop(connection)
        return None

    def proxy_for(self, url: httpx.URL) -> ProxyEndpoint | None:
        """The proxy that requests to `url` go through, or None."""
        return self._proxies.proxy_for_url(url)

    def _route(self, origin: Origin) -> Route:
        """Decided once per origin, when it is first asked for."""
        route = self._routes.get(origin)
        if route is None:
            scheme, host, port = origin
            route = self._routes[origin] = route_through(
                self._proxies.proxy_for(scheme, host, port), scheme
            )
        return route

    def _forget_idle(self, connection: _Connection) -> None:
        idle = self._idle.get(connection.origin)
        if idle is not None:
            idle.pop(connection, None)
        self._drop(connection)

    async def _connect(self, origin: Origin, timeout: float | None) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls = self._ssl_context() if scheme == "https" else None
        route = self._route(origin)
        counts = self._counts
        counts.open += 1
        counts.most_open = max(counts.most_open, counts.open)
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
            self._counts.open -= 1
            through = f" through proxy {route.proxy.label}" if route.proxy else ""
            raise UpstreamTimeoutError(
                f"Upstream timed out: connecting to {host}:{port}{through} took over {timeout} s",
                during_connect=True,
            ) from None
        except OSError as exc:
            self._counts.open -= 1
            raise _connection_error(exc, origin) from exc
        except BaseException:
            self._counts.open -= 1
            raise
        return connection

    def _drop(self, connection: _Connection) -> None:
        connection.on_idle_lost = None
        if connection.counted:
            connection.counted = False
            self._counts.open -= 1
        connection.close()

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            # httpx's own defaults: certifi's CA bundle, or SSL_CERT_FILE / SSL_CERT_DIR.
            self._ssl = httpx.create_ssl_context()
        return self._ssl


def _encode_request(
    request: httpx.Request,
    body: bytes,
    route: Route,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> bytes:
    """The request's bytes, head and body, as one message."""
    url = request.url
    authorization = None
    if route.forward:
        # To a forward proxy the target is the whole URL, and the proxy wants its credentials.
        target = url.scheme.encode("ascii") + b"://" + url.netloc + url.raw_path
        if route.proxy is not None:
            authorization = route.proxy.authorization
    else:
        target = url.raw_path
    head = _encode_head(
        request.method.encode("ascii"), target, headers or request.headers.raw, authorization
    )
    return head + body


async def _encode_streamed(request: httpx.Request, route: Route) -> bytes:
    headers = request.headers.raw
    if _has_header(headers, b"content-length"):
        return _encode_request(request, await request.aread(), route)
    # A body of unknown length: chunked, the only framing that can end it.
    stream = request.stream
    assert isinstance(stream, httpx.AsyncByteStream)
    body = await _chunked(stream)
    if not _has_header(headers, b"transfer-encoding"):
        headers = [*headers, (b"Transfer-Encoding", b"chunked")]
    return _encode_request(request, body, route, headers)


def _encode_head(
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    proxy_authorization: bytes | None,
) -> bytes:
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    lines = len(headers) + 2
    if proxy_authorization is not None:
        parts += (b"Proxy-Authorization: ", proxy_authorization, b"\r\n")
        lines += 1
    parts.append(b"\r\n")
    head = b"".join(parts)
    # CR, LF or NUL inside a line would end it early: the rest would be read as headers or as
    # another request. Counted over the whole head: three scans, not three per header.
    if head.count(b"\n") != lines or head.count(b"\r") != lines or b"\0" in head:
        raise _unsafe_header(headers)
    return head


def _unsafe_header(headers: list[tuple[bytes, bytes]]) -> UnsafeHeaderError:
    for name, value in headers:
        if _has_line_breaks(name) or _has_line_breaks(value):
            # The value is never shown: it may be a key.
            shown = name.decode("ascii", "backslashreplace")
            return UnsafeHeaderError(
                f"Refused to send a request whose header {shown!r} contains CR, LF or NUL"
            )
    return UnsafeHeaderError("Refused to send a request whose request line contains CR, LF or NUL")


def _has_line_breaks(data: bytes) -> bool:
    return b"\r" in data or b"\n" in data or b"\0" in data


def _has_header(headers: list[tuple[bytes, bytes]], name: bytes) -> bool:
    return any(key.lower() == name for key, _ in headers)


async def _chunked(stream: httpx.AsyncByteStream) -> bytes:
    parts: list[bytes] = []
    async for piece in stream:
        if piece:  # an empty chunk would end the body
            parts += (b"%x\r\n" % len(piece), piece, b"\r\n")
    parts.append(b"0\r\n\r\n")
    return b"".join(parts)
