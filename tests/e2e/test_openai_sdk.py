"""The official `openai` SDK against the running service and the emulator: what an application
written for OpenAI sees when it is pointed at this service instead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.helpers.audit import SecretAudit
from tests.helpers.e2e import MODEL, RETRY_ATTEMPTS, LogWatch, unique
from tests.helpers.launcher import Launcher, StartApp
from tests.helpers.processes import ServiceProcess, wait_until
from tests.helpers.sdk import async_sdk_client, sdk_client

EMULATOR_IDS = {"emulator/small", "emulator/medium", "emulator/large", "emulator/tiny:free"}
CONCURRENT_STREAMS = 50
# Far shorter than the abandoned answers below (100 s of streaming, a 60 s wait), far longer
# than a cancellation takes on a loaded machine.
GONE_WITHIN_SECONDS = 20.0


def ask(prompt: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": prompt}]


def test_models_list_names_the_emulator_models(app: ServiceProcess, audit: SecretAudit) -> None:
    with sdk_client(audit, app.url) as sdk:
        models = list(sdk.models.list())
        small = sdk.models.retrieve(MODEL)

    assert {model.id for model in models} == EMULATOR_IDS
    assert all(model.object == "model" and model.owned_by == "emulator" for model in models)
    assert small.id == MODEL and small.created > 0


def test_a_plain_completion(app: ServiceProcess, audit: SecretAudit) -> None:
    with sdk_client(audit, app.url) as sdk:
        completion = sdk.chat.completions.create(
            model=MODEL, messages=ask(unique("Why is the sky blue?")), max_tokens=12
        )

    assert completion.object == "chat.completion"
    assert completion.model == MODEL
    [choice] = completion.choices
    assert choice.message.role == "assistant"
    assert choice.message.content and choice.message.content.strip()
    assert choice.finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 12
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 12
    assert completion._request_id  # the service's X-Request-ID, as the SDK exposes it


def test_a_streamed_completion_with_usage_says_what_the_plain_one_says(
    app: ServiceProcess, audit: SecretAudit
) -> None:
    prompt = ask(unique("Name three rivers"))
    with sdk_client(audit, app.url) as sdk:
        plain = sdk.chat.completions.create(model=MODEL, messages=prompt, max_tokens=20)
        chunks = list(
            sdk.chat.completions.create(
                model=MODEL,
                messages=prompt,
                max_tokens=20,
                stream=True,
                stream_options={"include_usage": True},
            )
        )

    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == plain.choices[0].message.content
    finishes = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices]
    assert finishes[-1] == plain.choices[0].finish_reason
    # The usage comes last, in a chunk of its own, as OpenAI sends it when asked.
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and plain.usage is not None
    assert chunks[-1].usage.total_tokens == plain.usage.total_tokens


def test_an_unknown_model_raises_not_found(app: ServiceProcess, audit: SecretAudit) -> None:
    with sdk_client(audit, app.url) as sdk, pytest.raises(openai.NotFoundError) as raised:
        sdk.chat.completions.create(model="emulator/no-such-model", messages=ask("hi"))

    assert raised.value.status_code == 404
    assert raised.value.code == "UnknownModelError"
    assert "emulator/no-such-model" in raised.value.message


def test_a_rate_limit_after_the_services_retries_raises_rate_limit_error(
    app: ServiceProcess, audit: SecretAudit, client: httpx.Client
) -> None:
    log = LogWatch(app, client)
    with sdk_client(audit, app.url) as sdk, pytest.raises(openai.RateLimitError) as raised:
        sdk.chat.completions.create(
            model=MODEL, messages=ask(unique("[[emulator:rate_limit,retry_after=0.01]]"))
        )

    assert raised.value.status_code == 429
    assert raised.value.response.headers["retry-after"] == "1"
    assert raised.value.type == "rate_limit_error"
    lines = log.wait_for_request("POST", "/v1/chat/completions")
    retries = [line for line in lines.splitlines() if " - WARNING - RETRY | " in line]
    assert len(retries) == RETRY_ATTEMPTS - 1, lines


def test_a_wrong_key_raises_authentication_error(app: ServiceProcess, audit: SecretAudit) -> None:
    with (
        sdk_client(audit, app.url, api_key="not-the-key") as sdk,
        pytest.raises(openai.AuthenticationError) as raised,
    ):
        sdk.models.list()

    assert raised.value.status_code == 401


def test_a_stream_that_fails_midway_raises_after_its_first_chunks(
    app: ServiceProcess, audit: SecretAudit
) -> None:
    received: list[str] = []
    with sdk_client(audit, app.url) as sdk, pytest.raises(openai.APIError) as raised:
        for chunk in sdk.chat.completions.create(
            model=MODEL, messages=ask(unique("[[emulator:mid_stream_error]] Go")), stream=True
        ):
            received.append(chunk.choices[0].delta.content or "")

    assert "".join(received).strip()
    assert "mid-stream" in raised.value.message


def test_fifty_concurrent_streams_with_the_async_client(
    app: ServiceProcess, audit: SecretAudit, e2e_report: list[str]
) -> None:
    prompt = ask(unique("Tell me about rivers"))

    async def run() -> tuple[str, int, list[tuple[str, int]]]:
        async with async_sdk_client(audit, app.url, connections=CONCURRENT_STREAMS) as sdk:
            plain = await sdk.chat.completions.create(model=MODEL, messages=prompt, max_tokens=32)

            async def one() -> tuple[str, int]:
                stream = await sdk.chat.completions.create(
                    model=MODEL,
                    messages=prompt,
                    max_tokens=32,
                    stream=True,
                    stream_options={"include_usage": True},
                )
                text, tokens = "", 0
                async for chunk in stream:
                    if chunk.choices:
                        text += chunk.choices[0].delta.content or ""
                    if chunk.usage is not None:
                        tokens = chunk.usage.completion_tokens
                return text, tokens

            results = await asyncio.gather(*(one() for _ in range(CONCURRENT_STREAMS)))
            assert plain.usage is not None
            return plain.choices[0].message.content or "", plain.usage.completion_tokens, results

    started = time.monotonic()
    expected, expected_tokens, results = asyncio.run(run())
    seconds = time.monotonic() - started

    assert expected.strip()
    assert len(results) == CONCURRENT_STREAMS
    assert all(text == expected for text, _ in results)
    # The emulator's answer may end before max_tokens (its length follows the prompt): each
    # stream must count what the plain answer counted.
    assert 0 < expected_tokens <= 32
    assert [tokens for _, tokens in results] == [expected_tokens] * CONCURRENT_STREAMS
    e2e_report.append(
        f"openai SDK: {CONCURRENT_STREAMS} concurrent streams (AsyncOpenAI), all complete and "
        f"equal to the plain answer, in {seconds:.2f}s"
    )


# --- callers who leave ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def leaving_emulator(launcher: Launcher) -> Iterator[ServiceProcess]:
    """This module's own emulator: the abandoned slow answers stay off the shared one."""
    emulator = launcher.emulator("emulator-openai-leavers")
    yield emulator
    emulator.stop()


def test_leaving_a_stream_cancels_the_upstream_request(
    start_app: StartApp,
    leaving_emulator: ServiceProcess,
    connect: Callable[[ServiceProcess], httpx.Client],
) -> None:
    app = start_app("app-openai-leave-stream", upstream=leaving_emulator)
    http = connect(app)
    body = {  # 200 tokens at 2 tokens/s: 100 s of streaming
        "model": MODEL,
        "messages": ask(unique("Long story [[emulator:tps=2]]")),
        "max_tokens": 200,
        "stream": True,
    }
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        lines = response.iter_lines()  # kept: a dropped iterator would close the response
        assert next(lines).startswith("data: {")
        assert len(app.connections_to(leaving_emulator.port)) == 1

    assert wait_until(lambda: not app.connections_to(leaving_emulator.port), GONE_WITHIN_SECONDS)
    assert http.get("/health").status_code == 200


def test_leaving_before_the_answer_cancels_the_upstream_request(
    start_app: StartApp,
    leaving_emulator: ServiceProcess,
    connect: Callable[[ServiceProcess], httpx.Client],
) -> None:
    app = start_app("app-openai-leave-plain", upstream=leaving_emulator)
    http = connect(app)
    body = {"model": MODEL, "messages": ask(unique("Slow [[emulator:delay=60]]"))}

    with pytest.raises(httpx.ReadTimeout):
        http.post("/v1/chat/completions", json=body, timeout=httpx.Timeout(5.0, read=0.5))

    assert wait_until(lambda: not app.connections_to(leaving_emulator.port), GONE_WITHIN_SECONDS)
    assert http.get("/health").status_code == 200
