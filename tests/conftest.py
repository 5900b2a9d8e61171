"""Shared fixtures: the real app with its lifespan and its production upstream client, in front
of a loopback upstream that answers from a respx router (see tests/helpers/upstream_server.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from xdist.scheduler import LoadFileScheduling  # type: ignore[import-untyped]

from src.config import Settings
from src.services.base import client as base_client
from tests.helpers.app import Serve, make_settings
from tests.helpers.e2e import E2E_REPORT
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


# Files whose tests compare measured times with tight bounds (a median within 5 %, a send lag
# under 10 ms), and the sustained load that keeps both cores busy: with parallel workers they
# run one after the other on one worker, never beside each other.
TIMING_FILES = frozenset(
    {
        "tests/e2e/test_benchmark_jobs.py",
        "tests/e2e/test_load.py",
        "tests/emulator/test_providers.py",
        "tests/test_measurement.py",
        "tests/test_providers.py",
        "tests/test_sweeps.py",
    }
)
TIMING_GROUP = "timing"


class FileOrTimingScheduling(LoadFileScheduling):  # type: ignore[misc]
    """`--dist loadfile`, with the files of TIMING_FILES as one unit of work."""

    def _split_scope(self, nodeid: str) -> str:
        path = nodeid.split("::", 1)[0]
        return TIMING_GROUP if path in TIMING_FILES else path


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") == "loadfile":
        return FileOrTimingScheduling(config, log)
    return None


def pytest_sessionfinish(session: pytest.Session) -> None:
    """On a worker, hand the e2e figures to the controller, which prints them."""
    workeroutput: dict[str, Any] | None = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["e2e_report"] = session.config.stash.get(E2E_REPORT, [])


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    lines: list[str] = getattr(node, "workeroutput", {}).get("e2e_report", [])
    node.config.stash.setdefault(E2E_REPORT, []).extend(lines)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """Figures the e2e tests measured (load, disconnects), shown without `-s`."""
    lines = config.stash.get(E2E_REPORT, [])
    if lines:
        terminalreporter.write_sep("-", "e2e figures")
        for line in lines:
            terminalreporter.write_line(line)


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
