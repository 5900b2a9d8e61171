"""OpenRouter's wire format, parsed at the client boundary so nothing untyped goes further in.

Only the fields the service reads are declared; the rest of each object is ignored.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from src.excerpt import excerpt
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


# No request reads or writes this many tokens, nor costs this many USD: a larger number is an
# upstream's fault, and summed with others it could overflow every total it enters.
MAX_USAGE_TOKENS = 100_000_000
MAX_USAGE_COST_USD = 10_000.0
_TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")


class Usage(_Upstream):
    """The upstream's counts and charge. A number that is not one (a string, NaN), negative or
    past its bound is dropped (0 tokens, an unknown cost) and named in `problems`."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    # OpenRouter's charge for the request, in USD (usage accounting).
    cost: float | None = None
    problems: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _drop_implausible(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        kept = {key: value for key, value in data.items() if key not in _TOKEN_FIELDS}
        problems: list[str] = []
        for name in _TOKEN_FIELDS:
            value = data.get(name, 0)
            if _within(value, MAX_USAGE_TOKENS, whole=True):
                kept[name] = value
            else:
                problems.append(f"usage.{name} {excerpt(value, 40)!r} is not a token count")
        cost = data.get("cost")
        if cost is not None and not _within(cost, MAX_USAGE_COST_USD, whole=False):
            problems.append(f"usage.cost {excerpt(cost, 40)!r} is not a plausible USD charge")
            kept["cost"] = None
        kept["problems"] = problems
        return kept


def _within(value: object, bound: float, *, whole: bool) -> bool:
    """A finite number from 0 to `bound` (a whole one if `whole`); JSON's true is not one."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if whole and isinstance(value, float) and not value.is_integer():
        return False
    return 0 <= value <= bound  # NaN fails both comparisons; Infinity the second


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


class _UpstreamAnswer(UpstreamErrorEnvelope):
    """What a plain answer and each stream chunk share. OpenRouter may send either with an
    error object (for example a provider failure) under a 200."""

    id: str = ""
    model: str = ""
    # OpenRouter names the provider that served the request.
    provider: str | None = None
    usage: Usage | None = None


class UpstreamCompletion(_UpstreamAnswer):
    """A non-streamed answer from OpenRouter, read for the fields a generation needs."""

    choices: list[ChatChoice] = Field(default_factory=list)


class ChunkDelta(_Upstream):
    content: str | None = None


class ChunkChoice(_Upstream):
    delta: ChunkDelta = Field(default_factory=ChunkDelta)
    finish_reason: str | None = None


class ChatCompletionChunk(_UpstreamAnswer):
    choices: list[ChunkChoice] = Field(default_factory=list)


class UpstreamGeneration(_Upstream):
    """OpenRouter's record of a generation, read for the fields a cross-check needs."""

    provider_name: str | None = None
    latency: float | None = None  # ms
    generation_time: float | None = None  # ms
    native_tokens_prompt: int | None = None
    native_tokens_completion: int | None = None
    total_cost: float | None = None


class UpstreamGenerationEnvelope(_Upstream):
    data: UpstreamGeneration


class UpstreamEndpoint(_Upstream):
    """One provider serving a model, as `GET /models/{author}/{slug}/endpoints` lists it."""

    provider_name: str
    # The slug OpenRouter accepts in the `provider` object's `only`, `order` and `ignore`.
    tag: str = ""
    context_length: int | None = None
    quantization: str | None = None
    pricing: UpstreamPricing | None = None

    @property
    def slug(self) -> str:
        return (self.tag or self.provider_name).lower()


class UpstreamEndpointsData(_Upstream):
    id: str
    endpoints: list[UpstreamEndpoint] = Field(default_factory=list)


class UpstreamEndpointList(_Upstream):
    data: UpstreamEndpointsData


# OpenRouter's provider routing object (`only`, `order`, `allow_fallbacks`, `sort`, ...).
Routing = dict[str, object]


def pinned(provider: str | None, sort: str | None) -> Routing | None:
    """The `provider` object of a request: one provider and no fallback when pinned, so a
    failure of that provider is its own, never another provider's answer."""
    routing: Routing = {}
    if provider is not None:
        routing.update(only=[provider], allow_fallbacks=False)
    if sort is not None:
        routing["sort"] = sort
    return routing or None


# A single user message, or the whole conversation so far as {"role", "content"} messages.
Prompt = str | Sequence[Mapping[str, str]]


@dataclass(frozen=True, slots=True)
class ChatCall:
    """One chat request to the upstream: what to ask which model, and how to route it."""

    model: str
    prompt: Prompt
    sampling: SamplingParams
    routing: Routing | None = None

    def body(self, *, stream: bool) -> bytes:
        """The JSON body of POST /chat/completions; unset sampling fields are left out."""
        prompt, sampling = self.prompt, self.sampling
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        body: dict[str, object] = {
            "model": self.model,
            "messages": list(messages),
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
        if self.routing is not None:
            body["provider"] = self.routing
        return orjson.dumps(body)
