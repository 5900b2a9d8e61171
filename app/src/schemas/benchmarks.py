"""Benchmarks: what is asked for, one row per request, and the summary saved on disk.

Every interval is read off the wire clock; the README's "What each number means" lists them.
"""

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from src.schemas.prompts import (
    MAX_TOKENS_BOUND,
    GenerationResult,
    ModelId,
    SamplingParams,
    check_model_id,
)

BenchmarkStatus = Literal["running", "completed", "interrupted", "cancelled", "failed"]
FINISHED: frozenset[str] = frozenset({"completed", "interrupted", "cancelled", "failed"})
Arrival = Literal["constant", "poisson"]
ProviderSort = Literal["price", "throughput", "latency"]
MAX_PROVIDER_CHARS = 100
ProviderSlug = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, to_lower=True, min_length=1, max_length=MAX_PROVIDER_CHARS
    ),
    BeforeValidator(check_model_id),
]
CostSource = Literal["generation", "upstream", "pricing"]
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


MAX_LABEL_CHARS = 80
MAX_NOTES_CHARS = 2000


def check_printable(value: object, line_breaks: bool = False) -> object:
    """Text shown to people in listings and pages: no control or formatting characters (a
    label is one line; notes may break lines and indent with tabs)."""
    if not isinstance(value, str):
        return value  # the str validation that follows refuses it
    allowed = "\n\t" if line_breaks else ""
    text = value.replace("\r\n", "\n") if line_breaks else value
    for char in text:
        if not char.isprintable() and char not in allowed:
            raise ValueError(f"contains the unprintable character U+{ord(char):04X}")
    return text


RunLabel = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_LABEL_CHARS),
    BeforeValidator(check_printable),
]
RunNotes = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_NOTES_CHARS),
    BeforeValidator(lambda value: check_printable(value, line_breaks=True)),
]


class BenchmarkParameters(SamplingParams):
    """What a benchmark runs: the form's fields with their bounds, and the saved parameters."""

    # The form repeats a `model` field per model; the saved summary says `models`.
    models: list[ModelId] = Field(
        min_length=1,
        validation_alias=AliasChoices("model", "models"),
        description="Model id; repeat the field to compare several models",
    )
    providers: list[ProviderSlug] = Field(
        default_factory=list,
        validation_alias=AliasChoices("provider", "providers"),
        description="Provider slug, pinned with no fallback: each model x provider is a series "
        "of its own; repeat it for several, or `all` for every provider of each model. "
        "Unset: OpenRouter chooses per request.",
    )
    provider_sort: ProviderSort | None = Field(
        default=None, description="OpenRouter's provider `sort`, passed through"
    )
    runs: int = Field(default=5, ge=1, description="Requests per prompt and series")
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
    seed: int = Field(
        default=0,
        ge=0,
        # Kept in the run's records, which hold 64-bit integers.
        le=2**63 - 1,
        description="Seed of the Poisson arrivals and of synthetic prompts and lengths",
    )
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
        description="Ascending: the field repeated, or one comma-separated `1,2,4,8`; with "
        f"`auto`, how many rates (default {AUTO_SWEEP_RATES})",
    )

    prompt_tokens: int | None = Field(
        default=None,
        ge=1,
        le=200_000,
        description="Synthetic prompts of about this many tokens, instead of a prompt_file",
    )
    prompt_tokens_stdev: float = Field(
        default=0, ge=0, description="Spread of the synthetic prompt lengths (normal)"
    )
    prompts: int | None = Field(
        default=None, ge=1, description="How many distinct synthetic prompts (default 10)"
    )
    output_tokens: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TOKENS_BOUND,
        description="max_tokens of each request; answers that stop before it are counted",
    )
    output_tokens_stdev: float = Field(
        default=0, ge=0, description="Spread of output_tokens across prompts (normal)"
    )
    turns: int = Field(
        default=1,
        ge=1,
        le=100,
        description="User turns sent per conversation, each with the history and real answers",
    )
    label: RunLabel | None = Field(
        default=None, description="A short name for the run, shown in listings (one line)"
    )
    notes: RunNotes | None = Field(
        default=None, description="Free text kept with the run: what was tried, and why"
    )

    @model_validator(mode="after")
    def _ttft_needs_a_stream(self) -> "BenchmarkParameters":
        if self.ttft_slo is not None and not self.stream:
            raise ValueError("ttft_slo needs stream=true: without a stream there is no ttft")
        if self.tpot_slo is not None and not self.stream:
            raise ValueError("tpot_slo needs stream=true: without a stream there is no ttft")
        return self

    @model_validator(mode="after")
    def _spreads_need_a_target(self) -> "BenchmarkParameters":
        if self.prompt_tokens is None and self.prompt_tokens_stdev:
            raise ValueError("prompt_tokens_stdev needs prompt_tokens")
        if self.output_tokens is None and self.output_tokens_stdev:
            raise ValueError("output_tokens_stdev needs output_tokens")
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
    prompts: int = Field(
        description="Prompts or conversations: lines, synthetic prompts or dataset lines"
    )


class RequestRecord(GenerationResult):
    """One benchmark request, a row of the CSV: which job it was, and its result or error.

    A failed request keeps its timing (the final attempt's latency, attempts, total seconds)
    with no tokens and an empty text; the text of a success is not kept either.
    """

    prompt_index: int = Field(description="1-based position among the non-blank lines")
    prompt: str
    run: int
    turn: int = Field(default=1, description="1-based turn of the conversation")
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
    pinned_provider: str | None = Field(
        default=None, description="The provider its series pinned; null when not pinned"
    )
    cost_source: CostSource | None = Field(
        default=None, description="Where `cost` came from; null when it is unknown"
    )
    step: int | None = Field(default=None, description="With a sweep: the 1-based step")
    finished_seconds: float | None = Field(
        default=None, description="From the run's start to when the request's result came"
    )

    @property
    def ok(self) -> bool:
        return self.error_type is None

    @property
    def tpot_seconds(self) -> float | None:
        """Time per output token after the first: (latency - ttft) / (completion tokens - 1)."""
        if self.ttft_seconds is None or self.completion_tokens < 2:
            return None
        return max(self.latency_seconds - self.ttft_seconds, 0.0) / (self.completion_tokens - 1)


# The fields that shape a workload instead of a prompt file (synthetic prompts, and a dataset's
# turns), in the order the form and the command line show them.
WORKLOAD_FIELDS = (
    "prompt_tokens",
    "prompt_tokens_stdev",
    "prompts",
    "output_tokens",
    "output_tokens_stdev",
    "turns",
)


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
    provider: str | None = Field(
        default=None, description="The provider this series pinned; null when not pinned"
    )


def series_label(model: str, provider: str | None) -> str:
    """How a series is named for people: the model, and the provider it pinned."""
    return model if provider is None else f"{model} @ {provider}"


class PromptStats(RequestStats, _PromptKey):
    pass


class LengthStats(BaseModel):
    """Tokens as the upstream counted them (usage), over successful requests."""

    target: int | None = Field(description="What was asked for; null when nothing was")
    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    stdev: float | None = Field(default=None, description="Sample standard deviation")


class Lengths(BaseModel):
    input: LengthStats = Field(description="usage.prompt_tokens against prompt_tokens")
    output: LengthStats = Field(description="usage.completion_tokens against output_tokens")
    early_finishes: int = Field(
        description="Answers that ended before max_tokens (finish_reason other than `length`)"
    )


class TurnStats(BaseModel):
    turn: int = Field(description="1-based turn of each conversation")
    count: int
    ok: int
    ttft: Percentiles = Field(description="A falling ttft over turns shows prompt caching")
    input: LengthStats = Field(description="usage.prompt_tokens: the history grows each turn")


class ProviderStats(BaseModel):
    """A series' requests that one provider answered (as the answers named it)."""

    provider: str
    count: int
    ok: int
    latency: Percentiles
    ttft: Percentiles
    output_tokens_per_second: float | None
    cost: float | None


class OutsideUpstream(BaseModel):
    """How much of the latency we measured lies outside OpenRouter's own record of each
    request (its latency + generation time): the network to OpenRouter and its routing."""

    count: int = Field(description="Successful requests whose record was found")
    missing: int = Field(description="Successful requests whose record never came")
    p50_seconds: float | None
    p50_share: float | None = Field(description="Of our measured latency, 0..1")


class ModelStats(RequestStats, _ModelKey):
    outside_upstream: OutsideUpstream | None = Field(
        default=None, description="With GENERATION_STATS=true; null otherwise"
    )
    by_provider: list[ProviderStats] = Field(
        default_factory=list, description="Per provider that answered, most requests first"
    )
    warnings: list[str] = Field(default_factory=list)
    per_prompt: list[PromptStats]
    lengths: Lengths
    per_turn: list[TurnStats] = Field(
        default_factory=list, description="With turns > 1: per turn of the conversations"
    )


class ComparisonRow(BaseModel):
    model: str
    provider: str | None = None
    providers_answered: int = Field(default=0, description="Providers that answered")
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
    cost_per_1k_output_tokens: float | None = Field(
        default=None, description="USD per 1000 completion tokens, over requests of known cost"
    )


class Progress(BaseModel):
    """A run's counts, computed once where the run is recorded: the listing, the run, its
    events, the CLI and the report all read them here, never work them out again."""

    done: int = Field(description="Requests finished, warm-up included")
    total: int | None = Field(
        description="Requests planned, warm-up included; null while a duration decides (once "
        "the run has ended: the requests it sent)"
    )
    ok: int
    failed: int
    requests: int | None = Field(
        default=None,
        description="Measured requests (warm-up excluded) planned: prompts x runs x models; "
        "with a duration, null while it runs, then the requests sent",
    )
    finished_requests: int = Field(default=0, description="Measured requests finished")
    warmup_requests: int = Field(default=0, description="Warm-up requests finished")
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
    models: list[ModelStats] = Field(description="Per series, as the run's `models`")


class KneePoint(_ModelKey):
    """Per series (model, and the provider it pinned): the highest step of a sweep that met
    the SLOs; null fields when none did."""

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
    progress: Progress = Field(description="The same counts as the run's state record")
    models: list[ModelStats]
    comparison: list[ComparisonRow]
    steps: list[StepStats] | None = Field(
        default=None, description="With a sweep: each step's statistics (`models` is all steps)"
    )
    knee: list[KneePoint] | None = Field(
        default=None,
        description="With a sweep and an SLO: per series, the highest step that met it",
    )
    files: BenchmarkFiles
    error: str | None = Field(default=None, description="Why a failed run failed")

    @model_validator(mode="before")
    @classmethod
    def _progress_of_an_older_summary(cls, data: Any) -> Any:
        """A summary saved before it carried its progress: counted from its own fields, its
        warm-up requests (of which it kept no outcome) counted as ok."""
        if not isinstance(data, dict) or "progress" in data:
            return data
        try:
            measured, warmup = int(data["finished_requests"]), int(data["warmup_requests"])
            failed = sum(int(row["failed"]) for row in data["comparison"])
            progress = {
                "done": measured + warmup,
                "total": int(data["requests"]) + warmup,
                "ok": measured + warmup - failed,
                "failed": failed,
                "requests": int(data["requests"]),
                "finished_requests": measured,
                "warmup_requests": warmup,
                "elapsed_seconds": float(data["wall_seconds"]),
                "eta_seconds": None,
            }
        except (KeyError, TypeError, ValueError):
            return data  # not a summary of ours: validation says what is wrong with it
        return {**data, "progress": progress}


class BenchmarkListItem(BaseModel):
    id: str
    status: BenchmarkStatus
    started_at: datetime
    finished_at: datetime | None
    models: list[str]
    providers: list[str] = Field(
        default_factory=list, description="Providers pinned; empty: OpenRouter chose"
    )
    label: str | None = None
    requests: int | None
    finished_requests: int
    cost: float | None
    comparison: list[ComparisonRow] = Field(
        default_factory=list, description="Per series (so far, while it runs)"
    )
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
