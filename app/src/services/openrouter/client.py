"""OpenRouter (or any OpenAI-compatible upstream) on top of the base client."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from pydantic import ValidationError

from src.services.base.client import BaseClient
from src.services.base.exceptions import UpstreamInvalidResponseError, UpstreamStreamError
from src.services.openrouter.schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatParameters,
    UpstreamModel,
    UpstreamModelList,
)


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    model: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    tokens_used: int
    latency_seconds: float


@dataclass(frozen=True, slots=True)
class StreamDelta:
    text: str


@dataclass(frozen=True, slots=True)
class StreamEnd:
    model: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    tokens_used: int
    latency_seconds: float
    ttft_seconds: float | None


StreamItem = StreamDelta | StreamEnd


class OpenRouterClient(BaseClient):
    async def list_models(self) -> list[UpstreamModel]:
        body = await self.request_bytes("GET", "models")
        try:
            return UpstreamModelList.model_validate_json(body).data
        except ValidationError as exc:
            raise UpstreamInvalidResponseError("Upstream model list is not valid JSON") from exc

    async def complete(self, params: ChatParameters) -> Completion:
        """One chat completion; latency is the upstream round trip, timed with a monotonic clock."""
        started = time.perf_counter()
        body = await self.request_bytes(
            "POST", "chat/completions", json=params.payload(stream=False)
        )
        latency = time.perf_counter() - started
        try:
            completion = ChatCompletion.model_validate_json(body)
        except ValidationError as exc:
            raise UpstreamInvalidResponseError("Upstream completion is not valid JSON") from exc
        if completion.error is not None:
            raise UpstreamStreamError(completion.error.message, completion.error.code)
        if not completion.choices:
            raise UpstreamInvalidResponseError("Upstream completion has no choices")
        choice = completion.choices[0]
        usage = completion.usage
        return Completion(
            text=choice.message.content or "",
            model=completion.model or params.model,
            finish_reason=choice.finish_reason,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            tokens_used=usage.total_tokens if usage else 0,
            latency_seconds=latency,
        )

    async def stream_complete(self, params: ChatParameters) -> AsyncGenerator[StreamItem]:
        """Content deltas as they arrive, then one StreamEnd with usage and timings."""
        started = time.perf_counter()
        ttft: float | None = None
        model = params.model
        finish_reason: str | None = None
        usage = None
        async with self.stream(
            "POST", "chat/completions", json=params.payload(stream=True)
        ) as response:
            async for line in self.iter_lines(response):
                # SSE comments (": OPENROUTER PROCESSING") keep the connection alive; no data.
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    chunk = ChatCompletionChunk.model_validate_json(data)
                except ValidationError as exc:
                    raise UpstreamInvalidResponseError("Upstream stream chunk is not JSON") from exc
                if chunk.error is not None:
                    raise UpstreamStreamError(chunk.error.message, chunk.error.code)
                model = chunk.model or model
                if chunk.usage is not None:
                    usage = chunk.usage
                for choice in chunk.choices:
                    if choice.finish_reason:
                        finish_reason = choice.finish_reason
                    if choice.delta.content:
                        if ttft is None:
                            ttft = time.perf_counter() - started
                        yield StreamDelta(choice.delta.content)
        yield StreamEnd(
            model=model,
            finish_reason=finish_reason,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            tokens_used=usage.total_tokens if usage else 0,
            latency_seconds=time.perf_counter() - started,
            ttft_seconds=ttft,
        )
