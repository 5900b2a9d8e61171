"""What a generation is asked with, and what it gives back: each defined once.

`SamplingParams` carries the generation parameters and their bounds for every surface
(`/generate`, the benchmark form, the saved summary); `GenerationResult` is the one result,
answered by `/generate`, sent as the stream's `done` event and extended by benchmark rows.
"""

import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    StringConstraints,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

MAX_MODEL_ID_CHARS = 200
MAX_PROMPT_CHARS = 1_000_000
MAX_TOKENS_BOUND = 1_000_000
# Unicode's control characters (category Cc: C0, DEL and C1) and its line and paragraph
# separators (Zl, Zp): any of them in a model id could break a log line, a CSV row or a file
# name. These ranges are exactly those categories.
_FORBIDDEN_IN_MODEL_ID = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ALLOWED_IN_MODEL_ID = r"[^\x00-\x1f\x7f-\x9f\u2028\u2029]"
# The same rule for the document's readers (clients, fuzzers): none of those characters, and
# something left once surrounding whitespace is trimmed. Checked by the validators below.
MODEL_ID_PATTERN = (
    rf"^{_ALLOWED_IN_MODEL_ID}*[^\s\x00-\x1f\x7f-\x9f\u2028\u2029]{_ALLOWED_IN_MODEL_ID}*$"
)
PROMPT_PATTERN = r"\S"
EXAMPLE_MODEL = "emulator/small"


class DocumentedPattern:
    """A `pattern` in the JSON schema only: the validators own the check, and their message."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        schema["pattern"] = self.pattern
        return schema


def check_model_id(value: object) -> object:
    """Runs on the raw value, before surrounding whitespace is trimmed: trimming would
    otherwise quietly drop a trailing separator instead of refusing it."""
    if not isinstance(value, str):
        return value  # the str validation that follows refuses it
    forbidden = _FORBIDDEN_IN_MODEL_ID.search(value)
    if forbidden:
        raise ValueError(
            f"model id contains the control or line-break character U+{ord(forbidden[0]):04X}"
        )
    return value


def check_prompt_text(value: str) -> str:
    if not value.strip():
        raise ValueError("prompt must contain some non-whitespace text")
    return value


ModelId = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_MODEL_ID_CHARS),
    BeforeValidator(check_model_id),
    DocumentedPattern(MODEL_ID_PATTERN),
]
PromptText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_PROMPT_CHARS),
    AfterValidator(check_prompt_text),
    DocumentedPattern(PROMPT_PATTERN),
]


class SamplingParams(BaseModel):
    """The generation parameters sent upstream with every prompt; unset ones are omitted."""

    # NaN passes no bound (every comparison with it is false) and neither NaN nor Infinity
    # can be written as JSON: refused as not numbers, on every surface that inherits these.
    model_config = ConfigDict(allow_inf_nan=False)

    max_tokens: int = Field(default=512, ge=1, le=MAX_TOKENS_BOUND)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)


class GenerateRequest(SamplingParams):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"model": EXAMPLE_MODEL, "prompt": "Why is the sky blue?"}]
        },
    )

    model: ModelId
    prompt: PromptText
    stream: bool = False
    generation_stats: bool = Field(
        default=False,
        description="Also fetch OpenRouter's own record of the generation (plain answers only; "
        "waits up to GENERATION_STATS_WAIT_SECONDS for it)",
    )


class GenerationStats(BaseModel):
    """OpenRouter's own record of a generation (`GET /generation?id=`), in seconds and USD."""

    latency_seconds: float | None = Field(description="Its `latency` (ms), in seconds")
    generation_seconds: float | None = Field(description="Its `generation_time` (ms), in seconds")
    native_prompt_tokens: int | None = Field(description="Its `native_tokens_prompt`")
    native_completion_tokens: int | None = Field(description="Its `native_tokens_completion`")
    cost: float | None = Field(description="Its `total_cost`, USD")
    provider: str | None = Field(default=None, description="Its `provider_name`")


class GenerationResult(BaseModel):
    """One generation as measured at the wire: the final attempt's own latency and
    time to first token, every attempt and wait in `total_seconds`."""

    text: str
    model: str
    provider: str | None = Field(
        default=None, description="The provider that served it, as the upstream named it"
    )
    generation_id: str | None = Field(
        default=None, description="The upstream's generation id (GET /generation?id=)"
    )
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    tokens_used: int = Field(description="Upstream usage.total_tokens")
    latency_seconds: float = Field(description="Final attempt: request sent to last byte")
    ttft_seconds: float | None = Field(
        default=None, description="Final attempt: request sent to the first content token"
    )
    attempts: int = Field(default=1, description="Attempts made, the first included")
    total_seconds: float = Field(description="Every attempt and every retry wait")
    cost: float | None = Field(
        default=None, description="USD, as the upstream charged it (usage.cost); null if unsaid"
    )
    usage_problem: str | None = Field(
        default=None,
        description="Why the upstream's usage is not known in full (absent, or a number that "
        "is not one); the numbers it concerns are then 0 tokens or a null cost",
    )
    generation_record: Literal["found", "missing"] | None = Field(
        default=None,
        description="Whether OpenRouter's record of it was found in time; null when not asked",
    )
    generation: GenerationStats | None = Field(
        default=None, description="OpenRouter's record of it, when asked for and found"
    )


class ErrorResponse(BaseModel):
    detail: str
    error: str
    request_id: str


class ValidationErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorResponse(BaseModel):
    """FastAPI's own request validation error, kept as FastAPI shapes it."""

    detail: list[ValidationErrorItem]
