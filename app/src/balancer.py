"""`python -m src.balancer`: a small TCP load balancer, so that several API replicas answer
on one port with nothing but the service's own image (the compose `scale` profile).

Each new connection goes to the next backend of BALANCER_BACKENDS (host:port, comma
separated) in turn; a backend that refuses the connection is skipped for that connection, so
a replica that died costs its callers nothing but the connections it held. Bytes are copied
both ways, untouched (HTTP/1.1 keep-alive and event streams pass as they are) until either
side closes. Listens on
HOST:PORT like the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal

import uvloop

from src.tasks import cancel_and_wait

logger = logging.getLogger("balancer")

CONNECT_SECONDS = 2.0
CHUNK_BYTES = 64 * 1024


def parse_backends(value: str) -> list[tuple[str, int]]:
    backends = []
    for item in value.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise SystemExit(f"BALANCER_BACKENDS: {item.strip()!r} is not host:port")
        backends.append((host.strip("[]"), int(port)))
    if not backends:
        raise SystemExit("BALANCER_BACKENDS names no backend")
    return backends


class Balancer:
    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self.backends = backends
        self._turn = itertools.cycle(range(len(backends)))
        self.connections = 0  # open now, for whoever stops it

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self._relay(reader, writer)
        finally:
            self.connections -= 1

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = await self._connect()
        sides = [writer]
        try:
            if upstream is None:
                return
            up_reader, up_writer = upstream
            sides.append(up_writer)
            # Either side closing ends the connection: HTTP callers do not half-close.
            copies = [
                asyncio.create_task(_copy(reader, up_writer)),
                asyncio.create_task(_copy(up_reader, writer)),
            ]
            try:
                await asyncio.wait(copies, return_when=asyncio.FIRST_COMPLETED)
            finally:
                await cancel_and_wait(*copies)
        finally:
            for side in sides:
                side.close()
                with contextlib.suppress(OSError):
                    await side.wait_closed()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        first = next(self._turn)
        for offset in range(len(self.backends)):
            host, port = self.backends[(first + offset) % len(self.backends)]
            try:
                return await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_SECONDS)
            except (OSError, TimeoutError) as exc:
                logger.warning("backend %s:%d unreachable: %s", host, port, type(exc).__name__)
        logger.error("no backend reachable")
        return None


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Until the sender closes its side (or either side fails)."""
    with contextlib.suppress(OSError, RuntimeError):
        while data := await reader.read(CHUNK_BYTES):
            writer.write(data)
            await writer.drain()


async def serve(host: str, port: int, backends: list[tuple[str, int]]) -> None:
    balancer = Balancer(backends)
    server = await asyncio.start_server(balancer.handle, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    logger.info("balancing %s:%d over %s", host, port, backends)
    async with server:
        await stop.wait()
    with contextlib.suppress(Exception):
        await server.wait_closed()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(levelname)s - %(message)s")
    backends = parse_backends(os.environ.get("BALANCER_BACKENDS", ""))
    host = os.environ.get("HOST", "127.0.0.1")  # the image sets 0.0.0.0
    uvloop.run(serve(host, int(os.environ.get("PORT", "8000")), backends))


if __name__ == "__main__":
    main()
