"""The OpenRouter client on its own, over a mock transport: the request each call sends, how
each answer is read (models, endpoints, generation records, completions, streams, relays), and
what an error in a 200 becomes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
from pydantic import SecretStr

from src.schemas.prompts import GenerationResult, SamplingParams
from src.services.base.client import RetryPolicy
from src.services.base.exceptions import (
    UpstreamInvalidResponseError,
    UpstreamStatusError,
    UpstreamStreamError,
)
from src.services.base.httpx_transport import HttpxOptions, HttpxTransport
from src.services.base.timing import Timing
from src.services.base.transport import WireTransport
from src.services.openrouter.client import (
    OpenRouterClient,
    StreamDelta,
    StreamItem,
    UpstreamTarget,
    connect_openrouter,
    provider_in,
)
from src.services.openrouter.schemas import ChatCall
from tests.helpers.app import make_settings
from tests.helpers.raw_upstream import RawUpstream, raw_upstream

pytestmark = pytest.mark.anyio

MODEL = "openai/gpt-4o-mini"
SAMPLING = SamplingParams(max_tokens=16)
USAGE = {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9, "cost": 0.0002}


class Upstream:
    """Answers every request with the next answer (the last one again once they run out)."""

    def __init__(self, *answers: httpx.Response) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def client(self, line_bytes: int | None = None) -> OpenRouterClient:
        client = OpenRouterClient(
            httpx.MockTransport(self),
            base_url="https://openrouter.test/api/v1",
            api_key="sk-or-v1-test",
            retry_policy=RetryPolicy(attempts=1),
        )
        client.max_stream_line_bytes = line_bytes
        return client

    def sent(self) -> dict[str, object]:
        [request] = self.requests
        body: dict[str, object] = orjson.loads(request.content)
        return body


def json_answer(body: object, status: int = 200) -> httpx.Response:
    return httpx.Response(status, content=orjson.dumps(body))


class Chunks(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            await asyncio.sleep(0)
            yield chunk

    async def aclose(self) -> None:
        self.closed = True


def sse(*events: object, done: bool = True, after: bytes = b"") -> list[bytes]:
    chunks = [
        b"data: " + (event if isinstance(event, bytes) else orjson.dumps(event)) + b"\n\n"
        for event in events
    ]
    if done:
        chunks.append(b"data: [DONE]\n\n")
    if after:
        chunks.append(after)
    return chunks


def chunk(content: str | None = None, finish: str | None = None, **fields: object) -> object:
    delta = {} if content is None else {"content": content}
    return {
        "id": "gen-s1",
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **fields,
    }


def streamed(chunks: list[bytes]) -> tuple[httpx.Response, Chunks]:
    stream = Chunks(chunks)
    return httpx.Response(200, stream=stream), stream


async def collect(items: AsyncIterator[StreamItem]) -> tuple[list[str], GenerationResult]:
    texts: list[str] = []
    result: GenerationResult | None = None
    async for item in items:
        if isinstance(item, StreamDelta):
            texts.append(item.text)
        else:
            result = item
    assert result is not None
    return texts, result


# --- catalog ----------------------------------------------------------------------------------


async def test_models_are_read_from_get_models() -> None:
    upstream = Upstream(json_answer({"data": [{"id": MODEL, "name": "Mini"}]}))

    models = await upstream.client().list_models()

    assert [(model.id, model.name) for model in models] == [(MODEL, "Mini")]
    assert upstream.requests[0].method == "GET"
    assert upstream.requests[0].url.path == "/api/v1/models"


async def test_a_model_list_that_is_not_json_is_the_upstreams_fault() -> None:
    upstream = Upstream(httpx.Response(200, content=b"<html>"))

    with pytest.raises(UpstreamInvalidResponseError, match="^Upstream model list is not valid"):
        await upstream.client().list_models()


async def test_endpoints_are_read_from_the_models_endpoints_path() -> None:
    data = {"id": MODEL, "endpoints": [{"provider_name": "Alpha", "tag": "alpha"}]}
    upstream = Upstream(json_answer({"data": data}))

    endpoints = await upstream.client().list_endpoints(MODEL)

    assert endpoints.id == MODEL
    assert [endpoint.provider_name for endpoint in endpoints.endpoints] == ["Alpha"]
    assert upstream.requests[0].method == "GET"
    assert upstream.requests[0].url.path == f"/api/v1/models/{MODEL}/endpoints"


async def test_an_endpoint_list_that_is_not_json_is_the_upstreams_fault() -> None:
    upstream = Upstream(httpx.Response(200, content=b"{"))

    with pytest.raises(UpstreamInvalidResponseError, match="^Upstream endpoint list is not valid"):
        await upstream.client().list_endpoints(MODEL)


# --- generation records ------------------------------------------------------------------------


async def test_a_generation_record_is_asked_for_by_its_quoted_id() -> None:
    upstream = Upstream(json_answer({"data": {"provider_name": "Alpha"}}))

    record = await upstream.client().generation("gen-1/2 &x")

    assert record is not None and record.provider_name == "Alpha"
    assert upstream.requests[0].method == "GET"
    assert upstream.requests[0].url.path == "/api/v1/generation"
    assert upstream.requests[0].url.params["id"] == "gen-1/2 &x"
    assert b"id=gen-1/2%20%26x" in upstream.requests[0].url.raw_path


async def test_a_generation_not_recorded_yet_is_none() -> None:
    upstream = Upstream(json_answer({"error": {"message": "not found"}}, status=404))

    assert await upstream.client().generation("gen-1") is None


async def test_another_failure_to_read_a_generation_is_raised() -> None:
    upstream = Upstream(json_answer({"error": {"message": "no key"}}, status=401))

    with pytest.raises(UpstreamStatusError) as caught:
        await upstream.client().generation("gen-1")

    assert caught.value.status_code == 401


async def test_a_generation_record_that_is_not_json_is_the_upstreams_fault() -> None:
    upstream = Upstream(httpx.Response(200, content=b"nope"))

    with pytest.raises(UpstreamInvalidResponseError, match="^Upstream generation is not JSON$"):
        await upstream.client().generation("gen-1")


# --- completions ------------------------------------------------------------------------------


async def test_a_completion_posts_the_chat_body_and_reads_every_field() -> None:
    upstream = Upstream(
        json_answer(
            {
                "id": "gen-1",
                "model": "openai/gpt-4o-mini-2024",
                "provider": "Alpha",
                "choices": [
                    {"message": {"role": "assistant", "content": "Blue."}, "finish_reason": "stop"}
                ],
                "usage": USAGE,
            }
        )
    )
    timing = Timing()

    result = await upstream.client().complete(
        ChatCall(MODEL, "Why?", SAMPLING, {"only": ["a"]}), timing
    )

    request = upstream.requests[0]
    assert request.method == "POST" and request.url.path == "/api/v1/chat/completions"
    assert upstream.sent() == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Why?"}],
        "max_tokens": 16,
        "provider": {"only": ["a"]},
    }
    assert result.text == "Blue."
    assert result.model == "openai/gpt-4o-mini-2024"
    assert result.provider == "Alpha"
    assert result.generation_id == "gen-1"
    assert result.finish_reason == "stop"
    assert (result.prompt_tokens, result.completion_tokens, result.tokens_used) == (5, 4, 9)
    assert result.cost == 0.0002
    assert result.usage_problem is None
    assert result.attempts == 1 == timing.attempts
    assert result.latency_seconds == timing.latency
    assert result.total_seconds == timing.total
    assert result.ttft_seconds is None


async def test_a_completion_without_model_id_usage_or_content_keeps_the_asked_model() -> None:
    upstream = Upstream(json_answer({"choices": [{"message": {"role": "assistant"}}]}))

    result = await upstream.client().complete(ChatCall(MODEL, "Why?", SAMPLING), Timing())

    assert result.text == ""
    assert result.model == MODEL
    assert result.generation_id is None
    assert result.provider is None
    assert result.finish_reason is None
    assert (result.prompt_tokens, result.completion_tokens, result.tokens_used) == (0, 0, 0)
    assert result.cost is None
    assert result.usage_problem == "the upstream reported no usage"


async def test_a_completion_with_implausible_usage_names_the_problem() -> None:
    usage = {"prompt_tokens": -1, "completion_tokens": 4, "total_tokens": "x"}
    upstream = Upstream(json_answer({"choices": [{"message": {"content": "Hi"}}], "usage": usage}))

    result = await upstream.client().complete(ChatCall(MODEL, "Why?", SAMPLING), Timing())

    assert result.usage_problem == (
        "usage.prompt_tokens -1 is not a token count; usage.total_tokens 'x' is not a token count"
    )
    assert (result.prompt_tokens, result.completion_tokens, result.tokens_used) == (0, 4, 0)


async def test_a_completion_without_choices_is_the_upstreams_fault() -> None:
    upstream = Upstream(json_answer({"id": "gen-1", "choices": []}))

    with pytest.raises(UpstreamInvalidResponseError, match="^Upstream completion has no choices$"):
        await upstream.client().complete(ChatCall(MODEL, "Why?", SAMPLING), Timing())


async def test_a_completion_that_is_not_json_is_the_upstreams_fault() -> None:
    upstream = Upstream(httpx.Response(200, content=b"oops"))

    with pytest.raises(
        UpstreamInvalidResponseError, match="^Upstream completion is not valid JSON$"
    ):
        await upstream.client().complete(ChatCall(MODEL, "Why?", SAMPLING), Timing())


async def test_an_error_object_in_a_200_completion_is_raised_with_its_code() -> None:
    upstream = Upstream(json_answer({"error": {"code": 502, "message": "provider down"}}))

    with pytest.raises(UpstreamStreamError) as caught:
        await upstream.client().complete(ChatCall(MODEL, "Why?", SAMPLING), Timing())

    assert caught.value.message == "provider down"
    assert caught.value.code == 502


# --- streams ----------------------------------------------------------------------------------


async def test_a_stream_posts_a_streamed_body_and_yields_deltas_then_the_result() -> None:
    answer, body = streamed(
        sse(
            chunk("Blue", provider="Alpha"),
            chunk(" light"),
            chunk(None, "stop"),
            {"id": "gen-s1", "model": "openai/gpt-4o-mini-2024", "choices": [], "usage": USAGE},
        )
    )
    upstream = Upstream(answer)
    timing = Timing(content_arrivals=[])

    texts, result = await collect(
        upstream.client().stream(ChatCall(MODEL, "Why?", SAMPLING, {"sort": "latency"}), timing)
    )

    assert upstream.sent() == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Why?"}],
        "max_tokens": 16,
        "stream": True,
        "stream_options": {"include_usage": True},
        "provider": {"sort": "latency"},
    }
    assert texts == ["Blue", " light"]
    assert result.text == ""
    assert result.model == "openai/gpt-4o-mini-2024"
    assert result.provider == "Alpha"
    assert result.generation_id == "gen-s1"
    assert result.finish_reason == "stop"
    assert (result.prompt_tokens, result.completion_tokens, result.tokens_used) == (5, 4, 9)
    assert result.cost == 0.0002
    assert result.ttft_seconds is not None and result.ttft_seconds == timing.ttft
    assert timing.content_arrivals is not None and len(timing.content_arrivals) == 2
    assert timing.first_content == timing.content_arrivals[0] < timing.content_arrivals[1]
    assert timing.ended >= timing.content_arrivals[1]
    assert body.closed


async def test_a_stream_keeps_the_first_provider_and_id_when_later_chunks_leave_them_out() -> None:
    later = {"choices": [{"index": 0, "delta": {"content": "!"}, "finish_reason": "length"}]}
    answer, _ = streamed(sse(chunk("Hi", provider="Beta"), later))
    upstream = Upstream(answer)

    texts, result = await collect(
        upstream.client().stream(ChatCall(MODEL, "Hi", SAMPLING), Timing())
    )

    assert texts == ["Hi", "!"]
    assert (result.provider, result.generation_id, result.model) == ("Beta", "gen-s1", MODEL)
    assert result.finish_reason == "length"
    assert result.usage_problem == "the upstream reported no usage"


async def test_a_stream_without_content_arrivals_records_only_the_first() -> None:
    answer, _ = streamed(sse(chunk(""), chunk("a"), chunk("b")))
    timing = Timing()

    texts, _ = await collect(
        Upstream(answer).client().stream(ChatCall(MODEL, "Hi", SAMPLING), timing)
    )

    assert texts == ["a", "b"]  # an empty delta is no content
    assert timing.content_arrivals is None
    assert timing.first_content is not None


async def test_several_choices_in_a_chunk_make_one_delta() -> None:
    two = {
        "choices": [
            {"index": 0, "delta": {"content": "a"}},
            {"index": 1, "delta": {"content": "b"}, "finish_reason": "stop"},
        ]
    }
    answer, _ = streamed(sse(two))

    texts, result = await collect(
        Upstream(answer).client().stream(ChatCall(MODEL, "Hi", SAMPLING), Timing())
    )

    assert texts == ["ab"]
    assert result.finish_reason == "stop"


async def test_what_follows_done_is_read_but_ignored() -> None:
    answer, body = streamed(
        sse(chunk("a"), after=b"data: " + orjson.dumps(chunk("late")) + b"\n\n")
    )

    texts, _ = await collect(
        Upstream(answer).client().stream(ChatCall(MODEL, "Hi", SAMPLING), Timing())
    )

    assert texts == ["a"]
    assert body.closed


async def test_done_in_the_middle_of_a_chunk_ends_the_events() -> None:
    both = b"data: " + orjson.dumps(chunk("a")) + b"\n\ndata: [DONE]\n\ndata: "
    answer, _ = streamed([both + orjson.dumps(chunk("late")) + b"\n\n"])

    texts, _ = await collect(
        Upstream(answer).client().stream(ChatCall(MODEL, "Hi", SAMPLING), Timing())
    )

    assert texts == ["a"]


async def test_a_stream_of_usage_only_has_no_choice() -> None:
    answer, _ = streamed(sse({"choices": [], "usage": USAGE}))

    with pytest.raises(UpstreamInvalidResponseError, match="^Upstream stream ended without any"):
        await collect(Upstream(answer).client().stream(ChatCall(MODEL, "Hi", SAMPLING), Timing()))


async def test_a_stream_without_data_is_the_upstreams_fault() -> None:
    answer, body = streamed([b": keep-alive\n\n"])

    with pytest.raises(
        UpstreamInvalidResponseError, match="^Upstream stream ended without any data"
    ):
        await collect(Upstream(answer).client().stream(ChatCall(MODEL, "Hi", SAMPLING), Timing()))
    assert body.closed


async def test_a_stream_of_only_done_is_data_but_no_choice() -> None:
    answer, _ = streamed(sse())

    with pytest.raises(
        UpstreamInvalidResponseError, match="^Upstream stream ended without any choice"
    ):
        await collect(Upstream(answer).client().stream(ChatCall(MODEL, "Hi", SAMPLING), Timing()))


async def test_an_error_chunk_in_a_stream_is_raised_after_the_deltas_before_it() -> None:
    answer, body = streamed(sse(chunk("a"), {"error": {"code": "overloaded", "message": "busy"}}))
    texts: list[str] = []

    with pytest.raises(UpstreamStreamError) as caught:
        async for item in (
            Upstream(answer).client().stream(ChatCall(MODEL, "Hi", SAMPLING), Timing())
        ):
            assert isinstance(item, StreamDelta)
            texts.append(item.text)

    assert texts == ["a"]
    assert (caught.value.message, caught.value.code) == ("busy", "overloaded")
    assert body.closed


async def test_a_stream_chunk_that_is_not_json_is_the_upstreams_fault() -> None:
    answer, _ = streamed(sse(b"{not json"))

    with pytest.raises(UpstreamInvalidResponseError, match="^Upstream stream chunk is not JSON$"):
        await collect(Upstream(answer).client().stream(ChatCall(MODEL, "Hi", SAMPLING), Timing()))


async def test_a_line_longer_than_the_cap_is_refused() -> None:
    answer, _ = streamed(sse(chunk("x" * 500)))

    with pytest.raises(UpstreamInvalidResponseError):
        await collect(
            Upstream(answer)
            .client(line_bytes=100)
            .stream(ChatCall(MODEL, "Hi", SAMPLING), Timing())
        )


# --- relays -----------------------------------------------------------------------------------


async def test_a_relayed_completion_is_posted_and_returned_byte_for_byte() -> None:
    answer = b'{"id": "gen-1", "choices": [], "extra": {"kept": true}}'
    upstream = Upstream(httpx.Response(200, content=answer))
    content = b'{"model": "m", "messages": [], "logprobs": true}'

    relayed = await upstream.client().relay(content, Timing())

    assert relayed == answer
    assert upstream.requests[0].method == "POST"
    assert upstream.requests[0].url.path == "/api/v1/chat/completions"
    assert upstream.requests[0].content == content


async def test_a_relayed_error_in_a_200_is_raised() -> None:
    upstream = Upstream(json_answer({"error": {"code": 429, "message": "later"}}))

    with pytest.raises(UpstreamStreamError, match="later"):
        await upstream.client().relay(b"{}", Timing())


async def test_a_relayed_answer_that_is_not_json_is_the_upstreams_fault() -> None:
    upstream = Upstream(httpx.Response(200, content=b"<html>"))

    with pytest.raises(UpstreamInvalidResponseError, match="^Upstream completion is not valid"):
        await upstream.client().relay(b"{}", Timing())


async def test_a_relayed_stream_frames_each_data_event_again_without_done() -> None:
    first = orjson.dumps(chunk("a"))
    chunks = [
        b": comment\nevent: message\nid: 7\ndata: " + first + b"\n\n",
        b'data: not json but relayed\n\ndata: {"note": "an \\"error\\" word"}\n\n',
        b"data: [DONE]\n\n",
    ]
    answer, body = streamed(chunks)
    upstream = Upstream(answer)
    content = b'{"model": "m", "stream": true}'
    timing = Timing()

    relayed = [piece async for piece in upstream.client().relay_stream(content, timing)]

    assert relayed == [
        b"data: " + first + b"\n\n",
        b'data: not json but relayed\n\ndata: {"note": "an \\"error\\" word"}\n\n',
    ]
    assert upstream.requests[0].content == content
    assert upstream.requests[0].url.path == "/api/v1/chat/completions"
    assert timing.first_content is not None and timing.first_content <= timing.ended
    assert body.closed


async def test_a_relayed_stream_sends_what_preceded_an_error_then_raises_it() -> None:
    error = orjson.dumps({"error": {"code": 502, "message": "provider died"}})
    first = orjson.dumps(chunk("a"))
    answer, _ = streamed([b"data: " + first + b"\n\ndata: " + error + b"\n\n"])
    relayed: list[bytes] = []

    with pytest.raises(UpstreamStreamError) as caught:
        async for piece in Upstream(answer).client().relay_stream(b"{}", Timing()):
            relayed.append(piece)

    assert relayed == [b"data: " + first + b"\n\n"]
    assert (caught.value.message, caught.value.code) == ("provider died", 502)


async def test_a_relayed_error_alone_in_its_chunk_sends_nothing_before_it() -> None:
    error = orjson.dumps({"error": {"message": "gone"}})
    answer, _ = streamed([b"data: " + error + b"\n\n"])
    relayed: list[bytes] = []

    with pytest.raises(UpstreamStreamError, match="gone"):
        async for piece in Upstream(answer).client().relay_stream(b"{}", Timing()):
            relayed.append(piece)

    assert relayed == []


async def test_a_relayed_chunk_with_a_null_error_is_relayed() -> None:
    data = b'{"error": null, "choices": []}'
    answer, _ = streamed(sse(data))

    relayed = [piece async for piece in Upstream(answer).client().relay_stream(b"{}", Timing())]

    assert relayed == [b"data: " + data + b"\n\n"]


async def test_the_first_relayed_chunk_sets_the_time_to_first_byte_once() -> None:
    answer, _ = streamed(sse(chunk("a"), chunk("b")))
    timing = Timing()
    pieces = Upstream(answer).client().relay_stream(b"{}", timing)

    await anext(pieces)
    first = timing.first_content
    await anext(pieces)

    assert first is not None and timing.first_content == first
    await pieces.aclose()


async def test_a_relayed_stream_without_data_is_the_upstreams_fault() -> None:
    answer, _ = streamed([b"\n\n"])

    with pytest.raises(UpstreamInvalidResponseError, match="without any data"):
        async for _ in Upstream(answer).client().relay_stream(b"{}", Timing()):
            pass


# --- the process's client ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["wire", "httpx"])
async def test_the_process_client_is_built_from_the_settings(tmp_path: Path, kind: str) -> None:
    settings = make_settings(
        tmp_path,
        upstream_transport=kind,
        upstream_max_connections=9,
        upstream_timeout_seconds=11.0,
        upstream_connect_timeout_seconds=3.0,
        retry_attempts=4,
        max_upstream_response_bytes=4096,
        max_upstream_line_bytes=2048,
        upstream_deadline_seconds=40.0,
    )
    target = UpstreamTarget("https://openrouter.test/api/v1/", SecretStr("sk-or-v1-abc"))

    client = connect_openrouter(settings, target)
    try:
        transport = client.transport
        assert isinstance(transport, WireTransport if kind == "wire" else HttpxTransport)
        assert transport._max_connections == 9
        assert client.retry_policy.attempts == 4
        assert client.max_stream_line_bytes == 2048
        assert client._base_url == httpx.URL("https://openrouter.test/api/v1/")
        assert (b"authorization", b"Bearer sk-or-v1-abc") in client._headers
        assert client._whole_extensions["max_body_bytes"] == 4096
        assert client._extensions["timeout"] == {
            "connect": 3.0,
            "read": 11.0,
            "write": 11.0,
            "pool": 11.0,
        }
        assert client._extensions["deadline"] == 40.0
    finally:
        await client.aclose()


async def test_the_process_client_uses_a_given_transport(tmp_path: Path) -> None:
    upstream = Upstream(json_answer({"data": []}))
    target = UpstreamTarget("https://openrouter.test/api/v1", SecretStr("sk-or-v1-abc"))

    client = connect_openrouter(make_settings(tmp_path), target, httpx.MockTransport(upstream))

    assert await client.list_models() == []
    assert upstream.requests[0].headers["authorization"] == "Bearer sk-or-v1-abc"


@pytest.mark.parametrize(("emulator", "proxied"), [(True, False), (False, True)])
async def test_only_the_real_upstream_goes_through_the_proxy_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emulator: bool, proxied: bool
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    settings = make_settings(tmp_path)
    if emulator:
        settings = settings.model_copy(update={"openrouter_api_key": SecretStr("")})
    assert settings.uses_emulator is emulator
    target = UpstreamTarget("https://openrouter.test/api/v1", SecretStr("k"))

    client = connect_openrouter(settings, target)
    try:
        assert isinstance(client.transport, WireTransport)
        proxy = client.transport._proxies.proxy_for_url(httpx.URL("https://openrouter.test/"))
        assert (proxy is not None) is proxied
    finally:
        await client.aclose()


# --- what the first review of the survivors asked for -----------------------------------------


async def test_a_stream_whose_chunks_name_nothing_keeps_the_asked_model_and_no_more() -> None:
    bare = {"choices": [{"index": 0, "delta": {"content": "hi"}}]}
    answer, _ = streamed(sse(bare))

    texts, result = await collect(
        Upstream(answer).client().stream(ChatCall(MODEL, "Hi", SAMPLING), Timing())
    )

    assert texts == ["hi"]
    assert result.model == MODEL
    assert (result.provider, result.generation_id, result.finish_reason) == (None, None, None)


async def test_a_completion_retried_reports_every_attempt() -> None:
    async def no_wait(_: float) -> None:
        return None

    upstream = Upstream(
        json_answer({"error": {"message": "busy"}}, status=503),
        json_answer({"choices": [{"message": {"content": "ok"}}]}),
    )
    client = OpenRouterClient(
        httpx.MockTransport(upstream),
        base_url="https://openrouter.test/api/v1",
        retry_policy=RetryPolicy(attempts=3),
        sleep=no_wait,
    )

    result = await client.complete(ChatCall(MODEL, "Why?", SAMPLING), Timing())

    assert result.text == "ok"
    assert result.attempts == 2
    assert len(upstream.requests) == 2


async def test_a_relayed_stream_sends_every_event_before_an_error_in_one_piece() -> None:
    first, second = orjson.dumps(chunk("a")), orjson.dumps(chunk("b"))
    error = orjson.dumps({"error": {"message": "gone"}})
    answer, _ = streamed(
        [b"data: " + first + b"\n\ndata: " + second + b"\n\ndata: " + error + b"\n\n"]
    )
    relayed: list[bytes] = []

    with pytest.raises(UpstreamStreamError, match="gone"):
        async for piece in Upstream(answer).client().relay_stream(b"{}", Timing()):
            relayed.append(piece)

    assert relayed == [b"data: " + first + b"\n\ndata: " + second + b"\n\n"]


async def test_a_streams_end_is_the_arrival_of_its_last_byte_not_its_closing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from src.services.openrouter import client as openrouter_client

    closing_time = 10.0**9
    monkeypatch.setattr(openrouter_client, "now", lambda: closing_time)
    answer, _ = streamed(sse(chunk("a")))
    timing = Timing()

    await collect(Upstream(answer).client().stream(ChatCall(MODEL, "Hi", SAMPLING), timing))

    assert 0 < timing.ended < closing_time
    assert timing.first_content is not None and timing.ended >= timing.first_content


async def test_what_follows_done_is_read_so_the_connection_is_used_again() -> None:
    done = b"data: " + orjson.dumps(chunk("a")) + b"\n\ndata: [DONE]\n\n"

    async def answer(
        up: RawUpstream, _: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            try:
                await up.read_request(reader)
            except asyncio.IncompleteReadError:
                return
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n" % (len(done), done)
            )
            await writer.drain()
            await asyncio.sleep(0.05)  # what follows [DONE] comes in a later read
            trailing = b": the end\n\n"
            writer.write(b"%x\r\n%s\r\n" % (len(trailing), trailing))
            await writer.drain()
            await asyncio.sleep(0.05)  # and the body's end in a later one still
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    async with raw_upstream(answer) as up:
        client = OpenRouterClient(
            WireTransport(trust_env=False), base_url=up.url, retry_policy=RetryPolicy(attempts=1)
        )
        try:
            for _ in range(2):
                texts, _result = await asyncio.wait_for(
                    collect(client.stream(ChatCall(MODEL, "Hi", SAMPLING), Timing())), 15
                )
                assert texts == ["a"]
        finally:
            await client.aclose()

    assert len(up.requests) == 2
    assert up.connections == 1


async def test_the_transport_settings_reach_the_process_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from src.services.openrouter import client as openrouter_client

    built: list[dict[str, object]] = []

    def build(kind: str, **options: object) -> httpx.AsyncBaseTransport:
        built.append({"kind": kind, **options})
        return httpx.MockTransport(Upstream(httpx.Response(200)))

    monkeypatch.setattr(openrouter_client, "build_transport", build)
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_text("cert")
    key.write_text("key")
    settings = make_settings(
        tmp_path,
        upstream_transport="httpx",
        upstream_http2=True,
        upstream_client_cert=cert,
        upstream_client_key=key,
        upstream_max_connections=3,
    )

    connect_openrouter(settings, UpstreamTarget("https://openrouter.test/", SecretStr("k")))

    assert built == [
        {
            "kind": "httpx",
            "max_connections": 3,
            "httpx_options": HttpxOptions(http2=True, client_cert=cert, client_key=key),
            "trust_env": True,
        }
    ]


def test_the_provider_named_in_a_relayed_answer_is_read_from_its_bytes() -> None:
    assert provider_in(b'{"id":"gen-1","provider": "Alpha","choices":[]}') == "Alpha"
    assert provider_in(b'{"provider":"Caf\xe9"}') == "Caf\ufffd"  # not UTF-8: replaced, not fatal
    assert provider_in(b'{"id":"gen-1","choices":[]}') is None
