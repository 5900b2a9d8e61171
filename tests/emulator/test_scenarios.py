import anyio
import httpx
import orjson
import pytest
from starlette.types import Message

from src.services.emulator import EmulatorConfig, create_emulator_app
from src.services.emulator.scenarios import (
    NO_SCENARIO,
    Scenario,
    ScenarioError,
    directives,
    parse_scenario,
    scenario_for,
)
from tests.helpers.asgi import Recorder, http_scope

from .helpers import AUTH, CHAT, chat_body, parse_sse

pytestmark = pytest.mark.anyio

SCENARIO = "X-Emulator-Scenario"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", NO_SCENARIO),
        ("rate_limit", Scenario(status=429)),
        ("rate_limit_once", Scenario(rate_limit_times=1)),
        (
            "rate_limit_times=3, retry_after=0.5",
            Scenario(rate_limit_times=3, retry_after_seconds=0.5),
        ),
        ("BAD_GATEWAY", Scenario(status=502)),
        ("status=418", Scenario(status=418)),
        ("ttft=0.2,tps=50", Scenario(ttft_seconds=0.2, tokens_per_second=50.0)),
        ("delay=1.5", Scenario(ttft_seconds=1.5)),
        ("timeout", Scenario(timeout=True)),
        (
            "invalid_json,truncated,mid_stream_error",
            Scenario(invalid_json=True, truncated=True, mid_stream_error=True),
        ),
    ],
)
def test_parse_scenario(spec: str, expected: Scenario) -> None:
    assert parse_scenario(spec) == expected


@pytest.mark.parametrize(
    "spec", ["nope", "ttft", "ttft=-1", "ttft=abc", "tps=inf", "status=200", "rate_limit=2"]
)
def test_parse_scenario_refuses_unknown_names_and_bad_values(spec: str) -> None:
    with pytest.raises(ScenarioError):
        parse_scenario(spec)


def test_directives_are_found_anywhere_and_add_up_with_the_header() -> None:
    text = "before [[emulator:rate_limit_once]] middle [[emulator:ttft=0.1]] after"

    assert directives(text) == "rate_limit_once,ttft=0.1"
    assert directives("no directive [[emulator") == ""
    assert scenario_for("tps=9", text) == Scenario(
        rate_limit_times=1, ttft_seconds=0.1, tokens_per_second=9.0
    )
    assert scenario_for(None, "plain prompt") is NO_SCENARIO


async def test_rate_limit_is_429_with_retry_after(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=chat_body(), headers={SCENARIO: "rate_limit"})

    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    error = response.json()["error"]
    assert error["code"] == 429
    assert error["metadata"] == {"provider_name": "Alpha"}


@pytest.mark.parametrize("config", [EmulatorConfig(retry_after_seconds=3.0)])
async def test_retry_after_comes_from_config_or_scenario(client: httpx.AsyncClient) -> None:
    from_config = await client.post(CHAT, json=chat_body(), headers={SCENARIO: "rate_limit"})
    from_scenario = await client.post(
        CHAT, json=chat_body(), headers={SCENARIO: "rate_limit,retry_after=0.25"}
    )
    unavailable = await client.post(
        CHAT, json=chat_body(), headers={SCENARIO: "unavailable,retry_after=2"}
    )

    assert from_config.headers["retry-after"] == "3"
    assert from_scenario.headers["retry-after"] == "0.25"
    assert unavailable.status_code == 503
    assert unavailable.headers["retry-after"] == "2"


async def test_rate_limit_times_counts_per_prompt_then_succeeds(
    client: httpx.AsyncClient,
) -> None:
    prompt = "count me [[emulator:rate_limit_times=2]]"
    statuses = [(await client.post(CHAT, json=chat_body(prompt))).status_code for _ in range(4)]
    other = await client.post(CHAT, json=chat_body("another [[emulator:rate_limit_times=2]]"))

    assert statuses == [429, 429, 200, 200]
    assert other.status_code == 429


async def test_rate_limit_once_via_directive(client: httpx.AsyncClient) -> None:
    body = chat_body("retry me once [[emulator:rate_limit_once]]")

    first = await client.post(CHAT, json=body)
    second = await client.post(CHAT, json=body)

    assert first.status_code == 429
    assert "retry-after" in first.headers
    assert second.status_code == 200
    assert second.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize(
    ("scenario", "status"),
    [
        ("server_error", 500),
        ("bad_gateway", 502),
        ("unavailable", 503),
        ("gateway_timeout", 504),
        ("unauthorized", 401),
        ("payment_required", 402),
        ("forbidden", 403),
        ("request_timeout", 408),
        ("status=418", 418),
    ],
)
async def test_status_scenarios_by_header_and_by_directive(
    client: httpx.AsyncClient, scenario: str, status: int
) -> None:
    by_header = await client.post(CHAT, json=chat_body(), headers={SCENARIO: scenario})
    by_directive = await client.post(
        CHAT, json=chat_body(f"please fail [[emulator:{scenario}]] now", stream=True)
    )

    for response in (by_header, by_directive):
        assert response.status_code == status
        assert response.json()["error"]["code"] == status
    assert "retry-after" not in by_header.headers


async def test_directive_only_counts_in_the_last_user_message(client: httpx.AsyncClient) -> None:
    body = {
        "model": "emulator/small",
        "messages": [
            {"role": "user", "content": "old turn [[emulator:bad_gateway]]"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "new turn"},
        ],
    }

    response = await client.post(CHAT, json=body)

    assert response.status_code == 200


async def test_unknown_scenario_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=chat_body("[[emulator:explode]]"))

    assert response.status_code == 400
    assert "explode" in response.json()["error"]["message"]


async def test_mid_stream_error_sends_tokens_then_an_error_chunk(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        CHAT, json=chat_body("break midway", stream=True), headers={SCENARIO: "mid_stream_error"}
    )

    assert response.status_code == 200
    stream = parse_sse(response.text)
    assert stream.events[-1] == "[DONE]"
    error_chunk = stream.chunks[-1]
    assert error_chunk["object"] == "chat.completion.chunk"
    assert error_chunk["id"] == stream.chunks[0]["id"]
    assert error_chunk["error"]["code"] == 502
    assert error_chunk["error"]["message"]
    assert error_chunk["choices"] == [
        {
            "index": 0,
            "delta": {"content": ""},
            "finish_reason": "error",
            "native_finish_reason": "error",
        }
    ]
    assert 1 <= len(stream.deltas) <= 3
    assert not any("usage" in chunk for chunk in stream.chunks)


async def test_mid_stream_error_on_a_plain_request_is_a_200_with_an_error_body(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(CHAT, json=chat_body("[[emulator:mid_stream_error]]"))

    assert response.status_code == 200
    body = response.json()
    assert body["error"]["code"] == 502
    assert body["choices"] == []


async def test_invalid_json_breaks_the_body(client: httpx.AsyncClient) -> None:
    plain = await client.post(CHAT, json=chat_body("[[emulator:invalid_json]]"))
    streamed = await client.post(CHAT, json=chat_body("[[emulator:invalid_json]]", stream=True))

    assert plain.status_code == 200
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(plain.content)
    assert streamed.status_code == 200
    with pytest.raises(orjson.JSONDecodeError):
        parse_sse(streamed.text)
    assert streamed.text.endswith("data: [DONE]\n\n")


async def test_truncated_promises_more_body_than_it_sends() -> None:
    app = create_emulator_app(EmulatorConfig())
    body = orjson.dumps(chat_body("[[emulator:truncated]]"))
    sent = Recorder()

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    await app(http_scope("POST", CHAT, AUTH), receive, sent)

    start, chunk = sent.messages
    assert start["status"] == 200
    declared = int(dict(start["headers"])[b"content-length"])
    assert chunk["more_body"] is True
    assert 0 < len(chunk["body"]) < declared


async def test_timeout_waits_and_gives_up_when_the_client_leaves() -> None:
    app = create_emulator_app(EmulatorConfig())
    body = orjson.dumps(chat_body("[[emulator:timeout]]"))
    messages: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
    connected = anyio.Event()
    sent = Recorder()

    async def receive() -> Message:
        if messages:
            return messages.pop(0)
        await connected.wait()
        return {"type": "http.disconnect"}

    with anyio.move_on_after(0.02) as still_waiting:
        await app(http_scope("POST", CHAT, AUTH), receive, sent)
    assert still_waiting.cancelled_caught
    assert sent.messages == []

    messages.append({"type": "http.request", "body": body, "more_body": False})
    connected.set()
    with anyio.fail_after(1):
        await app(http_scope("POST", CHAT, AUTH), receive, sent)
    assert sent.messages == []


@pytest.mark.parametrize("config", [EmulatorConfig(rate_limit_probability=1.0)])
async def test_global_rate_limit_probability(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=chat_body())
    forced = await client.post(CHAT, json=chat_body(), headers={SCENARIO: "ttft=0"})

    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert forced.status_code == 200, "a request with a scenario skips the random faults"


@pytest.mark.parametrize("config", [EmulatorConfig(server_error_probability=1.0)])
async def test_global_server_error_probability(client: httpx.AsyncClient) -> None:
    statuses = {(await client.post(CHAT, json=chat_body())).status_code for _ in range(20)}

    assert statuses == {502, 503}


@pytest.mark.parametrize("config", [EmulatorConfig(stream_error_probability=1.0)])
async def test_global_stream_error_probability(client: httpx.AsyncClient) -> None:
    streamed = await client.post(CHAT, json=chat_body(stream=True))
    plain = await client.post(CHAT, json=chat_body())

    assert parse_sse(streamed.text).chunks[-1]["error"]["code"] == 502
    assert plain.json()["choices"][0]["finish_reason"] == "stop"


async def test_random_faults_follow_the_seed() -> None:
    async def statuses(seed: int) -> list[int]:
        config = EmulatorConfig(rate_limit_probability=0.3, server_error_probability=0.3, seed=seed)
        transport = httpx.ASGITransport(app=create_emulator_app(config))
        async with httpx.AsyncClient(transport=transport, base_url="http://e", headers=AUTH) as c:
            return [(await c.post(CHAT, json=chat_body())).status_code for _ in range(30)]

    first, again, other = await statuses(1), await statuses(1), await statuses(2)

    assert first == again
    assert first != other
    assert {200, 429} <= set(first)


async def test_models_honours_header_scenarios(client: httpx.AsyncClient) -> None:
    failing = await client.get("/api/v1/models", headers={SCENARIO: "bad_gateway"})
    broken = await client.get("/api/v1/models", headers={SCENARIO: "invalid_json"})
    unknown = await client.get("/api/v1/models", headers={SCENARIO: "nope"})

    assert failing.status_code == 502
    assert failing.json()["error"]["code"] == 502
    assert broken.status_code == 200
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(broken.content)
    assert unknown.status_code == 400
