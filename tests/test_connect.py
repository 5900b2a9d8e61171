"""Opening upstream connections: happy eyeballs across a name's addresses, and name errors.

Loopback only. The address that "silently drops connections" is a listener on 127.0.0.2 whose
accept queue is full (listen(0), connections parked and never accepted): Linux then drops
further SYNs, so a connect to it hangs, as to a host behind a black-holing firewall.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import socket
import time
from collections.abc import AsyncIterator, Iterator, Sequence

import httpx
import pytest

from src.services.base.connect import Address, Resolver, _interleave
from src.services.base.exceptions import UpstreamConnectionError
from src.services.base.transport import WireTransport

pytestmark = pytest.mark.anyio

CONNECT_TIMEOUT = 10.0
TIMEOUTS = {"connect": CONNECT_TIMEOUT, "read": 10.0, "write": 10.0, "pool": 10.0}


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {"use_uvloop": False}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> object:
    """Both loops: the service runs on uvloop, which has no happy eyeballs of its own."""
    return request.param


@contextlib.contextmanager
def black_hole() -> Iterator[tuple[str, int]]:
    """An address whose connects hang: a listener whose accept queue is already full."""
    listener = socket.socket()
    parked: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.2", 0))
        listener.listen(0)
        address = listener.getsockname()
        for _ in range(2):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(address)
            parked.append(sock)
        probe = socket.socket()
        parked.append(probe)
        probe.setblocking(False)
        probe.connect_ex(address)
        _, writable, _ = select.select([], [probe], [], 0.5)
        if writable and probe.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
            pytest.skip("this kernel completes connects to a full accept queue")
        yield address
    finally:
        for sock in parked:
            sock.close()
        listener.close()


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, int]]:
    """A plain HTTP/1.1 upstream on 127.0.0.1 that answers `ok` to every request."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        writer.close()

    listening = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield listening.sockets[0].getsockname()[:2]
    finally:
        listening.close()


def resolving_to(*addresses: tuple[str, int]) -> Resolver:
    async def resolve(host: str, port: int) -> Sequence[Address]:
        assert host == "upstream.test"
        return [(socket.AF_INET, address) for address in addresses]

    return resolve


async def get(transport: WireTransport, port: int) -> httpx.Response:
    request = httpx.Request(
        "GET", f"http://upstream.test:{port}/api/v1/models", extensions={"timeout": TIMEOUTS}
    )
    response = await transport.handle_async_request(request)
    await response.aread()
    await response.aclose()
    return response


async def test_an_address_that_drops_connections_is_passed_over_well_before_the_timeout(
    server: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    with black_hole() as dead:
        transport = WireTransport(resolver=resolving_to(dead, server))
        began = time.monotonic()
        try:
            response = await get(transport, server[1])
        finally:
            await transport.aclose()
        elapsed = time.monotonic() - began
        assert response.status_code == 200
        assert response.content == b"ok"
        assert elapsed < CONNECT_TIMEOUT / 2
        # The losing attempt is closed, not left connecting in the background.
        async with asyncio.timeout(5):
            while any(_is_attempt(task) for task in asyncio.all_tasks()):
                await asyncio.sleep(0.01)
        # ...and quietly: closing it raised nothing in the loop's callbacks.
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def _is_attempt(task: asyncio.Task[object]) -> bool:
    return getattr(task.get_coro(), "__name__", "") == "_attempt"


async def test_a_refused_address_hands_over_to_the_next_one(server: tuple[str, int]) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        refused = closed.getsockname()  # bound, not listening: connects are refused
        transport = WireTransport(resolver=resolving_to(refused, server))
        try:
            response = await get(transport, server[1])
        finally:
            await transport.aclose()
    assert response.status_code == 200


async def test_when_every_address_fails_the_error_names_the_upstream() -> None:
    with socket.socket() as first, socket.socket() as second:
        first.bind(("127.0.0.1", 0))
        second.bind(("127.0.0.1", 0))
        resolver = resolving_to(first.getsockname(), second.getsockname())
        transport = WireTransport(resolver=resolver)
        try:
            with pytest.raises(UpstreamConnectionError) as failed:
                await get(transport, 8080)
        finally:
            await transport.aclose()
    assert "cannot reach http://upstream.test:8080" in failed.value.detail
    assert "ConnectionRefusedError" in failed.value.detail
    assert failed.value.before_answer


async def test_an_unresolvable_name_is_a_clear_connection_error() -> None:
    async def unknown(host: str, port: int) -> Sequence[Address]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    transport = WireTransport(resolver=unknown)
    try:
        with pytest.raises(UpstreamConnectionError) as failed:
            await get(transport, 443)
    finally:
        await transport.aclose()
    assert failed.value.detail == (
        "Upstream connection failed: cannot resolve upstream.test (Name or service not known)"
    )


@pytest.mark.parametrize(
    ("resolved", "raced"),
    [
        (["::1", "::2", "::3", "127.0.0.1"], ["::1", "127.0.0.1", "::2", "::3"]),
        (["127.0.0.1", "::1", "::2"], ["127.0.0.1", "::1", "::2"]),
        (
            ["::1", "127.0.0.1", "127.0.0.2", "127.0.0.3"],
            ["::1", "127.0.0.1", "127.0.0.2", "127.0.0.3"],
        ),
        (["127.0.0.1", "127.0.0.2", "::1", "::2"], ["127.0.0.1", "::1", "127.0.0.2", "::2"]),
    ],
)
def test_address_families_alternate_starting_with_the_first_one(
    resolved: list[str], raced: list[str]
) -> None:
    addresses: list[Address] = [
        (socket.AF_INET6, (host, 1, 0, 0)) if ":" in host else (socket.AF_INET, (host, 1))
        for host in resolved
    ]
    assert [address[1][0] for address in _interleave(addresses)] == raced
