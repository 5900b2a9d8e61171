"""The compose `scale` profile's balancer (src/balancer.py): connections in turn over the
replicas, a replica that is down skipped, bytes passed untouched both ways."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from src.balancer import Balancer, parse_backends
from tests.helpers.processes import LOOPBACK, free_port

OPEN: list[int] = [0]  # connections the replicas hold open


@asynccontextmanager
async def replica(name: bytes) -> AsyncIterator[int]:
    """A server that answers each line with its name and the line."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        OPEN[0] += 1
        try:
            while line := await reader.readline():
                writer.write(name + b" " + line)
                await writer.drain()
            writer.close()
            await writer.wait_closed()
        finally:
            OPEN[0] -= 1

    server = await asyncio.start_server(answer, LOOPBACK, 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def ask(port: int, line: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    writer.write(line)
    await writer.drain()
    answer = await asyncio.wait_for(reader.readline(), 5.0)
    writer.close()
    await writer.wait_closed()
    return answer


@pytest.mark.anyio
async def test_connections_go_to_each_replica_in_turn_and_skip_one_that_is_down() -> None:
    async with replica(b"a") as port_a, replica(b"b") as port_b:
        port_down = free_port()  # nobody listens there
        backends = [(LOOPBACK, port_a), (LOOPBACK, port_down), (LOOPBACK, port_b)]
        balancer = Balancer(backends)
        server = await asyncio.start_server(balancer.handle, LOOPBACK, 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            answers = [await ask(port, b"hello %d\n" % index) for index in range(4)]
            for _ in range(500):  # each closed connection is closed onward, then forgotten
                if not balancer.connections and not OPEN[0]:
                    break
                await asyncio.sleep(0.01)
        assert balancer.connections == 0
        assert OPEN[0] == 0

    assert answers == [b"a hello 0\n", b"b hello 1\n", b"b hello 2\n", b"a hello 3\n"]


def test_backends_are_host_port_pairs() -> None:
    assert parse_backends("api-a:8000, [::1]:8001") == [("api-a", 8000), ("::1", 8001)]
    with pytest.raises(SystemExit, match="not host:port"):
        parse_backends("api-a")
