"""/metrics of a real `src.serve` with two workers: every scrape, whichever worker answers it,
adds up both workers' requests."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from tests.helpers.e2e import generate_body, unique
from tests.helpers.launcher import StartApp
from tests.helpers.metrics import Scrape
from tests.helpers.processes import wait_until

REQUESTS = "llm_gateway_requests_total"
GENERATED = {"route": "/generate", "method": "POST", "status": "200"}
# Sent in rounds until two workers have answered some; uvicorn's workers take connections
# from one socket, so both soon do, but which one takes a connection is the kernel's choice.
ROUND = 5
MAX_REQUESTS = 200
SCRAPES = 6


def test_with_two_workers_every_scrape_adds_up_both_workers_requests(
    start_app: StartApp, tmp_path: Path
) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    stale = directory / "counter_999999.db"
    stale.write_bytes(b"left by an earlier start: not a values file")
    app = start_app("app-metrics-two-workers", WORKERS="2", PROMETHEUS_MULTIPROC_DIR=str(directory))

    assert not stale.exists()  # emptied at start: an earlier start's values are not counted
    sent = 0
    per_worker: dict[str, float] = {}
    scratch = tmp_path / "one-worker"
    while sent < MAX_REQUESTS and sum(1 for count in per_worker.values() if count) < 2:
        for _ in range(ROUND):
            # A new connection each time, so that either worker may take it.
            with httpx.Client(base_url=app.url, trust_env=False, timeout=15.0) as fresh:
                answer = fresh.post("/generate", json=generate_body(unique("count me")))
            assert answer.status_code == 200, answer.text
            sent += 1
        per_worker = counts_once_flushed(directory, scratch, sent)

    assert sum(1 for count in per_worker.values() if count) == 2, per_worker
    assert sum(per_worker.values()) == sent
    for _ in range(SCRAPES):
        with httpx.Client(base_url=app.url, trust_env=False, timeout=15.0) as fresh:
            scraped = fresh.get("/metrics")
        assert scraped.status_code == 200, scraped.text
        scrape = Scrape(scraped.text)
        assert scrape.value(REQUESTS, **GENERATED) == sent
        assert scrape.value("llm_gateway_request_duration_seconds_count", route="/generate") == sent


def counts_once_flushed(directory: Path, scratch: Path, sent: int) -> dict[str, float]:
    """Each worker writes what it counted about once a second: the counts once they add up
    to what was sent, or as they are after a generous wait."""
    wait_until(lambda: sum(generate_counts_by_worker(directory, scratch).values()) == sent, 10)
    return generate_counts_by_worker(directory, scratch)


def generate_counts_by_worker(directory: Path, scratch: Path) -> dict[str, float]:
    """Each worker's own count of answered /generate requests, read from its file alone."""
    counts = {}
    for values in directory.glob("counter_*.db"):
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        shutil.copy(values, scratch / values.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(scratch))  # type: ignore[no-untyped-call]
        counts[values.stem] = Scrape(generate_latest(registry).decode()).value(
            REQUESTS, **GENERATED
        )
    return counts
