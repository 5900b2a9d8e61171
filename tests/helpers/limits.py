"""uvicorn with the pre-auth limits (api/gate/http_limits.py) in this process, a small app
behind it, and raw exchanges with it."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from src.api.gate import http_limits
from src.api.gate.http_limits import LimitedHttpToolsProtocol
from src.config import Settings

WAIT_SECONDS = 10.0  # a bound on every wait; the answers come long before it


class App:
    """Answers 200 "ok", or holds the request until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.held = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        if scope["path"] == "/hold":
            self.held.set()
            await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


@asynccontextmanager
async def serving(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    app: App,
    *,
    reset_contextvars: bool = False,
    **limits: float,
) -> AsyncIterator[int]:
    settings = Settings(_env_file=None, log_dir=tmp_path / "logs", **limits)  # type: ignore[arg-type]
    monkeypatch.setattr(http_limits, "get_settings", lambda: settings)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        http=LimitedHttpToolsProtocol,
        ws="none",
        lifespan="off",
        log_config=None,
        access_log=False,
        limit_concurrency=int(limits.get("max_connections", 100)),
        reset_contextvars=reset_contextvars,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(WAIT_SECONDS):
            while not server.started:
                await asyncio.sleep(0.01)
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        app.release.set()
        server.should_exit = True
        await asyncio.wait_for(task, WAIT_SECONDS)


async def until(condition: Callable[[], object], what: str) -> None:
    """Waits, within WAIT_SECONDS, for `condition` to hold (`what` names it in the failure)."""
    try:
        async with asyncio.timeout(WAIT_SECONDS):
            while not condition():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"still waiting for {what} after {WAIT_SECONDS} s") from None


async def exchange(port: int, request: bytes) -> bytes:
    """Sends `request`, then reads until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), WAIT_SECONDS)
    finally:
        writer.close()


def parse(answer: bytes) -> tuple[str, dict[str, str], dict[str, str]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(": ")
        headers[name.lower()] = value
    assert int(headers["content-length"]) == len(body)
    return status, headers, json.loads(body)


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the test's server logged at ERROR or above: a limit's bookkeeping that fails inside
    one of asyncio's callbacks shows only there, as "Exception in callback ..."."""
    records = caplog.get_records("call")
    return [record.getMessage() for record in records if record.levelno >= logging.ERROR]
