"""`make run`: uvicorn with the service's own settings (host, port, workers, shutdown, limits)."""

import importlib
import math

import uvicorn
from pydantic import ValidationError

from src.api.gate.descriptors import descriptor_budget, raise_descriptor_limit
from src.config import REPO_ROOT, get_settings
from src.heap import settle_startup_heap


def main() -> None:
    try:
        settings = get_settings()
    except ValidationError as exc:
        raise SystemExit(f"Invalid settings (environment or .env): {exc}") from None
    raise_descriptor_limit(settings)
    budget = descriptor_budget(settings)  # the lifespan logs it when lowered
    # Imported ahead of uvicorn, which finds it loaded, so that it is settled with the rest.
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
        limit_concurrency=budget.connections,
        backlog=budget.backlog,
    )


if __name__ == "__main__":
    main()
