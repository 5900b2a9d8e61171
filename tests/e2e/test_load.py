"""Sustained load over loopback: no errors, and memory and descriptors that stay flat.

LOAD_SECONDS sets the measured duration (default 15). The baseline is taken after a warm-up at
full concurrency, once pools, caches and buffers have grown to their working size.

The load generator is aiohttp: httpx's own connection pool spends several milliseconds of CPU
per request at 100 connections, which on 2 cores would measure the client instead of the app.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from tests.helpers.audit import SecretAudit
from tests.helpers.e2e import generate_body
from tests.helpers.launcher import StartApp
from tests.helpers.processes import ServiceProcess

LOAD_SECONDS = float(os.environ.get("LOAD_SECONDS", "15"))
CONCURRENCY = 100
WARMUP_REQUESTS = 2_000
# A bound on count as well as time, whatever the machine's speed.
MAX_REQUESTS = 500_000
MIB = 1024 * 1024
RSS_GROWTH_LIMIT = 50 * MIB
# Files, pipes, the event loop's own descriptors: these must not grow at all.
OTHER_FD_SLACK = 2
# Sockets: our connections in, and at most one upstream connection per request in flight.
SOCKET_LIMIT = 2 * CONCURRENCY + 10


@dataclass
class Phase:
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True)
class Snapshot:
    rss: int
    sockets: int
    other_fds: int

    @classmethod
    def of(cls, app: ServiceProcess) -> Snapshot:
        sockets, other = app.fd_kinds()
        return cls(app.rss_bytes(), sockets, other)


async def run_phase(
    http: aiohttp.ClientSession,
    audit: SecretAudit,
    body: dict[str, Any],
    *,
    requests: int,
    seconds: float,
) -> Phase:
    phase = Phase()
    started = time.monotonic()
    deadline = started + seconds

    async def worker() -> None:
        while phase.requests < requests and time.monotonic() < deadline:
            phase.requests += 1
            try:
                async with http.post("/generate", json=body) as response:
                    raw = await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                phase.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            audit.check_message("load response", response.raw_headers, raw)
            if response.status != 200 or b'"text":"' not in raw:
                phase.errors.append(f"{response.status}: {raw[:200]!r}")

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    phase.seconds = time.monotonic() - started
    return phase


async def load(
    app: ServiceProcess, audit: SecretAudit, body: dict[str, Any]
) -> tuple[Phase, Phase, Snapshot, Snapshot]:
    async with aiohttp.ClientSession(
        app.url,
        connector=aiohttp.TCPConnector(limit=CONCURRENCY),
        timeout=aiohttp.ClientTimeout(total=10.0),
    ) as http:
        warmup = await run_phase(http, audit, body, requests=WARMUP_REQUESTS, seconds=60.0)
        before = Snapshot.of(app)
        measured = await run_phase(http, audit, body, requests=MAX_REQUESTS, seconds=LOAD_SECONDS)
        # Measured while our connections are still open, as they were for the baseline.
        after = Snapshot.of(app)
    return warmup, measured, before, after


@pytest.mark.load
@pytest.mark.timeout(LOAD_SECONDS * 2 + 90)
def test_sustained_load_has_no_errors_and_flat_memory_and_descriptors(
    start_app: StartApp, audit: SecretAudit, e2e_report: list[str]
) -> None:
    app = start_app("app-load")
    body = generate_body("Load test [[emulator:delay=0.05]]", max_tokens=16)

    warmup, measured, before, after = asyncio.run(load(app, audit, body))

    rate = measured.requests / measured.seconds
    e2e_report.append(
        f"load: {measured.requests} requests in {measured.seconds:.1f}s at {CONCURRENCY} "
        f"connections ({rate:.0f} req/s), {len(measured.errors)} errors "
        f"(after {warmup.requests} warm-up requests); app RSS {before.rss / MIB:.1f} -> "
        f"{after.rss / MIB:.1f} MiB; sockets {before.sockets} -> {after.sockets}; "
        f"other fds {before.other_fds} -> {after.other_fds}"
    )
    assert warmup.errors == [], warmup.errors[:5]
    assert measured.errors == [], measured.errors[:5]
    assert measured.requests >= CONCURRENCY * LOAD_SECONDS  # at least 1 req/s per connection
    assert after.rss - before.rss < RSS_GROWTH_LIMIT
    assert after.other_fds <= before.other_fds + OTHER_FD_SLACK
    assert after.sockets <= SOCKET_LIMIT
    assert app.running
