"""Benchmarks: what is asked for, one row per request, and the summary saved on disk.

Every interval is read off the wire clock; the README's "What each number means" lists them.
"""

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from src.schemas.prompts import GenerationResult, ModelId, SamplingParams

BenchmarkStatus = Literal["running", "completed", "interrupted", "cancelled", "failed"]
FINISHED: frozenset[str] = frozenset({"completed", "interrupted", "cancelled", "failed"})
Arrival = Literal["constant", "poisson"]
CostSource = Literal["upstream", "pricing"]
Sweep = Literal["concurrency", "rate", "auto"]
MAX_SWEEP_STEPS = 32
# With sweep=auto and no sweep_values: the rates tried between the synchronous and the
# maximum-throughput steps.
AUTO_SWEEP_RATES = 4


def _comma_separated(value: object) -> object:
    """A form sends `1,2,4` as one field (or the field repeated): either way, a list."""
    parts = value if isinstance(value, list) else [value]
    out: list[object] = []
    for part in parts:
        if isinstance(part, str):
            out.extend(item.strip() for item in part.split(",") if item.strip())
        else:
            out.append(part)
    return out


class BenchmarkParameters(SamplingParams):
    """What a benchmark runs: the form's fields with their bounds, and the saved parameters."""

    # The form repeats a `model` field per model; the saved summary says `models`.
    models: list[ModelId] = Field(
        min_length=1,
        validation_alias=AliasChoices("model", "models"),
        description="Model id; repeat the field to compare several models",
    )
    runs: int = Field(default=5, ge=1, description="Requests per prompt and model")
    concurrency: int = Field(default=1, ge=1, description="Requests in flight at most")
    stream: bool = Field(default=True, description="Stream every request to measure ttft")
    rate: float | None = Field(
        default=None,
        gt=0,
        le=10_000,
        description="Requests per second, sent on schedule whether or not earlier ones "
        "finished (open loop); concurrency still caps what is in flight. Unset: closed loop.",
    )
    arrival: Arrival = Field(
        default="constant", description="With a rate: evenly spaced or Poisson arrivals"
    )
    seed: int = Field(default=0, description="Seed of the Poisson arrivals")
    warmup: int = Field(
        default=0, ge=0, le=1000, description="Requests sent first and left out of the statistics"
    )
    duration: float | None = Field(
        default=None,
        gt=0,
        le=86_400,
        description="Seconds to keep sending (runs repeat); stops instead of `runs`",
    )
    ttft_slo: float | None = Field(
        default=None, gt=0, description="Seconds; with latency_slo, defines goodput"
    )
    latency_slo: float | None = Field(
        default=None, gt=0, description="Seconds; with ttft_slo, defines goodput"
    )
    tpot_slo: float | None = Field(
        default=None,
        gt=0,
        description="Seconds per output token after the first; with the others, defines goodput",
    )
    sweep: Sweep | None = Field(
        default=None,
        description="Step through `sweep_values` as concurrencies or rates, each step with "
        "`runs` (or `duration`) of its own; `auto`: a synchronous step, a maximum-throughput "
        "step at `concurrency`, then evenly spaced rates between",
    )
    sweep_values: Annotated[list[float], BeforeValidator(_comma_separated)] = Field(
        default_factory=list,
        max_length=MAX_SWEEP_STEPS,
        description="Ascending, comma-separated: `1,2,4,8`; with `auto`, how many rates "
        f"(default {AUTO_SWEEP_RATES})",
    )

    @model_validator(mode="after")
    def _ttft_needs_a_stream(self) -> "BenchmarkParameters":
        if self.ttft_slo is not None and not self.stream:
            raise ValueError("ttft_slo needs stream=true: without a stream there is no ttft")
        if self.tpot_slo is not None and not self.stream:
            raise ValueError("tpot_slo needs stream=true: without a stream there is no ttft")
        return self

    @model_validator(mode="after")
    def _sweep_values_fit_the_sweep(self) -> "BenchmarkParameters":
        values = self.sweep_values
        if self.sweep is None:
            if values:
                raise ValueError("sweep_values needs a sweep (concurrency, rate or auto)")
            return self
        if any(value <= 0 for value in values):
            raise ValueError("sweep_values must be above 0")
        if self.sweep == "auto":
            if len(values) > 1 or (values and not values[0].is_integer()):
                raise ValueError("with sweep=auto, sweep_values is one count of rates")
            if values and values[0] + 2 > MAX_SWEEP_STEPS:
                raise ValueError(f"a sweep has at most {MAX_SWEEP_STEPS} steps")
            return self
        if not values:
            raise ValueError(f"sweep={self.sweep} needs sweep_values, such as 1,2,4,8")
        if any(later <= earlier for earlier, later in zip(values, values[1:], strict=False)):
            raise ValueError("sweep_values must be ascending")
        if self.sweep == "concurrency" and not all(value.is_integer() for value in values):
            raise ValueError("concurrency sweep_values must be whole numbers")
        if self.sweep == "rate" and max(values) > 10_000:
            raise ValueError("rate sweep_values must be at most 10000 requests per second")
        return self

    @property
    def peak_concurrency(self) -> int:
        """The most requests the run holds in flight: what the caps count."""
        if self.sweep == "concurrency":
            return int(max(self.sweep_values))
        return self.concurrency

    @property
    def sweep_steps(self) -> int:
        """How many steps the run has: 1 without a sweep."""
        if self.sweep is None:
            return 1
        if self.sweep == "auto":
            return 2 + (int(self.sweep_values[0]) if self.sweep_values else AUTO_SWEEP_RATES)
        return len(self.sweep_values)


class SavedParameters(BenchmarkParameters):
    prompts: int = Field(description="Non-blank lines of the prompt file")


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
    warmup: bool = False
    send_lag_seconds: float | None = Field(
        default=None, description="With a rate: scheduled send time to the actual first send"
    )
    scheduled_latency_seconds: float | None = Field(
        default=None, description="With a rate: scheduled send time to the last byte"
    )
    itl: list[float] = Field(
        default_factory=list, description="Gaps between content chunks after the first"
    )
    cost_source: CostSource | None = Field(
        default=None, description="Where `cost` came from; null when it is unknown"
    )
    step: int | None = Field(default=None, description="With a sweep: the 1-based step")

    @property
    def ok(self) -> bool:
        return self.error_type is None

    @property
    def tpot_seconds(self) -> float | None:
        """Time per output token after the first: (latency - ttft) / (completion tokens - 1)."""
        if self.ttft_seconds is None or self.completion_tokens < 2:
            return None
        return max(self.latency_seconds - self.ttft_seconds, 0.0) / (self.completion_tokens - 1)


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


class Percentiles(BaseModel):
    """Seconds; null when there is nothing to measure (not streamed, or nothing succeeded)."""

    avg: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None


class RequestStats(BaseModel):
    count: int = Field(description="Measured requests (warm-up excluded)")
    ok: int
    failed: int
    retried: int = Field(description="Requests that needed more than one attempt")
    latency: LatencyStats = Field(description="The final attempt: request sent to last byte")
    ttft: Percentiles = Field(description="The final attempt: sent to the first content chunk")
    itl: Percentiles = Field(description="Gaps between content chunks after the first")
    tpot: Percentiles = Field(description="(latency - ttft) / (completion tokens - 1)")
    total: LatencyStats = Field(description="Seconds per request with every attempt and wait")
    scheduled_latency: LatencyStats | None = Field(
        default=None, description="With a rate: from the scheduled send time to the last byte"
    )
    tokens_total: int = Field(description="Sum of upstream usage.total_tokens")
    completion_tokens_total: int
    avg_completion_tokens: float | None
    output_tokens_per_second: float | None = Field(
        description="Completion tokens / latency, averaged over requests"
    )
    output_tokens_per_second_overall: float | None = Field(
        description="All completion tokens / wall_seconds"
    )
    decode_tokens_per_second: float | None = Field(
        description="Completion tokens after the first / (latency - ttft), averaged; streamed only"
    )
    goodput: float | None = Field(
        description="Share of requests that succeeded within every SLO set (ttft_slo, "
        "latency_slo, tpot_slo)"
    )
    goodput_per_second: float | None = Field(
        default=None,
        description="Requests that succeeded within every SLO set, per second of wall time "
        "(vLLM's goodput)",
    )
    cost: float | None = Field(
        description="USD over the successful requests whose cost is known; null when none is"
    )
    cost_unknown: int = Field(
        default=0, description="Successful requests whose cost is unknown, left out of `cost`"
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
    itl_p50: float | None
    tpot_p50: float | None
    output_tokens_per_second: float | None
    goodput: float | None
    cost: float | None
    cost_unknown: int = 0


class Progress(BaseModel):
    done: int = Field(description="Requests finished, warm-up included")
    total: int | None = Field(description="Requests planned; null when a duration decides")
    ok: int
    failed: int
    elapsed_seconds: float
    eta_seconds: float | None
    step: int | None = Field(
        default=None, description="With a sweep: the step of the latest finished request"
    )
    steps: int | None = Field(default=None, description="With a sweep: steps planned")
    step_done: int | None = Field(default=None, description="Requests finished in `step`")
    step_total: int | None = Field(
        default=None, description="Requests per step; null when a duration decides"
    )


class Schedule(BaseModel):
    """With a rate: how well the sends kept to their schedule."""

    target_rate: float
    achieved_rate: float | None = Field(description="Sends per second from first to last send")
    lag_p50: float | None = Field(description="Seconds from scheduled to actual send")
    lag_p99: float | None = None
    lag_max: float | None


class BenchmarkFiles(BaseModel):
    """Where the results are: names inside BENCHMARKS_DIR, and the URLs that download them."""

    # `json` would shadow BaseModel.json, so the attribute has another name.
    model_config = ConfigDict(populate_by_name=True)

    csv: str
    json_file: str = Field(alias="json")
    csv_url: str
    json_url: str
    report_url: str


class BenchmarkState(BaseModel):
    """The small per-run record: what listing, progress and cancellation read and write.

    While the run goes on its runner rewrites it as requests finish and at least every second;
    GET /benchmarks lists from these records alone, never from whole summaries.
    """

    id: str
    status: BenchmarkStatus
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    parameters: SavedParameters
    progress: Progress
    comparison: list[ComparisonRow] = Field(description="Per model, so far")
    cost: float | None = None
    cost_unknown: int = 0
    files: BenchmarkFiles
    # The owner tag of the key that started the run (services/benchmarker/runs/owners.py): kept
    # in the record on disk, never in an answer.
    owner: str | None = Field(default=None, exclude=True)
    error: str | None = Field(default=None, description="Why a failed run failed")


class StepStats(BaseModel):
    """One step of a sweep: what it sent, and the full statistics of its requests."""

    step: int = Field(description="1-based")
    concurrency: int
    rate: float | None = Field(description="Requests per second; null: closed loop")
    wall_seconds: float
    requests_per_second: float
    schedule: Schedule | None = Field(
        default=None, description="With a rate: how well this step's sends kept to it"
    )
    models: list[ModelStats]


class KneePoint(BaseModel):
    """Per model: the highest step of a sweep that met the SLOs; null fields when none did."""

    model: str
    step: int | None
    concurrency: int | None
    rate: float | None
    requests_per_second: float | None = Field(description="Achieved at that step")
    goodput_per_second: float | None


class BenchmarkSummary(BaseModel):
    id: str
    status: BenchmarkStatus
    started_at: datetime
    finished_at: datetime
    wall_seconds: float
    requests: int = Field(
        description="Measured requests planned: prompts x runs x models (with a duration: sent)"
    )
    finished_requests: int
    warmup_requests: int
    requests_per_second: float
    schedule: Schedule | None
    cost: float | None = Field(
        description="USD, every model, over the requests whose cost is known; null when none is"
    )
    cost_unknown: int = Field(
        default=0, description="Successful requests whose cost is unknown, left out of `cost`"
    )
    parameters: SavedParameters
    models: list[ModelStats]
    comparison: list[ComparisonRow]
    steps: list[StepStats] | None = Field(
        default=None, description="With a sweep: each step's statistics (`models` is all steps)"
    )
    knee: list[KneePoint] | None = Field(
        default=None, description="With a sweep and an SLO: per model, the highest step that met it"
    )
    files: BenchmarkFiles
    error: str | None = Field(default=None, description="Why a failed run failed")


class BenchmarkListItem(BaseModel):
    id: str
    status: BenchmarkStatus
    started_at: datetime
    finished_at: datetime | None
    models: list[str]
    requests: int | None
    finished_requests: int
    cost: float | None
    files: BenchmarkFiles


class BenchmarkList(BaseModel):
    count: int
    benchmarks: list[BenchmarkListItem]


class BenchmarkAccepted(BaseModel):
    """The 202 answer of a background run."""

    id: str
    status: BenchmarkStatus
    location: str
    events: str
    report: str
