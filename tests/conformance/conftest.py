"""Every conformance case runs on both upstream transports, through the real client.

`transport` is "wire" (ours) or "httpx" (httpx's own); `case` gives the production
`OpenRouterClient` built by `build_transport`, pointed at a `ScriptedUpstream` over a real
loopback socket. Where the two differ by design, the test's name says so and each is held to
its own documented outcome.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest

from src.config import TransportKind
from src.services.base.client import RetryPolicy, build_transport
from src.services.base.httpx_transport import HttpxTransport
from src.services.base.timing import Timing
from src.services.base.transport import WireTransport
from src.services.openrouter.client import OpenRouterClient
from tests.conformance.scripted_upstream import ScriptedUpstream
from tests.helpers.openrouter import API_KEY

TRANSPORTS: tuple[TransportKind, ...] = ("wire", "httpx")
# Silence allowed within an answer: short, so a stalled case ends soon; far above the pauses
# of the slow-body case, so a loaded machine does not turn it into a timeout.
READ_TIMEOUT = 3.0
ATTEMPTS = 3
MAX_BODY_BYTES = 64 * 1024

# Cases the wire transport fails until the fixes made on the `wire` branch are merged.
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def no_proxies_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy set where the tests run would stand between the client and the loopback
    upstream; a test that wants one sets it."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> TransportKind:
    kind: TransportKind = request.param
    return kind


def in_use(client: OpenRouterClient) -> int:
    """Requests whose answer is still held: the pool's count of busy connections."""
    pool = client.transport
    if isinstance(pool, WireTransport):
        return pool.stats().in_use
    assert isinstance(pool, HttpxTransport)
    return pool.in_use


@dataclass
class Case:
    """One client on one transport, against one scripted upstream."""

    kind: TransportKind
    upstream: ScriptedUpstream
    client: OpenRouterClient
    waits: list[float] = field(default_factory=list)
    closed: bool = False

    @property
    def in_use(self) -> int:
        return in_use(self.client)

    async def get(self, path: str = "models") -> bytes:
        return await self.client.read("GET", path, Timing())

    async def post(self, path: str = "chat/completions", body: bytes = b"{}") -> bytes:
        return await self.client.read("POST", path, Timing(), body)

    async def close(self) -> list[int]:
        """Closes the client; the upstream's connections it left open (bounded wait)."""
        if not self.closed:
            self.closed = True
            await self.client.aclose()
        return await self.upstream.all_closed()


def make_client(
    kind: TransportKind,
    base_url: str,
    waits: list[float],
    max_connections: int = 10,
    connect_timeout: float = 5.0,
) -> OpenRouterClient:
    """The production client on `kind`; its retry waits are recorded in `waits`, not slept."""

    async def record(seconds: float) -> None:
        waits.append(seconds)

    return OpenRouterClient(
        build_transport(kind, max_connections=max_connections),
        base_url=base_url,
        api_key=API_KEY,
        timeout=httpx.Timeout(READ_TIMEOUT, connect=connect_timeout, pool=5.0),
        retry_policy=RetryPolicy(attempts=ATTEMPTS, min_seconds=0.0, max_seconds=1.0),
        sleep=record,
        max_response_bytes=MAX_BODY_BYTES,
    )


@pytest.fixture
async def upstream() -> AsyncIterator[ScriptedUpstream]:
    async with ScriptedUpstream() as server:
        yield server


@pytest.fixture
async def case(transport: TransportKind, upstream: ScriptedUpstream) -> AsyncIterator[Case]:
    waits: list[float] = []
    case = Case(transport, upstream, make_client(transport, upstream.base_url, waits), waits)
    try:
        yield case
    finally:
        await case.close()
