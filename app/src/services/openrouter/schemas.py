"""OpenRouter's wire format, parsed at the client boundary so nothing untyped goes further in.

Only the fields the service reads are declared; the rest of each object is ignored.
"""

import orjson
from pydantic import BaseModel, ConfigDict, Field

from src.schemas.prompts import SamplingParams


class _Upstream(BaseModel):
    model_config = ConfigDict(extra="ignore")


class UpstreamPricing(_Upstream):
    """USD per token, as decimal strings."""

    prompt: str | None = None
    completion: str | None = None


class UpstreamModel(_Upstream):
    id: str
    name: str = ""
    created: int | None = None
    context_length: int | None = None
    # Absent for some models: their price is unknown, which is not the same as free.
    pricing: UpstreamPricing | None = None


class UpstreamModelList(_Upstream):
    data: list[UpstreamModel]


class Usage(_Upstream):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    # OpenRouter's charge for the request, in USD (usage accounting).
    cost: float | None = None


class ChatMessage(_Upstream):
    role: str = "assistant"
    content: str | None = None


class ChatChoice(_Upstream):
    message: ChatMessage
    finish_reason: str | None = None


class UpstreamErrorBody(_Upstream):
    code: int | str | None = None
    message: str = "unknown upstream error"


class UpstreamErrorEnvelope(_Upstream):
    """Any answer or stream chunk, read for nothing but the error object it may carry."""

    error: UpstreamErrorBody | None = None


class ChatCompletion(_Upstream):
    id: str = ""
    model: str = ""
    choices: list[ChatChoice] = Field(default_factory=list)
    usage: Usage | None = None
    # OpenRouter may answer 200 with an error object (for example a provider failure).
    error: UpstreamErrorBody | None = None


class ChunkDelta(_Upstream):
    content: str | None = None


class ChunkChoice(_Upstream):
    delta: ChunkDelta = Field(default_factory=ChunkDelta)
    finish_reason: str | None = None


class ChatCompletionChunk(_Upstream):
    model: str = ""
    choices: list[ChunkChoice] = Field(default_factory=list)
    usage: Usage | None = None
    error: UpstreamErrorBody | None = None


def chat_body(model: str, prompt: str, sampling: SamplingParams, *, stream: bool) -> bytes:
    """The JSON body of POST /chat/completions; unset sampling fields are left out."""
    body: dict[str, object] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": sampling.max_tokens,
    }
    if sampling.temperature is not None:
        body["temperature"] = sampling.temperature
    if sampling.top_p is not None:
        body["top_p"] = sampling.top_p
    if stream:
        body["stream"] = True
        # OpenRouter sends the token counts in a last chunk only when asked.
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)
