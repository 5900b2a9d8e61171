"""Benchmark results: the POST /benchmark answer, which is also the JSON summary saved on disk."""

from datetime import datetime
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from src.schemas.prompts import GenerationResult, ModelId, SamplingParams

BenchmarkStatus = Literal["completed", "interrupted", "failed"]


class LatencyStats(BaseModel):
    """Seconds, over successful requests only; every field is null when none succeeded."""

    avg: float | None = None
    min: float | None = None
    max: float | None = None
    std_dev: float | None = Field(default=None, description="Sample standard deviation")
    p25: float | None = None
    p50: float | None = None
    p75: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None


class TtftStats(BaseModel):
    """Time to first token in seconds; null when not streamed or when nothing succeeded."""

    avg: float | None = None
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


class RequestRecord(GenerationResult):
    """One benchmark request, a row of the CSV: which job it was, and its result or error.

    A failed request keeps its timing (the final attempt's latency, attempts, total seconds)
    with no tokens and an empty text; the text of a success is not kept either.
    """

    prompt_index: int = Field(description="1-based position among the non-blank lines")
    prompt: str
    run: int
    status: int = Field(description="200, or the status the error maps to")
    error_type: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error_type is None


class RequestStats(BaseModel):
    count: int
    ok: int
    failed: int
    retried: int = Field(description="Requests that needed more than one attempt")
    latency: LatencyStats = Field(description="The final attempt's own latency")
    ttft: TtftStats
    total: LatencyStats = Field(description="Seconds per request with every attempt and wait")
    tokens_total: int = Field(description="Sum of upstream usage.total_tokens")
    avg_completion_tokens: float | None
    output_tokens_per_second: float | None = Field(
        description="Completion tokens / latency, averaged over requests"
    )
    decode_tokens_per_second: float | None = Field(
        description="Completion tokens after the first / (latency - ttft), averaged; streamed only"
    )
    wall_seconds: float = Field(description="Wall time of the whole benchmark")
    requests_per_second: float = Field(description="count / wall_seconds")
    errors: dict[str, int] = Field(description="Failed requests by error type")


# The key of a statistics row comes first in the JSON: pydantic orders fields from the last base.
class _PromptKey(BaseModel):
    prompt_index: int = Field(description="1-based position among the non-blank lines")
    prompt: str = Field(description="The prompt, shortened for display")


class _ModelKey(BaseModel):
    model: str


class PromptStats(RequestStats, _PromptKey):
    pass


class ModelStats(RequestStats, _ModelKey):
    per_prompt: list[PromptStats]


class ComparisonRow(BaseModel):
    model: str
    ok: int
    failed: int
    retried: int
    latency_avg: float | None
    latency_std_dev: float | None
    latency_p50: float | None
    latency_p95: float | None
    ttft_p50: float | None
    output_tokens_per_second: float | None


class BenchmarkParameters(SamplingParams):
    """What a benchmark runs: the form's fields and their bounds, and the saved parameters."""

    # The form repeats a `model` field per model; the saved summary says `models`.
    models: list[ModelId] = Field(
        min_length=1,
        validation_alias=AliasChoices("model", "models"),
        description="Model id; repeat the field to compare several models",
    )
    runs: int = Field(default=5, ge=1, description="Requests per prompt and model")
    concurrency: int = Field(default=1, ge=1, description="Requests in flight at most")
    stream: bool = Field(default=True, description="Stream every request to measure ttft")


class SavedParameters(BenchmarkParameters):
    prompts: int = Field(description="Non-blank lines of the prompt file")


class BenchmarkFiles(BaseModel):
    # `json` would shadow BaseModel.json, so the attribute has another name.
    model_config = ConfigDict(populate_by_name=True)

    csv: str
    json_file: str = Field(alias="json")


class BenchmarkSummary(BaseModel):
    id: str
    status: BenchmarkStatus
    started_at: datetime
    finished_at: datetime
    wall_seconds: float
    requests: int = Field(description="Planned requests: prompts x runs x models")
    finished_requests: int
    requests_per_second: float
    parameters: SavedParameters
    models: list[ModelStats]
    comparison: list[ComparisonRow]
    files: BenchmarkFiles


class BenchmarkListItem(BaseModel):
    id: str
    status: BenchmarkStatus
    started_at: datetime
    finished_at: datetime
    models: list[str]
    requests: int
    finished_requests: int
    files: BenchmarkFiles


class BenchmarkList(BaseModel):
    count: int
    benchmarks: list[BenchmarkListItem]
