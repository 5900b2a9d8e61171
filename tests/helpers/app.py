"""The app under test: settings for a test, the app with its lifespan, and its log file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from src.config import Settings
from src.main import create_app
from src.services.base.client import RetryPolicy
from src.services.base.transport import WireTransport
from src.services.openrouter.client import OpenRouterClient
from tests.helpers.openrouter import API_KEY, UPSTREAM

SERVICE_URL = "http://service.test"


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "openrouter_api_key": API_KEY,
        "openrouter_base_url": UPSTREAM,
        "log_dir": tmp_path / "logs",
        "benchmarks_dir": tmp_path / "benchmarks",
        "retry_attempts": 3,
        "retry_min_seconds": 0.5,
        "retry_max_seconds": 8.0,
        # In the test's own process, so the retry-wait patch and the loopback upstream's
        # routes apply; the runner process has tests of its own.
        "benchmark_isolation": "inline",
        # The in-process client's host (SERVICE_URL).
        "allowed_hosts": ["service.test"],
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


def read_log(settings: Settings) -> str:
    """The log file; read it after the app has shut down (the queue is drained by then)."""
    return (settings.log_dir / "server_logs.txt").read_text(encoding="utf-8")


class Serve:
    """Builds the app with its production upstream client, pointed at `upstream_url`.

    `async with serve(settings) as client` runs the app's lifespan and gives an httpx client
    that calls it in process; `serve.app(settings)` is the bare ASGI app, for tests that drive
    the ASGI protocol themselves.
    """

    def __init__(self, upstream_url: str) -> None:
        self.upstream_url = upstream_url

    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"openrouter_base_url": self.upstream_url})

    def app(self, settings: Settings) -> FastAPI:
        return create_app(self.settings(settings))

    @asynccontextmanager
    async def __call__(self, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
        async with running(self.app(settings)) as client:
            yield client


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url=SERVICE_URL
        ) as client,
    ):
        yield client


def in_process_app(settings: Settings) -> FastAPI:
    """The app with httpx's own transport under its client, so respx intercepts the upstream
    calls inside the app's own call stack. Only for what cannot cross a socket: an exception
    raised by the "upstream" that must surface in the app as that very exception.
    """
    return create_app(settings, transport=httpx.AsyncHTTPTransport())


def openrouter_client(base_url: str, attempts: int = 1) -> OpenRouterClient:
    """The production upstream client on its own (no app), with the test key; close it with
    `await client.aclose()`."""
    return OpenRouterClient(
        WireTransport(max_connections=100),
        base_url=base_url,
        api_key=API_KEY,
        timeout=httpx.Timeout(30.0, connect=10.0),
        retry_policy=RetryPolicy(attempts=attempts),
    )
