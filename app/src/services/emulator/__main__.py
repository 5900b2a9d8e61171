"""`python -m src.services.emulator`: serve the emulator alone on EMULATOR_HOST:EMULATOR_PORT."""

from __future__ import annotations

import sys

import uvicorn

from src.config import get_settings
from src.heap import settle_startup_heap
from src.services.emulator.app import create_emulator_app
from src.services.emulator.config import EmulatorConfig
from src.services.emulator.server import SERVER_OPTIONS, emulator_url


def main() -> None:
    settings = get_settings()
    host, port = settings.emulator_host, settings.emulator_port
    sys.stdout.write(f"OpenRouter emulator: {emulator_url(host, port)}\n")
    sys.stdout.flush()
    app = create_emulator_app(EmulatorConfig.from_settings(settings))
    settle_startup_heap()
    uvicorn.run(
        app,
        host=host,
        port=port,
        **SERVER_OPTIONS,
    )


if __name__ == "__main__":
    main()
