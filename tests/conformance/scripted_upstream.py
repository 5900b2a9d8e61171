"""A raw loopback upstream that writes exactly the bytes a case scripts, and records everything.

Nothing here speaks HTTP for the answer: a case's `Script` gets each request as it arrived (its
head and its body, by Content-Length) and writes what it wants, bytes by bytes, sleeps between
them, closes the socket, or never answers. The server records every connection, every request
received on it with its raw bytes, and whether the connection is still open, so a case can
assert how many times the upstream received a request, on which connection, and which sockets
the client left open.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

LOOPBACK = "127.0.0.1"
READ_BYTES = 64 * 1024
HEAD_END = b"\r\n\r\n"


@dataclass
class Received:
    """One request as it arrived: its raw head and body, and the connection it came on."""

    connection: int
    head: bytes
    body: bytes

    @property
    def method(self) -> str:
        return self.head.split(b" ", 1)[0].decode()

    @property
    def path(self) -> str:
        return self.head.split(b" ", 2)[1].decode()


@dataclass
class Connection:
    """One accepted socket; a script writes to it and may close it."""

    number: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    requests: list[Received] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    closed_by_us: bool = False
    _buffer: bytes = b""

    async def send(self, data: bytes) -> None:
        # A client may hang up in the middle (it refused what it read): the case asserts that.
        with contextlib.suppress(ConnectionError):
            self.writer.write(data)
            await self.writer.drain()

    async def close(self) -> None:
        """Close our side; the client sees EOF."""
        self.closed_by_us = True
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()

    async def next_request(self) -> Received | None:
        """The next request on this connection, None once the client closed it."""
        while HEAD_END not in self._buffer:
            data = await self._read()
            if not data:
                return None
            self._buffer += data
        head, _, rest = self._buffer.partition(HEAD_END)
        length = _content_length(head)
        while len(rest) < length:
            data = await self._read()
            if not data:
                return None
            rest += data
        self._buffer = rest[length:]
        received = Received(self.number, head + HEAD_END, rest[:length])
        self.requests.append(received)
        return received

    async def until_client_closes(self) -> None:
        """Reads (and keeps) whatever comes until the client closes its end."""
        while data := await self._read():
            self._buffer += data

    async def _read(self) -> bytes:
        try:
            return await self.reader.read(READ_BYTES)
        except ConnectionError:
            return b""


# What a case does with each request: answer it, or not, on the connection it came on.
Script = Callable[[Connection, Received], Awaitable[None]]


class ScriptedUpstream:
    def __init__(self) -> None:
        self.script: Script = _never_answer
        self.connections: list[Connection] = []
        self.request_arrived = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "the scripted upstream is not started"
        port = self._server.sockets[0].getsockname()[1]
        return f"http://{LOOPBACK}:{port}/api/v1"

    @property
    def requests(self) -> list[Received]:
        """Every request received, in order, on any connection."""
        return [request for connection in self.connections for request in connection.requests]

    def received(self, path: str) -> int:
        """How many times the upstream received a request for `path` (its last segment)."""
        return sum(1 for request in self.requests if request.path.endswith(path))

    @property
    def open_connections(self) -> list[int]:
        return [c.number for c in self.connections if not c.closed.is_set()]

    async def all_closed(self, deadline: float = 10.0) -> list[int]:
        """Waits (bounded) until every connection is closed; the ones still open."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(deadline):
                for connection in list(self.connections):
                    await connection.closed.wait()
        return self.open_connections

    async def closed(self, number: int, deadline: float = 10.0) -> bool:
        """Waits (bounded) until connection `number` is closed, by either side."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(deadline):
                await self.connections[number].closed.wait()
        return self.connections[number].closed.is_set()

    async def closed_by_client(self, number: int, deadline: float = 10.0) -> bool:
        return await self.closed(number, deadline) and not self.connections[number].closed_by_us

    async def wait_for_requests(self, count: int, deadline: float = 10.0) -> None:
        async with asyncio.timeout(deadline):
            while len(self.requests) < count:
                self.request_arrived.clear()
                await self.request_arrived.wait()

    async def __aenter__(self) -> ScriptedUpstream:
        self._server = await asyncio.start_server(self._on_connection, LOOPBACK, 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = Connection(len(self.connections), reader, writer)
        self.connections.append(connection)
        task = asyncio.create_task(self._serve(connection))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, connection: Connection) -> None:
        try:
            while (request := await connection.next_request()) is not None:
                self.request_arrived.set()
                await self.script(connection, request)
                if connection.closed_by_us:
                    return
        finally:
            connection.writer.close()
            connection.closed.set()


async def _never_answer(connection: Connection, _: Received) -> None:
    await connection.until_client_closes()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0
