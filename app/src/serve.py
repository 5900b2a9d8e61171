"""`make run`: uvicorn with the service's own settings (host, port, workers, shutdown, limits)."""

import importlib
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from src.api.gate.descriptors import descriptor_budget, raise_descriptor_limit
from src.config import MULTIPROC_ENV, REPO_ROOT, Settings, settings_or_exit
from src.heap import settle_startup_heap


def main() -> None:
    settings = settings_or_exit()
    raise_descriptor_limit(settings)
    budget = descriptor_budget(settings)  # the lifespan logs it when lowered
    with metrics_files(settings):
        serve(settings, budget.connections, budget.backlog)


@contextmanager
def metrics_files(settings: Settings) -> Iterator[Path | None]:
    """Where every worker writes its metrics, so that /metrics adds them
    up: PROMETHEUS_MULTIPROC_DIR when set, emptied first (values of an earlier start would be
    counted again), else a new directory removed at exit."""
    if not settings.metrics_enabled:
        yield None
        return
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
        yield directory
        return
    directory = Path(tempfile.mkdtemp(prefix="llm-gateway-metrics-"))
    os.environ[MULTIPROC_ENV] = str(directory)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def serve(settings: Settings, connections: int, backlog: int) -> None:
    # Imported ahead of uvicorn, which finds it loaded, so that it is settled with the rest;
    # after metrics_files, which prometheus-client reads when the app imports it.
    importlib.import_module("src.main")
    settle_startup_heap()
    uvicorn.run(
        "src.main:app",
        app_dir=str(REPO_ROOT / "app"),
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout_seconds),
        loop="uvloop",
        # An import path, so that worker processes load it too.
        http="src.api.gate.http_limits:LimitedHttpToolsProtocol",
        limit_concurrency=connections,
        backlog=backlog,
    )


if __name__ == "__main__":
    main()
