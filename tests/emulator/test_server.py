import time
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.types import Message

from src.services.emulator import EmulatorConfig, create_emulator_app, serve_embedded_emulator

from .helpers import AUTH, chat_body, parse_sse

pytestmark = pytest.mark.anyio


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    async with serve_embedded_emulator(EmulatorConfig()) as url:
        yield url


async def test_embedded_server_serves_models_over_a_real_socket(base_url: str) -> None:
    assert base_url.startswith("http://127.0.0.1:")
    assert base_url.endswith("/api/v1")

    async with httpx.AsyncClient(base_url=base_url) as client:
        response = await client.get("/models")

    assert response.status_code == 200
    assert "emulator/small" in {model["id"] for model in response.json()["data"]}


async def test_embedded_server_streams_incrementally(base_url: str) -> None:
    # Six tokens at 100/s: the deltas must arrive spread over ~50 ms, not in one burst.
    arrivals: list[float] = []
    raw: list[str] = []
    async with (
        httpx.AsyncClient(base_url=base_url, headers=AUTH) as client,
        client.stream(
            "POST",
            "/chat/completions",
            json=chat_body("incremental", stream=True, max_tokens=6),
            headers={"X-Emulator-Scenario": "tps=100"},
        ) as response,
    ):
        assert response.status_code == 200
        async for text in response.aiter_text():
            raw.append(text)
            if '"content":"' in text and '"finish_reason":null' in text:
                arrivals.append(time.perf_counter())
        plain = await client.post("/chat/completions", json=chat_body("incremental", max_tokens=6))

    stream = parse_sse("".join(raw))
    assert "".join(stream.deltas) == plain.json()["choices"][0]["message"]["content"]
    assert len(arrivals) >= 3, "token chunks reached the client in separate reads"
    assert arrivals[-1] - arrivals[0] >= 0.03


async def test_embedded_server_truncates_for_real(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, headers=AUTH) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post("/chat/completions", json=chat_body("[[emulator:truncated]]"))
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(
                "/chat/completions", json=chat_body("[[emulator:truncated]]", stream=True)
            )
        # The server survives: the next request on a new connection is answered.
        response = await client.get("/models")

    assert response.status_code == 200


async def test_app_completes_the_lifespan_protocol() -> None:
    app = create_emulator_app(EmulatorConfig())
    incoming: list[Message] = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)

    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]


@pytest.mark.parametrize("directive", ["[[emulator:timeout]]", "[[emulator:delay=30]]"])
async def test_a_waiting_answer_ends_when_the_client_gives_up(directive: str) -> None:
    async with serve_embedded_emulator(EmulatorConfig()) as url:
        async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=0.02) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.post("/chat/completions", json=chat_body(directive))
        leaving = time.perf_counter()
    # Had the hour-long wait outlived its client, shutdown would wait out its grace period.
    assert time.perf_counter() - leaving < 1.0
