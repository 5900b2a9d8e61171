"""OpenRouter (or any OpenAI-compatible upstream) on top of the base client.

Every answer is timed before it is parsed: the body's bytes carry their arrival time from the
transport, and JSON or pydantic work starts only after the clock has been read.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, SecretStr, ValidationError

from src.config import Settings
from src.schemas.prompts import GenerationResult
from src.services.base.client import BaseClient, RetryPolicy, build_transport
from src.services.base.exceptions import (
    UpstreamInvalidResponseError,
    UpstreamStatusError,
    UpstreamStreamError,
)
from src.services.base.httpx_transport import HttpxOptions
from src.services.base.sse import SSEDecoder, encode_event
from src.services.base.timing import Timing, now
from src.services.openrouter.schemas import (
    ChatCall,
    ChatCompletionChunk,
    UpstreamCompletion,
    UpstreamEndpointList,
    UpstreamEndpointsData,
    UpstreamErrorEnvelope,
    UpstreamGeneration,
    UpstreamGenerationEnvelope,
    UpstreamModel,
    UpstreamModelList,
    Usage,
)

M = TypeVar("M", bound=BaseModel)
# The answers that may carry OpenRouter's error object.
Answer = TypeVar("Answer", UpstreamCompletion, UpstreamErrorEnvelope, ChatCompletionChunk)

COMPLETIONS = "chat/completions"
NOT_FOUND = 404
DONE = b"[DONE]"
# A quoted key only: the same word inside a JSON string value is escaped (\"error\").
_ERROR_KEY = b'"error"'
# OpenRouter's name for who served an answer; the first one in the answer (its top level, which
# it writes before the choices), read without parsing what is relayed as it is.
_PROVIDER = re.compile(rb'"provider"\s*:\s*"([^"\\]{1,100})"')


@dataclass(frozen=True, slots=True)
class StreamDelta:
    text: str


StreamItem = StreamDelta | GenerationResult


class OpenRouterClient(BaseClient):
    max_stream_line_bytes: int | None = None

    async def list_models(self) -> list[UpstreamModel]:
        body = await self.read("GET", "models", Timing())
        return parsed(UpstreamModelList, body, "Upstream model list is not valid JSON").data

    async def list_endpoints(self, model: str) -> UpstreamEndpointsData:
        """The providers serving `model` (OpenRouter's `/models/{author}/{slug}/endpoints`)."""
        body = await self.read("GET", f"models/{model}/endpoints", Timing())
        return parsed(UpstreamEndpointList, body, "Upstream endpoint list is not valid JSON").data

    async def generation(self, generation_id: str) -> UpstreamGeneration | None:
        """OpenRouter's record of a generation; None while it does not exist (a 404: it
        appears a few seconds after the generation ends)."""
        try:
            body = await self.read("GET", f"generation?id={quote(generation_id)}", Timing())
        except UpstreamStatusError as exc:
            if exc.status_code == NOT_FOUND:
                return None
            raise
        return parsed(UpstreamGenerationEnvelope, body, "Upstream generation is not JSON").data

    async def complete(self, call: ChatCall, timing: Timing) -> GenerationResult:
        """One chat completion, timed at the wire by `timing`, parsed afterwards."""
        body = await self.read("POST", COMPLETIONS, timing, call.body(stream=False))
        completion = _checked(UpstreamCompletion, body, "Upstream completion is not valid JSON")
        if not completion.choices:
            raise UpstreamInvalidResponseError("Upstream completion has no choices")
        choice = completion.choices[0]
        return _result(
            choice.message.content or "",
            completion.model or call.model,
            choice.finish_reason,
            completion.usage,
            timing,
            completion.provider,
            completion.id or None,
        )

    async def stream(self, call: ChatCall, timing: Timing) -> AsyncGenerator[StreamItem]:
        """Content deltas as they arrive, then the GenerationResult (without the text).

        The time to first token is the arrival of the bytes that carried the first content,
        read before that chunk is parsed. Closing the generator early closes the upstream
        connection, which is how the upstream learns to stop generating.
        """
        state = _StreamState(call.model)
        async with aclosing(self._data_events(call.body(stream=True), timing)) as events:
            async for batch, arrived in events:
                for data in batch:
                    text = state.take(data)
                    if text:
                        if timing.first_content is None:
                            timing.first_content = arrived
                        if timing.content_arrivals is not None:
                            timing.content_arrivals.append(arrived)
                        yield StreamDelta(text)
        if not state.saw_choice:
            # A usage chunk without choices is normal after the answer, not instead of it.
            raise UpstreamInvalidResponseError("Upstream stream ended without any choice")
        yield _result(
            "",
            state.model,
            state.finish_reason,
            state.usage,
            timing,
            state.provider,
            state.generation_id,
        )

    async def relay(self, content: bytes, timing: Timing) -> bytes:
        """POST the caller's own chat request; the answer's bytes as the upstream sent them.

        Parsed only as far as telling a completion from an error: the answer is relayed, not
        rebuilt, so every field the upstream adds reaches the caller.
        """
        body = await self.read("POST", COMPLETIONS, timing, content)
        _checked(UpstreamErrorEnvelope, body, "Upstream completion is not valid JSON")
        return body

    async def relay_stream(self, content: bytes, timing: Timing) -> AsyncGenerator[bytes]:
        """POST the caller's own streamed chat request; the upstream's `data:` events as they
        arrive, framed again one per event (comments, `event:` and `id:` lines dropped), up to
        and without its `data: [DONE]`.

        A chunk is parsed only when it may carry OpenRouter's error object, which is raised as
        an UpstreamStreamError. Closing the generator early closes the upstream connection.
        """
        async with aclosing(self._data_events(content, timing)) as events:
            async for batch, arrived in events:
                framed: list[bytes] = []
                for data in batch:
                    error = _carried_error(data) if _ERROR_KEY in data else None
                    if error is not None:
                        if framed:  # what came before it in the same chunk goes out first
                            yield b"".join(framed)
                        raise error
                    framed.append(encode_event(data))
                if timing.first_content is None:
                    timing.first_content = arrived
                yield b"".join(framed)

    async def _data_events(
        self, content: bytes, timing: Timing
    ) -> AsyncGenerator[tuple[list[bytes], float]]:
        """POST a streamed chat request; the data of its events, those each chunk completes
        with the chunk's arrival time, up to and without `[DONE]`.

        What follows `[DONE]` is read only to keep the connection reusable. Closing the
        generator early closes the upstream connection, which is how the upstream learns to
        stop generating.
        """
        body = await self.open("POST", COMPLETIONS, timing, content=content)
        decoder = SSEDecoder(self.max_stream_line_bytes)
        done = saw_data = False
        try:
            while (item := await body.next()) is not None:
                chunk, arrived = item
                if done:
                    continue
                batch: list[bytes] = []
                for event in decoder.feed(chunk):
                    saw_data = True
                    if event.data == DONE:
                        done = True
                        break
                    batch.append(event.data)
                if batch:
                    yield batch, arrived
        finally:
            timing.ended = body.timing.end or now()
            await body.aclose()
        if not saw_data:
            raise UpstreamInvalidResponseError("Upstream stream ended without any data")


def provider_in(answer: bytes) -> str | None:
    """The provider named by a relayed answer or stream chunk, if it names one."""
    found = _PROVIDER.search(answer)
    return found.group(1).decode("utf-8", "replace") if found else None


def parsed(model: type[M], data: bytes, failure: str) -> M:
    """Upstream JSON into its model; anything else is the upstream's fault (a 502)."""
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        raise UpstreamInvalidResponseError(failure) from exc


def _checked(model: type[Answer], data: bytes, failure: str) -> Answer:
    """Upstream JSON into its model; OpenRouter's error object, sent with a 200, raised."""
    answer = parsed(model, data, failure)
    if answer.error is not None:
        raise UpstreamStreamError(answer.error.message, answer.error.code)
    return answer


def _carried_error(data: bytes) -> UpstreamStreamError | None:
    """OpenRouter reports a failure after the 200 as a chunk with an `error` object."""
    try:
        envelope = UpstreamErrorEnvelope.model_validate_json(data)
    except ValidationError:
        return None  # not JSON: relayed as it is, the upstream's own framing
    if envelope.error is None:
        return None
    return UpstreamStreamError(envelope.error.message, envelope.error.code)


class _StreamState:
    """What the chunks of one stream have said so far."""

    __slots__ = (
        "finish_reason",
        "generation_id",
        "model",
        "provider",
        "saw_choice",
        "usage",
    )

    def __init__(self, model: str) -> None:
        self.model = model
        self.provider: str | None = None
        self.generation_id: str | None = None
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.saw_choice = False

    def take(self, data: bytes) -> str:
        """The content text of one `data:` event (empty when it carries none)."""
        chunk = _checked(ChatCompletionChunk, data, "Upstream stream chunk is not JSON")
        self.model = chunk.model or self.model
        self.provider = chunk.provider or self.provider
        self.generation_id = chunk.id or self.generation_id
        if chunk.usage is not None:
            self.usage = chunk.usage
        text = ""
        if chunk.choices:
            self.saw_choice = True
        for choice in chunk.choices:
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
            if choice.delta.content:
                text += choice.delta.content
        return text


def _result(
    text: str,
    model: str,
    finish_reason: str | None,
    usage: Usage | None,
    timing: Timing,
    provider: str | None,
    generation_id: str | None,
) -> GenerationResult:
    return GenerationResult.model_construct(
        text=text,
        model=model,
        provider=provider,
        generation_id=generation_id,
        finish_reason=finish_reason,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        tokens_used=usage.total_tokens if usage else 0,
        latency_seconds=timing.latency,
        ttft_seconds=timing.ttft,
        attempts=timing.attempts,
        total_seconds=timing.total,
        cost=usage.cost if usage else None,
        usage_problem=_usage_problem(usage),
    )


def _usage_problem(usage: Usage | None) -> str | None:
    if usage is None:
        return "the upstream reported no usage"
    return "; ".join(usage.problems) or None


@dataclass(frozen=True, slots=True)
class UpstreamTarget:
    """Where requests go and with which key: OpenRouter, or the embedded emulator."""

    base_url: str
    api_key: SecretStr


def connect_openrouter(
    settings: Settings, target: UpstreamTarget, transport: httpx.AsyncBaseTransport | None = None
) -> OpenRouterClient:
    """The one upstream client of a process (the API's, or a benchmark runner's)."""
    client = OpenRouterClient(
        transport
        or build_transport(
            settings.upstream_transport,
            max_connections=settings.upstream_max_connections,
            httpx_options=HttpxOptions(
                settings.upstream_http2, settings.upstream_client_cert, settings.upstream_client_key
            ),
            # The embedded emulator listens on this machine: never through a proxy.
            trust_env=not settings.uses_emulator,
        ),
        base_url=target.base_url,
        api_key=target.api_key.get_secret_value(),
        timeout=httpx.Timeout(
            settings.upstream_timeout_seconds, connect=settings.upstream_connect_timeout_seconds
        ),
        retry_policy=RetryPolicy.from_settings(settings),
        max_response_bytes=settings.max_upstream_response_bytes,
        deadline_seconds=settings.upstream_deadline_seconds,
    )
    client.max_stream_line_bytes = settings.max_upstream_line_bytes
    return client
