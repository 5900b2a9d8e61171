"""A validated benchmark: its parameters, its prompts, and the jobs they make."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from src.schemas.benchmarks import BenchmarkParameters, SavedParameters


@dataclass(frozen=True, slots=True)
class BenchmarkJob:
    model: str
    prompt_index: int  # 1-based
    prompt: str
    run: int  # 1-based


@dataclass(frozen=True, slots=True)
class BenchmarkPlan:
    """Every limit checked and every model known: what is left is to run it."""

    parameters: BenchmarkParameters
    prompts: list[str]

    @property
    def total_requests(self) -> int:
        return len(self.parameters.models) * len(self.prompts) * self.parameters.runs

    def jobs(self) -> Iterator[BenchmarkJob]:
        """Run by run, prompt by prompt, every model in turn: models interleave, so they share
        the same network and upstream conditions instead of one model getting the quiet minutes.
        """
        for run in range(1, self.parameters.runs + 1):
            for index, prompt in enumerate(self.prompts, start=1):
                for model in self.parameters.models:
                    yield BenchmarkJob(model=model, prompt_index=index, prompt=prompt, run=run)

    def saved_parameters(self) -> SavedParameters:
        return SavedParameters(**self.parameters.model_dump(), prompts=len(self.prompts))
