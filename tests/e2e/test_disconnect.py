"""Callers who leave: the upstream request is cancelled, and no pooled connection leaks.

Proof comes from the socket table (/proc/net/tcp joined with /proc/<pid>/fd): the app's
connection to the upstream closes as soon as the caller goes, and the emulator's end of it
closes too. The emulator used here is this module's own, so its slow, abandoned answers
cannot slow down the rest of the session.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.e2e.audit import AuditedAsyncTransport, SecretAudit
from tests.e2e.conftest import Launcher, StartApp
from tests.e2e.helpers import generate_body, unique
from tests.e2e.processes import (
    TCP_CLOSE_WAIT,
    TCP_ESTABLISHED,
    ServiceProcess,
    socket_inodes,
    tcp_table,
    wait_until,
)

POOL_SIZE = 20
# 200 tokens asked at 5 tokens/s: the answer would stream for many seconds.
SLOW_STREAM = "[[emulator:tps=5]]"
SLOW_ANSWER = "[[emulator:delay=5]]"
MID_STREAM, MID_REQUEST, BEFORE_FIRST_TOKEN = 400, 400, 200
CONCURRENCY = 50
LEAVE_AFTER_SECONDS = 0.2
FD_SLACK = 5


@pytest.fixture(scope="module")
def slow_emulator(launcher: Launcher) -> Iterator[ServiceProcess]:
    emulator = launcher.emulator("emulator-disconnects")
    yield emulator
    emulator.stop()


def emulator_ends(emulator: ServiceProcess, app_ports: set[int]) -> list[int]:
    """The emulator's still-open ends of connections from these local ports of the app."""
    inodes = socket_inodes(emulator.pid)
    return [
        entry.remote_port
        for entry in tcp_table()
        if entry.inode in inodes
        and entry.local_port == emulator.port
        and entry.remote_port in app_ports
        and entry.state in (TCP_ESTABLISHED, TCP_CLOSE_WAIT)
    ]


def test_leaving_a_stream_after_the_first_token_cancels_the_upstream_request(
    start_app: StartApp,
    slow_emulator: ServiceProcess,
    connect: Callable[[ServiceProcess], httpx.Client],
) -> None:
    app = start_app("app-leave-stream", upstream=slow_emulator)
    http = connect(app)
    assert app.connections_to(slow_emulator.port) == []  # nothing called upstream yet

    body = generate_body(unique(f"Long story {SLOW_STREAM}"), max_tokens=200)
    with http.stream("POST", "/generate", params={"stream": "true"}, json=body) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        assert next(lines) == "event: token"
        assert next(lines).startswith("data: ")
        upstream = app.connections_to(slow_emulator.port)
        assert len(upstream) == 1
        app_port = upstream[0].local_port
        assert emulator_ends(slow_emulator, {app_port}) == [app_port]
    left = time.monotonic()

    # The stream had seconds to go: only a cancelled upstream request closes it this early.
    assert wait_until(lambda: not app.connections_to(slow_emulator.port), 2.0)
    assert wait_until(lambda: not emulator_ends(slow_emulator, {app_port}), 2.0)
    assert time.monotonic() - left < 2.0
    assert http.get("/health").status_code == 200


async def leave_storm(
    app: ServiceProcess, audit: SecretAudit, upstream_port: int
) -> tuple[int, int]:
    """1000 callers who leave early; returns (how many left, most upstream connections seen)."""
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    gate = asyncio.Semaphore(CONCURRENCY)
    left = 0
    most_connections = 0
    storming = True

    async with httpx.AsyncClient(
        base_url=app.url,
        transport=AuditedAsyncTransport(audit, limits=limits),
        timeout=httpx.Timeout(10.0),
        trust_env=False,
    ) as http:

        async def mid_stream() -> None:
            nonlocal left
            body = generate_body(f"Long story {SLOW_STREAM}", max_tokens=200)
            async with (
                gate,
                http.stream("POST", "/generate", params={"stream": "true"}, json=body) as response,
            ):
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        break  # one token read: close mid-body
            left += 1

        async def mid_request(stream: bool) -> None:
            nonlocal left
            body = generate_body(f"Slow answer {SLOW_ANSWER}", stream=stream)
            async with gate:
                with pytest.raises(httpx.ReadTimeout):
                    await http.post("/generate", json=body, timeout=LEAVE_AFTER_SECONDS)
            left += 1

        async def watch_pool() -> None:
            nonlocal most_connections
            while storming:
                count = len(app.connections_to(upstream_port))
                most_connections = max(most_connections, count)
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch_pool())
        callers = (
            [mid_stream() for _ in range(MID_STREAM)]
            + [mid_request(stream=False) for _ in range(MID_REQUEST)]
            + [mid_request(stream=True) for _ in range(BEFORE_FIRST_TOKEN)]
        )
        try:
            await asyncio.gather(*callers)
        finally:
            storming = False
            await watcher
    return left, most_connections


def test_a_thousand_callers_leaving_early_exhaust_neither_the_pool_nor_the_fds(
    start_app: StartApp,
    slow_emulator: ServiceProcess,
    connect: Callable[[ServiceProcess], httpx.Client],
    audit: SecretAudit,
    e2e_report: list[str],
) -> None:
    app = start_app(
        "app-small-pool",
        upstream=slow_emulator,
        UPSTREAM_MAX_CONNECTIONS=str(POOL_SIZE),
        UPSTREAM_TIMEOUT_SECONDS="120",
    )
    http = connect(app)
    assert http.post("/generate", json=generate_body("Warm up", max_tokens=4)).status_code == 200
    fds_before = app.fd_count()

    started = time.monotonic()
    left, most_connections = asyncio.run(leave_storm(app, audit, slow_emulator.port))
    storm_seconds = time.monotonic() - started

    assert left == MID_STREAM + MID_REQUEST + BEFORE_FIRST_TOKEN
    assert most_connections <= POOL_SIZE
    # A leaked or still-busy connection would queue this behind the abandoned requests.
    asked = time.monotonic()
    response = http.post("/generate", json=generate_body(unique("Still quick?"), max_tokens=8))
    answer_seconds = time.monotonic() - asked
    assert response.status_code == 200, response.text
    assert answer_seconds < 2.0
    # Abandoned requests were cancelled, not left to finish: their connections are gone.
    assert wait_until(lambda: len(app.connections_to(slow_emulator.port)) <= 2, 3.0)
    assert wait_until(lambda: app.fd_count() <= fds_before + FD_SLACK, 5.0)
    fds_after = app.fd_count()
    assert http.get("/health").status_code == 200
    e2e_report.append(
        f"disconnect storm: {left} callers left early in {storm_seconds:.1f}s "
        f"(pool {POOL_SIZE}, at most {most_connections} upstream connections seen); "
        f"next /generate {answer_seconds * 1000:.0f} ms; fds {fds_before} -> {fds_after}"
    )
