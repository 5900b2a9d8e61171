"""A real forward proxy (proxy.py) on a free loopback port, and TLS upstreams with a private CA.

The proxy runs as a child process with basic authentication; its access log (one line per
request or CONNECT tunnel) tells which requests went through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import respx
import trustme

from tests.helpers.upstream_server import LOOPBACK, LoopbackUpstream

PROXY_USER = "proxyuser"
PROXY_PASSWORD = "Pr0xy-s3cret-pw"
START_SECONDS = 30.0


class ForwardProxy:
    def __init__(self, port: int, log_path: Path, process: subprocess.Popen[bytes]) -> None:
        self.port = port
        self.log_path = log_path
        self.process = process

    def url(self, user: str = PROXY_USER, password: str = PROXY_PASSWORD) -> str:
        return f"http://{user}:{password}@{LOOPBACK}:{self.port}"

    def access_lines(self) -> list[str]:
        """The proxy's access log: `... - GET 127.0.0.1:P/path - 200 OK ...`, `CONNECT ...`."""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return [line for line in text.splitlines() if "access_log" in line]


def _wait_for_port(port_file: Path, process: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"proxy.py exited with {process.returncode}")
        text = port_file.read_text().strip() if port_file.exists() else ""
        if text:
            with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, int(text)), 1):
                return int(text)
        time.sleep(0.05)
    raise RuntimeError(f"proxy.py did not accept connections within {START_SECONDS} s")


@contextlib.contextmanager
def forward_proxy(directory: Path) -> Iterator[ForwardProxy]:
    """proxy.py with basic auth PROXY_USER:PROXY_PASSWORD; stopped (by its pid) at exit."""
    port_file = directory / "proxy.port"
    log_path = directory / "proxy.log"
    command = [
        sys.executable,
        "-m",
        "proxy",
        "--hostname",
        LOOPBACK,
        "--port",
        "0",
        "--port-file",
        str(port_file),
        "--basic-auth",
        f"{PROXY_USER}:{PROXY_PASSWORD}",
        "--num-workers",
        "1",
        "--num-acceptors",
        "1",
        "--log-file",
        str(log_path),
        "--log-level",
        "INFO",
    ]
    process = subprocess.Popen(
        command, cwd=directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        port = _wait_for_port(port_file, process)
        yield ForwardProxy(port, log_path, process)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


class TlsUpstream(LoopbackUpstream):
    """The loopback upstream behind TLS with `certificate`; counts the TCP connections it
    accepted, handshakes that failed included."""

    def __init__(
        self,
        router: respx.MockRouter,
        upstream_base_url: str,
        certificate: trustme.LeafCert,
        host: str = LOOPBACK,
    ) -> None:
        super().__init__(router, upstream_base_url)
        self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        certificate.configure_cert(self._tls)
        self._host = host
        self.accepted = 0
        self.handshake_failures = 0

    @property
    def base_url(self) -> str:
        return f"https://{self._host}:{self.port}{self._upstream.path.rstrip('/')}"

    def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.create_task(self._secured(reader, writer))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    async def _secured(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await writer.start_tls(self._tls)
        except (ssl.SSLError, ConnectionError):
            self.handshake_failures += 1
            writer.close()
            return
        await self._serve_connection(reader, writer)


def write_ca_bundle(ca: trustme.CA, path: Path) -> Path:
    ca.cert_pem.write_to_path(str(path))
    return path


@contextlib.contextmanager
def tls_upstream_in_thread(
    router: respx.MockRouter, certificate: trustme.LeafCert
) -> Iterator[TlsUpstream]:
    """A TlsUpstream on its own event loop in a thread, for tests that are not async (the
    end-to-end ones, whose service runs in another process)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="tls-upstream", daemon=True)
    thread.start()
    server = TlsUpstream(router, "https://upstream.test/api/v1", certificate)
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(START_SECONDS)
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.aclose(), loop).result(START_SECONDS)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(START_SECONDS)
        loop.close()


class Socks5Proxy:
    """A minimal SOCKS5 proxy on loopback (RFC 1928 CONNECT, RFC 1929 user and password) that
    relays bytes both ways and records each destination it was asked for."""

    def __init__(self, user: bytes, password: bytes) -> None:
        self._credentials = (user, password)
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task[None]] = set()
        self.destinations: list[tuple[str, int]] = []
        self.port = 0

    async def __aenter__(self) -> Socks5Proxy:
        self._server = await asyncio.start_server(self._serve, LOOPBACK, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._relays):
            task.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)

    def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._handle(reader, writer))
        self._relays.add(task)
        task.add_done_callback(self._relays.discard)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            destination = await self._handshake(reader, writer)
            if destination is None:
                return
            self.destinations.append(destination)
            up_reader, up_writer = await asyncio.open_connection(*destination)
            writer.write(b"\x05\x00\x00\x01" + bytes(4) + bytes(2))
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[str, int] | None:
        _, count = await reader.readexactly(2)
        if 2 not in await reader.readexactly(count):
            writer.write(b"\x05\xff")
            return None
        writer.write(b"\x05\x02")
        await reader.readexactly(1)
        user = await reader.readexactly((await reader.readexactly(1))[0])
        password = await reader.readexactly((await reader.readexactly(1))[0])
        if (user, password) != self._credentials:
            writer.write(b"\x01\x01")
            return None
        writer.write(b"\x01\x00")
        _, command, _, kind = await reader.readexactly(4)
        if kind == 3:
            host = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
        else:
            host = str(ipaddress.ip_address(await reader.readexactly(4 if kind == 1 else 16)))
        port = int.from_bytes(await reader.readexactly(2), "big")
        return host, port


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()
