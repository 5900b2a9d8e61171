"""`make run`: uvicorn with the service's own settings (host, port, workers, shutdown)."""

import math

import uvicorn

from src.config import REPO_ROOT, get_settings


def main() -> None:
    settings = get_settings()
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
        http="httptools",
    )


if __name__ == "__main__":
    main()
