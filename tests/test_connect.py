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
import ssl
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import httpx
import pytest
import trustme

from src.services.base.connect import Address, Resolver, _interleave, system_resolver
from src.services.base.exceptions import UpstreamCertificateError, UpstreamConnectionError
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
    with full_listener() as listener:
        yield listener.getsockname()


@contextlib.contextmanager
def full_listener() -> Iterator[socket.socket]:
    """A listener on 127.0.0.2 whose accept queue is full: the SYNs of new connects are
    dropped (and sent again later by the client's kernel) until it accepts."""
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
        yield listener
    finally:
        for sock in parked:
            sock.close()
        listener.close()


async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers `ok` to every request on the connection."""
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
    writer.close()


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, int]]:
    """A plain HTTP/1.1 upstream on 127.0.0.1 that answers `ok` to every request."""
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


async def test_an_address_that_connects_only_after_the_delay_is_still_waited_for() -> None:
    """The last address gets the whole connect timeout, not the delay between attempts: here
    its first SYN is dropped and the one sent again a second later is answered, while the
    first address never answers at all."""
    handlers: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)  # the connections parked in its queue get one too
        with contextlib.suppress(asyncio.CancelledError):
            await answer(reader, writer)
        writer.close()

    with black_hole() as dead, full_listener() as late:
        # The first never answers: the race waits for whichever finishes first, not for both.
        transport = WireTransport(resolver=resolving_to(dead, late.getsockname()))
        try:
            fetching = asyncio.ensure_future(get(transport, 8080))
            await asyncio.sleep(0.5)  # both attempts are under way; the second one waits
            opened = await asyncio.start_server(serve, sock=late)  # its queue has room now
            try:
                response = await asyncio.wait_for(fetching, 20)
            finally:
                opened.close()
                for task in handlers:
                    task.cancel()
                await asyncio.gather(*handlers, return_exceptions=True)
        finally:
            await transport.aclose()
    assert (response.status_code, response.content) == (200, b"ok")


async def test_the_next_address_is_not_tried_when_the_first_one_connects(
    server: tuple[str, int],
) -> None:
    spare_connections = 0

    async def spare(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal spare_connections
        spare_connections += 1
        writer.close()

    listening = await asyncio.start_server(spare, "127.0.0.1", 0)
    transport = WireTransport(resolver=resolving_to(server, listening.sockets[0].getsockname()))
    try:
        response = await get(transport, server[1])
        await asyncio.sleep(0.2)  # a connection made to the spare would be accepted by now
    finally:
        await transport.aclose()
        listening.close()
    assert response.status_code == 200
    assert spare_connections == 0


async def test_a_name_is_resolved_to_the_addresses_the_system_gives_it() -> None:
    expected = [
        (family, address)
        for family, _, _, _, address in socket.getaddrinfo(
            "localhost", 8080, type=socket.SOCK_STREAM
        )
    ]
    assert await system_resolver("localhost", 8080) == expected


async def test_a_certificate_for_another_name_is_refused_naming_the_upstream_and_the_way_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("other.test").configure_cert(tls)

    async def handshake_only(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    listening = await asyncio.start_server(handshake_only, "127.0.0.1", 0, ssl=tls)
    port = listening.sockets[0].getsockname()[1]
    transport = WireTransport()
    try:
        with pytest.raises(UpstreamCertificateError) as refused:
            await transport.handle_async_request(
                httpx.Request("GET", f"https://127.0.0.1:{port}/", extensions={"timeout": TIMEOUTS})
            )
    finally:
        await transport.aclose()
        listening.close()
    assert refused.value.detail == (
        f"Upstream certificate check failed for 127.0.0.1:{port}: certificate verify failed: "
        "IP address mismatch, certificate is not valid for '127.0.0.1'. If the upstream (or a "
        "proxy that inspects TLS) uses a private CA, set SSL_CERT_FILE (a PEM bundle) or "
        "SSL_CERT_DIR to certificates that include it"
    )


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_an_ip_address_is_connected_to_without_asking_the_resolver(host: str) -> None:
    asked: list[str] = []

    async def resolver(name: str, port: int) -> Sequence[Address]:
        asked.append(name)
        return []

    handlers: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        await answer(reader, writer)

    listening = await asyncio.start_server(serve, host, 0)
    port = listening.sockets[0].getsockname()[1]
    transport = WireTransport(resolver=resolver)
    try:
        shown = f"[{host}]" if ":" in host else host
        request = httpx.Request("GET", f"http://{shown}:{port}/", extensions={"timeout": TIMEOUTS})
        response = await transport.handle_async_request(request)
        await response.aread()
    finally:
        await transport.aclose()
        listening.close()
        await asyncio.wait_for(asyncio.gather(*handlers), 10)  # they end at the client's close
    assert (response.status_code, response.content) == (200, b"ok")
    assert asked == []


async def test_a_name_with_no_address_is_a_clear_connection_error() -> None:
    async def nothing(host: str, port: int) -> Sequence[Address]:
        return []

    transport = WireTransport(resolver=nothing)
    try:
        with pytest.raises(UpstreamConnectionError) as failed:
            await get(transport, 443)
    finally:
        await transport.aclose()
    assert failed.value.detail == (
        "Upstream connection failed: cannot resolve upstream.test (no address)"
    )
    assert (failed.value.before_answer, failed.value.written) == (True, False)


async def test_when_every_address_fails_the_error_names_the_upstream() -> None:
    with socket.socket() as first, socket.socket() as second:
        first.bind(("127.0.0.1", 0))
        second.bind(("127.0.0.1", 0))
        resolver = resolving_to(first.getsockname(), second.getsockname())
        ports = [first.getsockname()[1], second.getsockname()[1]]
        transport = WireTransport(resolver=resolver)
        try:
            with pytest.raises(UpstreamConnectionError) as failed:
                await get(transport, 8080)
        finally:
            await transport.aclose()
    assert "cannot reach http://upstream.test:8080" in failed.value.detail
    # The first address's failure, the one tried first.
    assert f"(ConnectionRefusedError: Connect call failed ('127.0.0.1', {ports[0]}))" in (
        failed.value.detail
    )
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
    assert (failed.value.before_answer, failed.value.written) == (True, False)  # tried again


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
