import httpx
import pytest

from .helpers import CHAT, chat_body, parse_sse

pytestmark = pytest.mark.anyio


async def test_max_completion_tokens_cuts_a_plain_answer(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=chat_body(max_completion_tokens=5))

    body = response.json()
    assert body["usage"]["completion_tokens"] == 5
    assert body["choices"][0]["finish_reason"] == "length"


async def test_max_completion_tokens_cuts_a_stream(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=chat_body(max_completion_tokens=3, stream=True))

    stream = parse_sse(response.text)
    assert len(stream.deltas) == 3
    assert stream.chunks[-1]["usage"]["completion_tokens"] == 3


@pytest.mark.parametrize(("max_tokens", "max_completion_tokens"), [(4, 9), (9, 4)])
async def test_the_smaller_of_both_limits_wins(
    client: httpx.AsyncClient, max_tokens: int, max_completion_tokens: int
) -> None:
    response = await client.post(
        CHAT, json=chat_body(max_tokens=max_tokens, max_completion_tokens=max_completion_tokens)
    )

    assert response.json()["usage"]["completion_tokens"] == 4


@pytest.mark.parametrize("value", [0, -1, "5", 2.5, True])
async def test_a_bad_max_completion_tokens_is_a_400(
    client: httpx.AsyncClient, value: object
) -> None:
    response = await client.post(CHAT, json=chat_body(max_completion_tokens=value))

    assert response.status_code == 400
    assert "max_completion_tokens" in response.json()["error"]["message"]
