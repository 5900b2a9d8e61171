"""Starting the service as real processes for the end-to-end tests, and clients that call it.

Each process runs in its own directory; every response read by these clients, and every file
the processes write, goes through the secret audit (see `audit.py`).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.helpers.audit import AuditedTransport, SecretAudit
from tests.helpers.e2e import INBOUND_AUTH, RETRY_ATTEMPTS, UPSTREAM_KEY
from tests.helpers.processes import (
    LOOPBACK,
    REPO_ROOT,
    ServiceProcess,
    launch,
    settings_env,
    wait_until,
)

CLIENT_TIMEOUT = httpx.Timeout(15.0, connect=5.0)
EMULATOR_STOP_SECONDS = 1.0
RUNNER_START_SECONDS = 20.0


class Launcher:
    """Starts emulators and apps in their own directories; stops whatever is left at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.processes: list[ServiceProcess] = []
        self._ids = itertools.count(1)

    def _workdir(self, name: str) -> Path:
        return self.root / f"{next(self._ids):02d}-{name}"

    def emulator(self, name: str = "emulator", **overrides: str) -> ServiceProcess:
        workdir = self._workdir(name)
        env = settings_env(
            {
                "EMULATOR_HOST": LOOPBACK,
                "EMULATOR_TTFT_SECONDS": "0",
                "EMULATOR_TOKENS_PER_SECOND": "0",
                "LOG_DIR": str(workdir / "logs"),
                "BENCHMARKS_DIR": str(workdir / "benchmarks"),
                **overrides,
            }
        )
        # The emulator keeps abandoned slow answers running, and uvicorn waits for them on
        # SIGTERM; it holds no state worth a clean exit, so it gets little time.
        return self._track(
            launch(
                name,
                "src.services.emulator",
                workdir,
                env,
                ready_path="/api/v1/models",
                stop_seconds=EMULATOR_STOP_SECONDS,
            )
        )

    def app(
        self,
        name: str,
        upstream: ServiceProcess | str | None,
        module: str = "src.serve",
        **overrides: str,
    ) -> ServiceProcess:
        """An app in front of `upstream` (an emulator, a base URL, or None for the embedded one).

        `module` is what runs: the service's own entry point, or a test wrapper around it.
        """
        workdir = self._workdir(name)
        values = {
            "HOST": LOOPBACK,
            "OPENROUTER_API_KEY": UPSTREAM_KEY,
            "LOG_DIR": str(workdir / "logs"),
            "BENCHMARKS_DIR": str(workdir / "benchmarks"),
            "RETRY_ATTEMPTS": str(RETRY_ATTEMPTS),
            "RETRY_MIN_SECONDS": "0.01",
            "RETRY_MAX_SECONDS": "0.05",
            "SHUTDOWN_TIMEOUT_SECONDS": "2",
            # Only used when the app embeds the emulator (no key): no artificial latency.
            "EMULATOR_TTFT_SECONDS": "0",
            "EMULATOR_TOKENS_PER_SECOND": "0",
        }
        if isinstance(upstream, ServiceProcess):
            values["OPENROUTER_BASE_URL"] = f"{upstream.url}/api/v1"
        elif isinstance(upstream, str):
            values["OPENROUTER_BASE_URL"] = upstream
        values.update(overrides)
        env = settings_env(values)
        if module.startswith("tests."):  # a test wrapper: the tests package must be importable
            env["PYTHONPATH"] += os.pathsep + str(REPO_ROOT)
        return self._track(launch(name, module, workdir, env, ready_path="/health"))

    def runner(
        self, name: str, upstream: ServiceProcess, redis_url: str, **overrides: str
    ) -> ServiceProcess:
        """A benchmark runner (`python -m src.runner`, JOBS_BACKEND=redis): no port; ready once
        it logs that it started."""
        workdir = self._workdir(name)
        env = settings_env(
            {
                "OPENROUTER_API_KEY": UPSTREAM_KEY,
                "OPENROUTER_BASE_URL": f"{upstream.url}/api/v1",
                "LOG_DIR": str(workdir / "logs"),
                "BENCHMARKS_DIR": str(workdir / "benchmarks"),
                "RETRY_ATTEMPTS": str(RETRY_ATTEMPTS),
                "RETRY_MIN_SECONDS": "0.01",
                "RETRY_MAX_SECONDS": "0.05",
                "SHUTDOWN_TIMEOUT_SECONDS": "2",
                "JOBS_BACKEND": "redis",
                "REDIS_URL": redis_url,
                **overrides,
            }
        )
        process = ServiceProcess(
            name=name, module="src.runner", port=0, workdir=workdir, env=env, ready_path=""
        )
        process.start()
        self._track(process)
        started = wait_until(lambda: "RUNNER STARTED" in process.log_text(), RUNNER_START_SECONDS)
        assert started, f"{name} never started\n{process.output()}"
        return process

    def _track(self, process: ServiceProcess) -> ServiceProcess:
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            process.stop()


def audited_client(audit: SecretAudit, base_url: str, *, authorized: bool = True) -> httpx.Client:
    return httpx.Client(
        base_url=base_url,
        headers=INBOUND_AUTH if authorized else None,
        timeout=CLIENT_TIMEOUT,
        transport=AuditedTransport(audit, limits=httpx.Limits(max_connections=10)),
        trust_env=False,
    )


StartApp = Callable[..., ServiceProcess]
