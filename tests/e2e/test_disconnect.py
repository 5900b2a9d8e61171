"""Callers who leave: the upstream request is cancelled, and no pooled connection leaks.

Proof comes from two places. The socket table (/proc/net/tcp joined with /proc/<pid>/fd) shows
the app's connections to the upstream closing long before the abandoned answers would have
ended. The app's own pool counters (tests/helpers/pool_probe.py) show the pool's limit held and
every connection given back. The emulator used here is this module's
own, so its slow, abandoned answers cannot slow down the rest of the session.

Every wait is for an event, with a deadline that is generous for a loaded machine and still far
shorter than the abandoned work: an answer that was not cancelled would outlive it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.helpers.audit import AuditedAsyncTransport, SecretAudit
from tests.helpers.e2e import generate_body, unique
from tests.helpers.launcher import Launcher, StartApp
from tests.helpers.pool_probe import PROBE_PATH
from tests.helpers.processes import (
    TCP_CLOSE_WAIT,
    TCP_ESTABLISHED,
    ServiceProcess,
    socket_inodes,
    tcp_table,
    wait_until,
)

POOL_SIZE = 20
# 200 tokens asked at 2 tokens/s: the answer would stream for 100 s.
SLOW_STREAM = "[[emulator:tps=2]]"
# An answer that would take 60 s to start.
SLOW_ANSWER = "[[emulator:delay=60]]"
# Far shorter than the abandoned work above, far longer than a cancellation takes.
GONE_WITHIN_SECONDS = 20.0
MID_STREAM, MID_REQUEST, BEFORE_FIRST_TOKEN = 400, 400, 200
CONCURRENCY = 50
# Callers get all the time a busy machine needs for everything (connect, send, a first token)...
CALLER_TIMEOUT = httpx.Timeout(30.0)
# ...except those who leave a slow answer: they wait this long for it, once it is sent.
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

    # The stream had 100 s to go: only a cancelled upstream request closes it this early.
    assert wait_until(lambda: not app.connections_to(slow_emulator.port), GONE_WITHIN_SECONDS)
    assert wait_until(lambda: not emulator_ends(slow_emulator, {app_port}), GONE_WITHIN_SECONDS)
    assert time.monotonic() - left < GONE_WITHIN_SECONDS
    assert http.get("/health").status_code == 200


async def leave_storm(app: ServiceProcess, audit: SecretAudit) -> int:
    """1000 callers who leave early, CONCURRENCY at a time; returns how many left."""
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    gate = asyncio.Semaphore(CONCURRENCY)
    leave_timeout = httpx.Timeout(CALLER_TIMEOUT.connect, read=LEAVE_AFTER_SECONDS)
    left = 0

    async with httpx.AsyncClient(
        base_url=app.url,
        transport=AuditedAsyncTransport(audit, limits=limits),
        timeout=CALLER_TIMEOUT,
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
                # Sent whole, then abandoned while the app waits for the upstream.
                with pytest.raises(httpx.ReadTimeout):
                    await http.post("/generate", json=body, timeout=leave_timeout)
            left += 1

        await asyncio.gather(
            *[mid_stream() for _ in range(MID_STREAM)],
            *[mid_request(stream=False) for _ in range(MID_REQUEST)],
            *[mid_request(stream=True) for _ in range(BEFORE_FIRST_TOKEN)],
        )
    return left


def upstream_pool(http: httpx.Client) -> dict[str, Any]:
    """The app's own pool counters: connections lent out now, most open at once, requests."""
    response = http.get(PROBE_PATH)
    assert response.status_code == 200, response.text
    counts: dict[str, Any] = response.json()
    return counts


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
        module="tests.helpers.pool_probe",
        UPSTREAM_MAX_CONNECTIONS=str(POOL_SIZE),
        UPSTREAM_TIMEOUT_SECONDS="120",
    )
    http = connect(app)
    assert http.post("/generate", json=generate_body("Warm up", max_tokens=4)).status_code == 200
    fds_before = app.fd_count()

    started = time.monotonic()
    left = asyncio.run(leave_storm(app, audit))
    storm_seconds = time.monotonic() - started

    assert left == MID_STREAM + MID_REQUEST + BEFORE_FIRST_TOKEN
    # Every abandoned request gave its connection back, and at no moment were more open than
    # the pool holds: CONCURRENCY callers wanted them, the limit let POOL_SIZE through.
    assert wait_until(lambda: upstream_pool(http)["in_use"] == 0, GONE_WITHIN_SECONDS)
    counts = upstream_pool(http)
    assert 0 < counts["most_open"] <= POOL_SIZE, counts
    assert counts["requests"] >= MID_STREAM, counts
    # Abandoned requests were cancelled, not left to finish (they would take a minute or
    # more): their connections are gone, and so are the descriptors.
    assert wait_until(lambda: len(app.connections_to(slow_emulator.port)) <= 1, GONE_WITHIN_SECONDS)
    assert wait_until(lambda: app.fd_count() <= fds_before + FD_SLACK, GONE_WITHIN_SECONDS)
    fds_after = app.fd_count()
    # A leaked or still-busy connection would queue this behind the abandoned requests, which
    # would take longer than the client's whole timeout.
    asked = time.monotonic()
    response = http.post("/generate", json=generate_body(unique("Still quick?"), max_tokens=8))
    answer_seconds = time.monotonic() - asked
    assert response.status_code == 200, response.text
    assert http.get("/health").status_code == 200
    e2e_report.append(
        f"disconnect storm: {left} callers left early in {storm_seconds:.1f}s "
        f"(pool {POOL_SIZE}, at most {counts['most_open']} upstream connections open at once, "
        f"{counts['requests']} upstream requests); next /generate {answer_seconds * 1000:.0f} ms; "
        f"fds {fds_before} -> {fds_after}"
    )
