"""A validated benchmark: its parameters, its prompts, the models' prices, and its jobs."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from src.schemas.benchmarks import BenchmarkParameters, SavedParameters
from src.services.benchmarker.load.schedule import arrival_offsets
from src.services.benchmarker.load.sources import (
    DEFAULT_TOKENS_PER_WORD,
    Conversation,
    is_synthetic,
    output_lengths,
    synthetic_conversations,
)
from src.services.openrouter.catalog import TokenPrices

if TYPE_CHECKING:
    from src.config import Settings

# What a series measures: a model, through one pinned provider or (None) as OpenRouter routes.
Series = tuple[str, str | None]


@dataclass(frozen=True, slots=True)
class BenchmarkJob:
    model: str
    prompt_index: int  # 1-based
    prompt: str
    run: int  # 1-based; 0 for warm-up requests
    warmup: bool = False
    # Its history and turns; the prompt is its first turn.
    conversation: Conversation | None = None
    provider: str | None = None  # pinned, with no fallback

    @classmethod
    def of(cls, pair: tuple[int, Conversation, Series], run: int) -> BenchmarkJob:
        """The job of one (index, conversation, series) of the plan in run `run` (0: warm-up)."""
        index, conversation, (model, provider) = pair
        return cls(
            model=model,
            prompt_index=index,
            prompt=conversation.label,
            run=run,
            warmup=run == 0,
            conversation=conversation,
            provider=provider,
        )


@dataclass(frozen=True, slots=True)
class BenchmarkPlan:
    """Every limit checked and every model known: what is left is to run it."""

    parameters: BenchmarkParameters
    prompts: list[str]
    # Per model, for the cost of a request when the upstream does not say it; None: unknown.
    prices: Mapping[str, TokenPrices | None] = field(default_factory=dict)
    # Per model, the providers it is pinned to, one series each; a model not here is one
    # series routed by OpenRouter. `provider=all` is already expanded.
    providers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # With a duration, the most measured requests it may send (MAX_BENCHMARK_REQUESTS).
    request_cap: int | None = None
    # The owner tag of the key that submitted it; None without inbound keys.
    owner: str | None = None
    # MAX_RUN_SECONDS: the run is stopped once it has lasted this long, warm-up included.
    max_seconds: float | None = None
    # A dataset's conversations; None: one single-turn conversation per prompt (a file's lines,
    # or synthetic prompts, which are generated from the parameters).
    conversations: list[Conversation] | None = None
    # Per model, the prompt tokens per word the warm-up measured, to size synthetic prompts.
    calibration: Mapping[str, float] = field(default_factory=dict)

    def conversations_for(self, model: str) -> list[Conversation]:
        parameters = self.parameters
        if is_synthetic(parameters):
            ratio = self.calibration.get(model, DEFAULT_TOKENS_PER_WORD)
            return synthetic_conversations(parameters, ratio)
        if self.conversations is not None:
            return self.conversations
        lengths = output_lengths(parameters, len(self.prompts))
        return [
            Conversation(turns=(prompt,), max_tokens=length)
            for prompt, length in zip(self.prompts, lengths, strict=True)
        ]

    def _turns(self) -> int:
        """Requests per run and series: each conversation's turns, up to `turns`."""
        if self.conversations is None:
            return len(self.prompts)
        return sum(min(self.parameters.turns, len(c.turns)) for c in self.conversations)

    def _pairs(self) -> list[tuple[int, Conversation, Series]]:
        """(1-based index, conversation, series), every series in turn for each conversation."""
        per_model = {model: self.conversations_for(model) for model in self.parameters.models}
        return [
            (index, per_model[series[0]][index - 1], series)
            for index in range(1, len(self.prompts) + 1)
            for series in self.series()
        ]

    @property
    def total_requests(self) -> int | None:
        """Measured requests planned; None when a duration decides how many."""
        if self.parameters.duration is not None:
            return None
        return self.step_requests * self.parameters.sweep_steps

    @property
    def step_requests(self) -> int:
        """Measured requests of one step of a sweep (of the whole run without a sweep)."""
        return len(self.series()) * self._turns() * self.parameters.runs

    def series(self) -> list[Series]:
        """Every model x pinned provider, in the order asked."""
        return [
            (model, provider)
            for model in self.parameters.models
            for provider in (self.providers.get(model) or (None,))
        ]

    def schedule_seconds(self) -> float | None:
        """When the last measured request is due, from the end of the warm-up: the duration, or
        with a rate the offset of the last send (Poisson offsets are seeded, so known up front).
        None for a closed loop of runs, whose length only the upstream decides.
        """
        parameters = self.parameters
        if parameters.duration is not None:
            return parameters.duration * parameters.sweep_steps
        match parameters.sweep:
            case None:
                rates = [parameters.rate]
            case "concurrency":
                rates = [parameters.rate] * parameters.sweep_steps
            case "rate":
                rates = list(parameters.sweep_values)
            case "auto":
                return None  # its rates depend on its first steps
        # A conversation's later turns follow its answers, not the schedule: one send each.
        sends = len(self.series()) * len(self.prompts) * parameters.runs
        seconds = 0.0
        for rate in rates:
            if rate is None:
                return None
            offsets = arrival_offsets(rate, parameters.arrival, parameters.seed)
            seconds += next(itertools.islice(offsets, sends - 1, None))
        return seconds

    def warmup_jobs(self) -> Iterator[BenchmarkJob]:
        """The warm-up requests: prompts and models in turn, left out of the statistics."""
        pairs = itertools.cycle(self._pairs())
        for pair in itertools.islice(pairs, self.parameters.warmup):
            yield BenchmarkJob.of(pair, 0)

    def jobs(self) -> Iterator[BenchmarkJob]:
        """Run by run, prompt by prompt, every series in turn: series interleave, so they share
        the same network and upstream conditions instead of one model getting the quiet minutes.
        With a duration the runs go on until the runner stops asking.
        """
        runs = (
            itertools.count(1)
            if self.parameters.duration is not None
            else range(1, self.parameters.runs + 1)
        )
        pairs = self._pairs()
        jobs = (BenchmarkJob.of(pair, run) for run in runs for pair in pairs)
        cap = self.request_cap
        if cap is not None and self.conversations is not None and self.parameters.turns > 1:
            cap = max(1, cap // self.parameters.turns)  # a job is up to `turns` requests
        return itertools.islice(jobs, cap)

    def saved_parameters(self) -> SavedParameters:
        return SavedParameters(**{**self.parameters.model_dump(), "prompts": len(self.prompts)})


class PlanRecord(BaseModel):
    """A plan as it crosses to a runner (its stdin, or the run store of JOBS_BACKEND=redis):
    the plan, never a key or a setting, which the runner's own settings complete."""

    parameters: BenchmarkParameters
    prompts: list[str]
    conversations: list[Conversation] | None = None
    prices: dict[str, TokenPrices | None]
    providers: dict[str, tuple[str, ...]] = {}
    owner: str | None = None

    @classmethod
    def of(cls, plan: BenchmarkPlan) -> PlanRecord:
        return cls.model_validate(_fields_of_a_record(plan))

    def plan(self, settings: Settings) -> BenchmarkPlan:
        return BenchmarkPlan(
            **_fields_of_a_record(self),
            request_cap=settings.max_benchmark_requests,
            max_seconds=settings.max_run_seconds,
        )


def _fields_of_a_record(source: BenchmarkPlan | PlanRecord) -> dict[str, Any]:
    """What a plan and its record both hold, under the same names."""
    return {name: getattr(source, name) for name in PlanRecord.model_fields}
