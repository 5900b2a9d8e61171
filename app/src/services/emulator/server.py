"""Run the emulator on a real socket inside the caller's event loop.

`uvicorn.Server.serve()` installs SIGINT/SIGTERM handlers, which would take them from the
main server; this drives the same startup / main loop / shutdown steps without them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Final

import uvicorn

from src.services.emulator.app import API_PREFIX, create_emulator_app
from src.services.emulator.config import KEEP_ALIVE_SECONDS, EmulatorConfig

# Streams still open at exit get this long before their tasks are cancelled.
_GRACEFUL_SHUTDOWN_SECONDS: Final = 3


@contextlib.asynccontextmanager
async def serve_embedded_emulator(
    config: EmulatorConfig, host: str = "127.0.0.1"
) -> AsyncIterator[str]:
    """Serve an emulator on a free port of `host`; yields its base URL (`.../api/v1`)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Port 0 and our own socket: the port is known before anything listens, with no race.
        sock.bind((host, 0))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    port: int = sock.getsockname()[1]

    server_config = uvicorn.Config(
        create_emulator_app(config),
        host=host,
        port=port,
        loop="auto",
        http="auto",
        ws="none",
        lifespan="on",
        interface="asgi3",
        log_config=None,
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_SECONDS,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
    server = uvicorn.Server(server_config)
    # What `Server._serve` does before `startup`; `serve` itself is what we must avoid.
    server_config.load()
    server.lifespan = server_config.lifespan_class(server_config)
    try:
        await server.startup(sockets=[sock])
    except BaseException:
        sock.close()
        raise
    # The main loop only refreshes the Date header and watches `should_exit`.
    main_loop = asyncio.create_task(server.main_loop(), name="emulator-main-loop")
    try:
        url_host = f"[{host}]" if family == socket.AF_INET6 else host
        yield f"http://{url_host}:{port}{API_PREFIX}"
    finally:
        server.should_exit = True
        # Cancelled rather than awaited for its next 0.1 s tick; it holds nothing to clean up.
        main_loop.cancel()
        await asyncio.wait({main_loop})
        await server.shutdown(sockets=[sock])
