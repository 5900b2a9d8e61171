"""A loopback HTTP/1.1 upstream that answers from a respx router.

The app under test reaches it with its production client over a real socket, while the tests
keep everything respx gives them: routes, side effects, call counts and
`route.calls.last.request`. Each request that arrives becomes an `httpx.Request` whose URL is
rewritten to the router's base URL (scheme and host; the path is kept), the router resolves it,
and the `httpx.Response` it returns goes back on the wire, its body chunk by chunk.

What a side effect raises becomes what a real upstream would do on the wire:
- a timeout (`httpx.TimeoutException`): the request is held until the client gives up, so a
  test that wants one sets a short upstream timeout;
- any other transport error (`httpx.ConnectError`, `ReadError`, `RemoteProtocolError`, ...):
  the connection is closed without an answer;
- a body that raises after the headers: the connection is dropped mid-body.

A request body that does not arrive within BODY_SECONDS of its head is an error (below).

A client that goes away cancels the side effect or the body it is waiting on, as a real
upstream stops generating. Anything else a side effect raises (including respx's "not
mocked") is kept in `errors`; the fixture fails the test with it.

Nothing here knows how the product's client is built: any client that speaks HTTP/1.1 to
`base_url` is served the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any, TypeVar

import h11
import httpx
import respx

T = TypeVar("T")
LOOPBACK = "127.0.0.1"
READ_BYTES = 64 * 1024
# Framing is the server's business: h11 chooses it for the answer, httpx for the request copy.
_FRAMING_HEADERS = frozenset({b"content-length", b"transfer-encoding", b"connection"})


# A request whose head announced a body that does not come would otherwise wait for the
# client's own timeout, and a test of it could only fail by hanging.
BODY_SECONDS = 5.0


def _body_missing(head: h11.Request, received: int) -> AssertionError:
    return AssertionError(
        f"{head.method.decode()} {head.target.decode()}: the request body announced in its "
        f"headers did not arrive within {BODY_SECONDS:g} s ({received} bytes came)"
    )


class _ClientGone(Exception):
    """The client closed the connection."""


class LoopbackUpstream:
    def __init__(self, router: respx.MockRouter, upstream_base_url: str) -> None:
        self._router = router
        self._upstream = httpx.URL(upstream_base_url)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.errors: list[BaseException] = []

    @property
    def port(self) -> int:
        assert self._server is not None, "the loopback upstream is not started"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    @property
    def base_url(self) -> str:
        """What the app should use as OPENROUTER_BASE_URL: this server, the router's path."""
        return f"http://{LOOPBACK}:{self.port}{self._upstream.path.rstrip('/')}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_connection, LOOPBACK, 0)

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> LoopbackUpstream:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    # --- one connection ---------------------------------------------------------------------

    def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._serve_connection(reader, writer))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        connection = h11.Connection(h11.SERVER)
        try:
            while await self._serve_one(connection, reader, writer):
                connection.start_next_cycle()
        except (_ClientGone, ConnectionError):
            pass
        except h11.ProtocolError as exc:
            self.errors.append(exc)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _serve_one(
        self, connection: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; True when the connection can carry the next one."""
        request = await self._read_request(connection, reader)
        if request is None:
            return False
        gone = asyncio.ensure_future(self._until_client_leaves(connection, reader))
        try:
            return await self._answer(connection, writer, request, gone)
        finally:
            gone.cancel()
            with contextlib.suppress(asyncio.CancelledError, _ClientGone):
                await gone

    async def _answer(
        self,
        connection: h11.Connection,
        writer: asyncio.StreamWriter,
        request: httpx.Request,
        gone: asyncio.Future[None],
    ) -> bool:
        try:
            response = await _unless_gone(self._router.async_handler(request), gone)
            try:
                complete = await _unless_gone(self._send(connection, writer, response), gone)
            finally:
                await response.aclose()
        except httpx.TimeoutException:
            with contextlib.suppress(_ClientGone):
                await gone  # held until the client gives up
            return False
        except (httpx.TransportError, _ClientGone, ConnectionError):
            return False  # closed without an answer, or the client left
        except Exception as exc:
            self.errors.append(exc)
            return False
        return complete and connection.our_state is h11.DONE

    async def _read_request(
        self, connection: h11.Connection, reader: asyncio.StreamReader
    ) -> httpx.Request | None:
        head: h11.Request | None = None
        body = bytearray()
        deadline = 0.0
        loop = asyncio.get_running_loop()
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA and head is None:
                connection.receive_data(await reader.read(READ_BYTES))
            elif event is h11.NEED_DATA:
                assert head is not None
                try:
                    async with asyncio.timeout_at(deadline):
                        connection.receive_data(await reader.read(READ_BYTES))
                except TimeoutError:
                    self.errors.append(_body_missing(head, len(body)))
                    return None
            elif isinstance(event, h11.Request):
                head = event
                deadline = loop.time() + BODY_SECONDS
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return self._as_upstream_request(head, bytes(body))
            elif isinstance(event, h11.ConnectionClosed):
                return None

    def _as_upstream_request(self, head: h11.Request, body: bytes) -> httpx.Request:
        url = self._upstream.copy_with(raw_path=head.target)
        headers = [
            (name, value)
            for name, value in head.headers.raw_items()
            if name.lower() not in _FRAMING_HEADERS and name.lower() != b"host"
        ]
        headers.insert(0, (b"host", self._upstream.netloc))
        return httpx.Request(head.method.decode(), url, headers=headers, content=body)

    async def _until_client_leaves(
        self, connection: h11.Connection, reader: asyncio.StreamReader
    ) -> None:
        """Returns once the client has closed its end; bytes of a next request are kept."""
        try:
            while data := await reader.read(READ_BYTES):
                connection.receive_data(data)
        except ConnectionError:
            pass
        raise _ClientGone

    async def _send(
        self, connection: h11.Connection, writer: asyncio.StreamWriter, response: httpx.Response
    ) -> bool:
        """Headers, then the body as the response yields it; False if the body broke."""
        headers = [
            (name, value)
            for name, value in response.headers.raw
            if name.lower() not in _FRAMING_HEADERS or _keeps_length(name, response)
        ]
        head = h11.Response(
            status_code=response.status_code,
            headers=headers,
            reason=response.reason_phrase.encode(),
        )
        writer.write(connection.send(head) or b"")
        # The raw bytes as the mock holds them (respx has already read, and decoded, a body it
        # was given whole; the stream itself still yields the bytes as they were given).
        assert isinstance(response.stream, httpx.AsyncByteStream)
        try:
            async for chunk in response.stream:
                if chunk:
                    writer.write(connection.send(h11.Data(data=chunk)) or b"")
                    await writer.drain()
        except httpx.TransportError:
            return False  # the upstream "broke" mid-body: drop the connection
        writer.write(connection.send(h11.EndOfMessage()) or b"")
        await writer.drain()
        return True


def _keeps_length(name: bytes, response: httpx.Response) -> bool:
    """A Content-Length the mock set for a body it already holds is passed on as it is."""
    return name.lower() == b"content-length" and isinstance(response.stream, httpx.ByteStream)


async def _unless_gone(work: Awaitable[T], gone: asyncio.Future[None]) -> T:
    """Await `work` unless the client leaves first: then `work` is cancelled (as a real
    upstream stops generating for a caller who left) and _ClientGone is raised.
    """
    task = asyncio.ensure_future(work)
    try:
        racing: list[asyncio.Future[Any]] = [task, gone]
        await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if task.cancelled():
        raise _ClientGone
    return task.result()
