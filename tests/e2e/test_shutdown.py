"""SIGTERM while work is in flight: a bounded stop, and a benchmark that keeps what it measured."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.helpers.e2e import MODEL, generate_body, unique
from tests.helpers.launcher import StartApp
from tests.helpers.processes import ServiceProcess, wait_until
from tests.helpers.results import csv_rows

SHUTDOWN_TIMEOUT_SECONDS = 2
# Interpreter exit, lifespan shutdown and scheduling on a busy 2-core machine.
STOP_MARGIN_SECONDS = 1.5
# uvicorn re-raises the signal it caught once it has shut down cleanly.
CLEAN_EXIT_CODES = {0, -signal.SIGTERM}


class InFlight:
    """One request sent from a thread, so the test can signal the server meanwhile."""

    def __init__(self, send: Callable[[], httpx.Response]) -> None:
        self.outcome: httpx.Response | Exception | None = None
        self._send = send
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.outcome = self._send()
        except Exception as exc:  # the server may drop the connection: that is an outcome
            self.outcome = exc

    def join(self, seconds: float) -> httpx.Response | Exception | None:
        self._thread.join(seconds)
        assert not self._thread.is_alive(), "the caller is still waiting after the server stopped"
        return self.outcome


def sigterm_and_time_the_exit(app: ServiceProcess, limit: float) -> tuple[int, float]:
    started = time.monotonic()
    app.signal(signal.SIGTERM)
    code = app.wait_exit(limit + 5)
    elapsed = time.monotonic() - started
    assert code is not None, f"{app.name} still running {elapsed:.1f}s after SIGTERM"
    return code, elapsed


def test_sigterm_with_a_slow_request_in_flight_stops_within_the_shutdown_timeout(
    start_app: StartApp,
    emulator: ServiceProcess,
    connect: Callable[[ServiceProcess], httpx.Client],
) -> None:
    app = start_app("app-shutdown", SHUTDOWN_TIMEOUT_SECONDS=str(SHUTDOWN_TIMEOUT_SECONDS))
    http = connect(app)
    # The emulator holds this answer for an hour, or until its caller goes away.
    body = generate_body(unique("Never answered [[emulator:timeout]]"))
    in_flight = InFlight(lambda: http.post("/generate", json=body))
    assert wait_until(lambda: app.connections_to(emulator.port), 5.0), "request never went out"

    code, elapsed = sigterm_and_time_the_exit(app, SHUTDOWN_TIMEOUT_SECONDS)

    assert code in CLEAN_EXIT_CODES, app.output()
    assert elapsed <= SHUTDOWN_TIMEOUT_SECONDS + STOP_MARGIN_SECONDS
    outcome = in_flight.join(5.0)
    # Cut off: never a success, and never a hang (either an error status or a dropped socket).
    assert isinstance(outcome, Exception) or (
        isinstance(outcome, httpx.Response) and outcome.status_code >= 500
    ), outcome


def only_file(directory: Path, pattern: str) -> Path:
    files = sorted(directory.glob(pattern))
    assert len(files) == 1, files
    return files[0]


def test_sigterm_mid_benchmark_keeps_every_finished_row_and_marks_it_interrupted(
    start_app: StartApp, connect: Callable[[ServiceProcess], httpx.Client]
) -> None:
    shutdown_timeout = 1
    app = start_app("app-shutdown-benchmark", SHUTDOWN_TIMEOUT_SECONDS=str(shutdown_timeout))
    http = connect(app)
    # 3 prompts x 6 runs at concurrency 2, 0.3 s each: 2.7 s of work, cut after about 1.7 s.
    prompts = "\n".join(f"Prompt {index} [[emulator:delay=0.3]]" for index in range(1, 4))
    form: dict[str, Any] = {"model": MODEL, "runs": "6", "concurrency": "2", "max_tokens": "16"}
    in_flight = InFlight(
        lambda: http.post(
            "/benchmark",
            data=form,
            files={"prompt_file": ("prompts.txt", prompts.encode(), "text/plain")},
        )
    )

    def finished_rows() -> int:
        files = list(app.benchmarks_dir.glob("*.csv"))
        return len(csv_rows(files[0])) if files else 0

    assert wait_until(lambda: finished_rows() >= 2, 5.0), "the benchmark never started"
    code, elapsed = sigterm_and_time_the_exit(app, shutdown_timeout)

    assert code in CLEAN_EXIT_CODES, app.output()
    assert elapsed <= shutdown_timeout + STOP_MARGIN_SECONDS
    in_flight.join(5.0)
    rows = csv_rows(only_file(app.benchmarks_dir, "*.csv"))
    # Every request that finished is on disk, each exactly once, and the run was cut short.
    assert 2 <= len(rows) < 18
    assert len({(row["prompt_index"], row["run"]) for row in rows}) == len(rows)
    assert all(row["status"] == "200" and not row["error"] for row in rows), rows
    summary = json.loads(only_file(app.benchmarks_dir, "*.json").read_text(encoding="utf-8"))
    assert summary["status"] == "interrupted"
    assert summary["requests"] == 18
    assert summary["finished_requests"] == len(rows)
    assert summary["models"][0]["ok"] == len(rows)
