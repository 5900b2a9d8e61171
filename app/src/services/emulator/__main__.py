"""`python -m src.services.emulator`: serve the emulator alone on EMULATOR_HOST:EMULATOR_PORT."""

from __future__ import annotations

import sys

import uvicorn

from src.config import get_settings
from src.heap import settle_startup_heap
from src.services.emulator.app import API_PREFIX, create_emulator_app
from src.services.emulator.config import KEEP_ALIVE_SECONDS, EmulatorConfig


def main() -> None:
    settings = get_settings()
    host, port = settings.emulator_host, settings.emulator_port
    url_host = f"[{host}]" if ":" in host else host
    sys.stdout.write(f"OpenRouter emulator: http://{url_host}:{port}{API_PREFIX}\n")
    sys.stdout.flush()
    app = create_emulator_app(EmulatorConfig.from_settings(settings))
    settle_startup_heap()
    uvicorn.run(
        app,
        host=host,
        port=port,
        ws="none",
        lifespan="on",
        interface="asgi3",
        access_log=False,
        proxy_headers=False,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )


if __name__ == "__main__":
    main()
