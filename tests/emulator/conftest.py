from collections.abc import AsyncIterator

import httpx
import pytest

from src.services.emulator import EmulatorConfig, create_emulator_app

from .helpers import AUTH


@pytest.fixture
def config() -> EmulatorConfig:
    """No latency and no random faults; parametrize `config` to change it for one test."""
    return EmulatorConfig()


@pytest.fixture
async def client(config: EmulatorConfig) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_emulator_app(config))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://emulator", headers=AUTH
    ) as http:
        yield http
