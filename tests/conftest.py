"""Shared fixtures: the real app with its lifespan and its production upstream client, in front
of a loopback upstream that answers from a respx router (see tests/helpers/upstream_server.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import respx

from src.config import Settings
from src.services.base import client as base_client
from tests.helpers.app import Serve, make_settings
from tests.helpers.openrouter import UPSTREAM
from tests.helpers.proxy_env import clear_proxy_env
from tests.helpers.upstream_server import LoopbackUpstream


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reversed",
        action="store_true",
        help="run the collected tests last to first: a test that only passes after another "
        "one (shared state, a leftover file) fails",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--reversed"):
        items.reverse()


@pytest.fixture(autouse=True)
def no_proxy_from_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's HTTPS_PROXY must not route the tests' loopback upstreams; tests about
    proxies set their own."""
    clear_proxy_env(monkeypatch)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


# Far more retries than any test configures: past it, the retries would never stop, and with
# waits that do not sleep the test would spin until killed instead of failing.
MAX_RETRY_WAITS = 100


@pytest.fixture
def retry_waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Replace the retry wait: nothing sleeps, and every wait is recorded."""
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) > MAX_RETRY_WAITS:
            raise AssertionError(f"more than {MAX_RETRY_WAITS} retry waits: retries never stop")

    monkeypatch.setattr(base_client, "retry_sleep", record)
    return waits


@pytest.fixture
def upstream() -> Iterator[respx.MockRouter]:
    """The upstream's routes. Started, so a client on httpx's own transport is served too."""
    with respx.mock(base_url=UPSTREAM, assert_all_called=False) as router:
        yield router


@pytest.fixture
async def upstream_server(upstream: respx.MockRouter) -> AsyncIterator[LoopbackUpstream]:
    async with LoopbackUpstream(upstream, UPSTREAM) as server:
        yield server
    if server.errors:
        raise AssertionError(f"the loopback upstream failed: {server.errors!r}")


@pytest.fixture
def serve(upstream_server: LoopbackUpstream) -> Serve:
    return Serve(upstream_server.base_url)


@pytest.fixture
async def client(
    settings: Settings, serve: Serve, retry_waits: list[float]
) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(settings) as service:
        yield service


# A real redis-server for the tests of JOBS_BACKEND=redis.
from tests.helpers.redis_server import redis_server, redis_url  # noqa: E402, F401
