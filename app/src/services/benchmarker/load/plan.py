"""A validated benchmark: its parameters, its prompts, the models' prices, and its jobs."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from src.schemas.benchmarks import BenchmarkParameters, SavedParameters
from src.services.benchmarker.load.schedule import arrival_offsets
from src.services.openrouter.catalog import TokenPrices


@dataclass(frozen=True, slots=True)
class BenchmarkJob:
    model: str
    prompt_index: int  # 1-based
    prompt: str
    run: int  # 1-based; 0 for warm-up requests
    warmup: bool = False


@dataclass(frozen=True, slots=True)
class BenchmarkPlan:
    """Every limit checked and every model known: what is left is to run it."""

    parameters: BenchmarkParameters
    prompts: list[str]
    # Per model, for the cost of a request when the upstream does not say it; None: unknown.
    prices: Mapping[str, TokenPrices | None] = field(default_factory=dict)
    # With a duration, the most measured requests it may send (MAX_BENCHMARK_REQUESTS).
    request_cap: int | None = None
    # The owner tag of the key that submitted it; None without inbound keys.
    owner: str | None = None
    # MAX_RUN_SECONDS: the run is stopped once it has lasted this long, warm-up included.
    max_seconds: float | None = None

    @property
    def total_requests(self) -> int | None:
        """Measured requests planned; None when a duration decides how many."""
        if self.parameters.duration is not None:
            return None
        return self.step_requests * self.parameters.sweep_steps

    @property
    def step_requests(self) -> int:
        """Measured requests of one step of a sweep (of the whole run without a sweep)."""
        return len(self.parameters.models) * len(self.prompts) * self.parameters.runs

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
        seconds = 0.0
        for rate in rates:
            if rate is None:
                return None
            offsets = arrival_offsets(rate, parameters.arrival, parameters.seed)
            seconds += next(itertools.islice(offsets, self.step_requests - 1, None))
        return seconds

    def warmup_jobs(self) -> Iterator[BenchmarkJob]:
        """The warm-up requests: prompts and models in turn, left out of the statistics."""
        pairs = itertools.cycle(
            [
                (index, prompt, model)
                for index, prompt in enumerate(self.prompts, start=1)
                for model in self.parameters.models
            ]
        )
        for index, prompt, model in itertools.islice(pairs, self.parameters.warmup):
            yield BenchmarkJob(model=model, prompt_index=index, prompt=prompt, run=0, warmup=True)

    def jobs(self) -> Iterator[BenchmarkJob]:
        """Run by run, prompt by prompt, every model in turn: models interleave, so they share
        the same network and upstream conditions instead of one model getting the quiet minutes.
        With a duration the runs go on until the runner stops asking.
        """
        runs = (
            itertools.count(1)
            if self.parameters.duration is not None
            else range(1, self.parameters.runs + 1)
        )
        jobs = (
            BenchmarkJob(model=model, prompt_index=index, prompt=prompt, run=run)
            for run in runs
            for index, prompt in enumerate(self.prompts, start=1)
            for model in self.parameters.models
        )
        return itertools.islice(jobs, self.request_cap)

    def saved_parameters(self) -> SavedParameters:
        return SavedParameters(**self.parameters.model_dump(), prompts=len(self.prompts))
