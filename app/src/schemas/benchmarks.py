"""Benchmark results: the POST /benchmark answer, which is also the JSON summary saved on disk."""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

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


class RequestStats(BaseModel):
    count: int
    ok: int
    failed: int
    latency: LatencyStats
    ttft: TtftStats
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
    latency_avg: float | None
    latency_std_dev: float | None
    latency_p50: float | None
    latency_p95: float | None
    ttft_p50: float | None
    output_tokens_per_second: float | None


class BenchmarkParameters(BaseModel):
    models: list[str]
    prompts: int
    runs: int
    concurrency: int
    max_tokens: int
    stream: bool
    temperature: float | None
    top_p: float | None


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
    parameters: BenchmarkParameters
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
