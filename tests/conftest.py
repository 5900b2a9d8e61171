"""Shared fixtures: the real app with its lifespan, upstream mocked at the transport by respx."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from asgi_lifespan import LifespanManager

from src.config import Settings
from src.main import create_app
from src.services.base import client as base_client

UPSTREAM = "https://upstream.test/api/v1"
API_KEY = "sk-or-v1-test-secret-0123456789abcdef"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "openrouter_api_key": API_KEY,
        "openrouter_base_url": UPSTREAM,
        "log_dir": tmp_path / "logs",
        "benchmarks_dir": tmp_path / "benchmarks",
        "retry_attempts": 3,
        "retry_min_seconds": 0.5,
        "retry_max_seconds": 8.0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def retry_waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Replace the retry wait: nothing sleeps, and every wait is recorded."""
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(base_client, "retry_sleep", record)
    return waits


@pytest.fixture
def upstream() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=UPSTREAM, assert_all_called=False) as router:
        yield router


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan; the default httpx transport, so respx can intercept it."""
    app = create_app(settings, transport=httpx.AsyncHTTPTransport())
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://service.test"
        ) as client,
    ):
        yield client


@pytest.fixture
async def client(
    settings: Settings, upstream: respx.MockRouter, retry_waits: list[float]
) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(settings) as service:
        yield service


def read_log(settings: Settings) -> str:
    """The log file; read it after the app has shut down (the queue is drained by then)."""
    return (settings.log_dir / "server_logs.txt").read_text(encoding="utf-8")


def model_entry(
    model_id: str, prompt: str = "0.000001", completion: str = "0.000002"
) -> dict[str, Any]:
    return {
        "id": model_id,
        "name": model_id.split("/")[-1].title(),
        "created": 1_700_000_000,
        "context_length": 8192,
        "pricing": {"prompt": prompt, "completion": completion, "request": "0", "image": "0"},
        "architecture": {"modality": "text->text"},
    }


MODELS_BODY = {
    "data": [
        model_entry("openai/gpt-4o"),
        model_entry("meta/llama-3:free", "0", "0"),
        model_entry("acme/zero-priced", "0", "0"),
    ]
}


def completion_body(
    text: str = "The sky is blue because of Rayleigh scattering.",
    *,
    model: str = "openai/gpt-4o",
    finish_reason: str = "stop",
    usage: tuple[int, int, int] = (12, 9, 21),
) -> dict[str, Any]:
    return {
        "id": "gen-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": usage[0],
            "completion_tokens": usage[1],
            "total_tokens": usage[2],
        },
    }
