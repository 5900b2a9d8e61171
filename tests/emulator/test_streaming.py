import httpx
import pytest

from .helpers import CHAT, chat_body, parse_sse

pytestmark = pytest.mark.anyio


async def test_stream_is_sse_with_comments_data_lines_usage_and_done(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(CHAT, json=chat_body("stream this", stream=True))

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    stream = parse_sse(response.text)
    assert stream.blocks[0] == ("comment", ": OPENROUTER PROCESSING")
    data_positions = [i for i, (kind, _) in enumerate(stream.blocks) if kind == "data"]
    assert any(
        kind == "comment" and data_positions[0] < i < data_positions[-1]
        for i, (kind, _) in enumerate(stream.blocks)
    ), "a comment amid the data lines too"
    assert stream.events[-1] == "[DONE]"
    chunks = stream.chunks
    assert len(chunks) == len(stream.events) - 1
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert {chunk["model"] for chunk in chunks} == {"emulator/small"}
    finish, final = chunks[-2], chunks[-1]
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert final["choices"] == []
    usage = final["usage"]
    assert usage["completion_tokens"] == len(stream.deltas)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    for chunk in chunks[:-2]:
        assert chunk["choices"][0]["finish_reason"] is None
        assert len(chunk["choices"][0]["delta"]["content"].split()) == 1


async def test_stream_deltas_concatenate_to_the_plain_answer(client: httpx.AsyncClient) -> None:
    # One provider for both: providers differ in price, so in usage cost.
    pinned = {"only": ["Beta"]}
    plain = await client.post(CHAT, json=chat_body("same text both ways", provider=pinned))
    streamed = await client.post(
        CHAT, json=chat_body("same text both ways", stream=True, provider=pinned)
    )

    message = plain.json()["choices"][0]["message"]["content"]
    stream = parse_sse(streamed.text)
    assert "".join(stream.deltas) == message
    assert stream.chunks[-1]["usage"] == plain.json()["usage"]


async def test_stream_honours_max_tokens(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=chat_body("short stream", stream=True, max_tokens=4))

    stream = parse_sse(response.text)
    assert len(stream.deltas) == 4
    assert stream.chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert stream.chunks[-1]["usage"]["completion_tokens"] == 4
