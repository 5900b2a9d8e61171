"""OpenAI's wire format, for the /v1 routes: what is checked of a request, and what the
documentation shows of the answers.

A chat request is relayed upstream as the caller sent it, so only what the service itself
acts on is declared (the model, the messages, whether to stream); every other parameter
(`max_tokens`, `temperature`, `tools`, `response_format`, ...) passes through untouched and
is the upstream's to judge. Answers are relayed as the upstream sent them; their models here
document the shape and are never used to re-serialise one.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from src.schemas.models import Pricing
from src.schemas.prompts import EXAMPLE_MODEL, ModelId

MessageContent = str | list[dict[str, object]] | None


class ChatMessageParam(BaseModel):
    """A message as OpenAI defines it; its other fields (`name`, `tool_calls`, ...) pass
    through."""

    role: str
    content: MessageContent = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class ReasoningParams(BaseModel):
    """OpenRouter's reasoning settings; `effort`, `exclude`, ... pass through."""

    model_config = ConfigDict(extra="allow")

    # Reasoning tokens are billed as output: checked against MAX_TOKENS_LIMIT.
    max_tokens: int | None = Field(default=None, ge=1)


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": EXAMPLE_MODEL,
                    "messages": [{"role": "user", "content": "Why is the sky blue?"}],
                    "max_tokens": 64,
                }
            ]
        },
    )

    model: ModelId
    # Validation stops at the first bad message: a list of millions is not worth a report each.
    messages: Annotated[list[ChatMessageParam], Field(min_length=1, fail_fast=True)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    # What multiplies the cost of one request, checked against MAX_TOKENS_LIMIT and
    # MAX_CHOICES (and still sent as they are).
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    max_output_tokens: int | None = Field(default=None, ge=1)
    reasoning: ReasoningParams | None = None
    n: int | None = Field(default=None, ge=1, description="Choices to generate")

    @property
    def token_limits(self) -> dict[str, int]:
        """Each token limit the request sets, by its name in the body."""
        asked = {
            "max_tokens": self.max_tokens,
            "max_completion_tokens": self.max_completion_tokens,
            "max_output_tokens": self.max_output_tokens,
            "reasoning.max_tokens": self.reasoning.max_tokens if self.reasoning else None,
        }
        return {name: limit for name, limit in asked.items() if limit is not None}


class _Relayed(BaseModel):
    """Upstream objects keep every field they came with."""

    model_config = ConfigDict(extra="allow")


class ChatCompletionMessage(_Relayed):
    role: str
    content: str | None = None


class ChatCompletionChoice(_Relayed):
    index: int
    message: ChatCompletionMessage
    finish_reason: str | None = None


class CompletionUsage(_Relayed):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(_Relayed):
    """The upstream's answer, relayed byte for byte (OpenRouter adds `provider`, usage
    `cost`, ...). Streamed, it is a series of `chat.completion.chunk` objects instead."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatCompletionChoice]
    usage: CompletionUsage | None = None


class ModelObject(BaseModel):
    """OpenAI's model object, with OpenRouter's name, context length and prices."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    name: str
    context_length: int | None
    pricing: Pricing | None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error, authentication_error, ...")
    param: str | None = Field(default=None, description="The request field at fault, if any")
    code: str | None = Field(default=None, description="The service's error name")


class OpenAIErrorResponse(BaseModel):
    """OpenAI's error shape: what the official SDKs read. A stream that fails after it has
    started sends the same object as its last `data:` event, then `data: [DONE]`."""

    error: OpenAIErrorDetail
