from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_MODEL_ID_CHARS = 200
MAX_PROMPT_CHARS = 1_000_000


class GenerateRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"model": "emulator/small", "prompt": "Why is the sky blue?"}]
        },
    )

    model: str = Field(min_length=1, max_length=MAX_MODEL_ID_CHARS, pattern=r"^[^\x00-\x1f]+$")
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    max_tokens: int = Field(default=512, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stream: bool = False

    @field_validator("prompt")
    @classmethod
    def _prompt_has_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("prompt must contain some non-whitespace text")
        return value


class GenerateResponse(BaseModel):
    text: str
    tokens_used: int
    latency_seconds: float
    model: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


class StreamTokenEvent(BaseModel):
    text: str


class StreamDoneEvent(BaseModel):
    tokens_used: int
    latency_seconds: float
    ttft_seconds: float | None
    finish_reason: str | None
    model: str
    prompt_tokens: int
    completion_tokens: int


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
