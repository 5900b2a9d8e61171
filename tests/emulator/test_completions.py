from typing import Any

import httpx
import pytest

from src.services.emulator import EmulatorConfig, create_emulator_app
from src.services.emulator.text import answer_tokens

from .helpers import AUTH, CHAT, chat_body

pytestmark = pytest.mark.anyio


async def _complete(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post(CHAT, json=chat_body(**body))
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_plain_completion_has_openrouter_shape(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=chat_body("Describe a quiet harbor", max_tokens=512))

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["id"].startswith("gen-")
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int)
    assert body["model"] == "emulator/small"
    assert body["provider"] == "Alpha"  # a fresh app starts its rotation there
    [choice] = body["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == "".join(
        answer_tokens("emulator/small", "Describe a quiet harbor")
    )
    assert choice["finish_reason"] == "stop"
    assert choice["native_finish_reason"] == "stop"


async def test_usage_counts_are_honest(client: httpx.AsyncClient) -> None:
    body = await _complete(client, prompt="four words in here")

    content = body["choices"][0]["message"]["content"]
    usage = body["usage"]
    assert usage["prompt_tokens"] == 4
    assert usage["completion_tokens"] == len(content.split())
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["cost"] > 0


async def test_free_model_costs_nothing(client: httpx.AsyncClient) -> None:
    body = await _complete(client, model="emulator/tiny:free")

    assert body["usage"]["cost"] == 0


async def test_same_model_and_prompt_give_the_same_answer_across_instances(
    client: httpx.AsyncClient,
) -> None:
    first = await _complete(client, prompt="repeat me")
    second = await _complete(client, prompt="repeat me")
    transport = httpx.ASGITransport(app=create_emulator_app(EmulatorConfig(seed=7)))
    async with httpx.AsyncClient(transport=transport, base_url="http://e", headers=AUTH) as other:
        third = await _complete(other, prompt="repeat me")
    different = await _complete(client, prompt="something else")

    contents = [body["choices"][0]["message"]["content"] for body in (first, second, third)]
    assert contents[0] == contents[1] == contents[2]
    assert different["choices"][0]["message"]["content"] != contents[0]
    assert first["id"] != second["id"]


async def test_max_tokens_cuts_the_answer_with_finish_reason_length(
    client: httpx.AsyncClient,
) -> None:
    full = await _complete(client, prompt="cut me short")
    cut = await _complete(client, prompt="cut me short", max_tokens=5)

    full_content = full["choices"][0]["message"]["content"]
    cut_content = cut["choices"][0]["message"]["content"]
    assert cut["choices"][0]["finish_reason"] == "length"
    assert cut["usage"]["completion_tokens"] == 5
    assert len(cut_content.split()) == 5
    assert full_content.startswith(cut_content)
    assert full["usage"]["completion_tokens"] > 5


async def test_max_tokens_above_the_natural_length_stops_naturally(
    client: httpx.AsyncClient,
) -> None:
    natural = len(answer_tokens("emulator/small", "plenty of room"))

    body = await _complete(client, prompt="plenty of room", max_tokens=natural)

    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == natural


async def test_bare_path_and_content_parts_are_accepted(client: httpx.AsyncClient) -> None:
    parts = {
        "model": "emulator/small",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "parts of a prompt"}]}],
    }

    response = await client.post("/chat/completions", json=parts)
    plain = await _complete(client, prompt="parts of a prompt")

    assert response.status_code == 200
    assert response.json()["choices"][0]["message"] == plain["choices"][0]["message"]


async def test_sampling_parameters_are_accepted(client: httpx.AsyncClient) -> None:
    body = await _complete(client, temperature=0.7, top_p=0.9, max_tokens=3)

    assert body["usage"]["completion_tokens"] == 3
