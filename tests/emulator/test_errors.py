import httpx
import pytest

from .helpers import CHAT, chat_body

pytestmark = pytest.mark.anyio


def _error(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error: dict[str, object] = response.json()["error"]
    assert error["code"] == status
    assert isinstance(error["message"], str) and error["message"]
    return error


@pytest.mark.parametrize(
    "authorization", [None, "", "Bearer", "Bearer ", "Bearer    ", "Basic dXNlcjpwYXNz"]
)
async def test_chat_without_a_bearer_token_is_401(
    client: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    client.headers.pop("Authorization")

    response = await client.post(CHAT, json=chat_body(), headers=headers)

    _error(response, 401)


async def test_any_non_empty_bearer_token_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=chat_body(), headers={"Authorization": "bearer x"})

    assert response.status_code == 200


async def test_unknown_model_is_400_naming_it(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=chat_body(model="emulator/xyz"))

    error = _error(response, 400)
    assert error["message"] == "emulator/xyz is not a valid model ID"


async def test_real_model_id_is_unknown_to_the_emulator(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=chat_body(model="openai/gpt-4o"))

    assert "openai/gpt-4o" in str(_error(response, 400)["message"])


@pytest.mark.parametrize(
    ("content", "mentions"),
    [
        (b"{not json", "JSON"),
        (b"[1, 2]", "object"),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "model"),
        (b'{"model": "emulator/small"}', "messages"),
        (b'{"model": "emulator/small", "messages": []}', "messages"),
        (b'{"model": "emulator/small", "messages": ["hi"]}', "role"),
        (b'{"model": "emulator/small", "messages": [{"role": "user", "content": 5}]}', "content"),
        (
            b'{"model": "emulator/small", "messages": [{"role": "user", "content": "hi"}],'
            b' "max_tokens": 0}',
            "max_tokens",
        ),
        (
            b'{"model": "emulator/small", "messages": [{"role": "user", "content": "hi"}],'
            b' "stream": "yes"}',
            "stream",
        ),
        (
            b'{"model": "emulator/small", "messages": [{"role": "user", "content": "hi"}],'
            b' "temperature": "hot"}',
            "temperature",
        ),
    ],
)
async def test_malformed_body_is_400(
    client: httpx.AsyncClient, content: bytes, mentions: str
) -> None:
    response = await client.post(CHAT, content=content)

    assert mentions in str(_error(response, 400)["message"])


async def test_unknown_path_is_404_in_openrouter_shape(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/completions")

    assert "/api/v1/completions" in str(_error(response, 404)["message"])


async def test_wrong_method_is_405_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.get(CHAT)

    _error(response, 405)
    assert response.headers["allow"] == "POST"
