"""The steps of a sweep: what each one sends (its concurrency, its rate). Fixed sweeps know
them up front; `auto` places its rates once its first two steps have measured the range, as
guidellm's sweep does: a synchronous step, a maximum-throughput step, then evenly spaced rates
between the two throughputs.
"""

from __future__ import annotations

from dataclasses import dataclass

from src.schemas.benchmarks import BenchmarkParameters

DIGITS = 6


@dataclass(frozen=True, slots=True)
class Step:
    number: int  # 1-based
    concurrency: int
    rate: float | None  # None: closed loop


def first_steps(parameters: BenchmarkParameters) -> list[Step]:
    """Every step of a fixed sweep (one step without a sweep); the first two of `auto`."""
    values = parameters.sweep_values
    match parameters.sweep:
        case None:
            return [Step(1, parameters.concurrency, parameters.rate)]
        case "concurrency":
            return [
                Step(number, int(value), parameters.rate)
                for number, value in enumerate(values, start=1)
            ]
        case "rate":
            return [
                Step(number, parameters.concurrency, value)
                for number, value in enumerate(values, start=1)
            ]
        case "auto":
            return [Step(1, 1, None), Step(2, parameters.concurrency, None)]


def auto_rate_steps(
    parameters: BenchmarkParameters, synchronous: float, maximum: float
) -> list[Step]:
    """The rates of `auto` between the two measured throughputs (requests per second), each
    capped at `concurrency` in flight; none when nothing was measured."""
    count = parameters.sweep_steps - 2
    low, high = sorted((synchronous, maximum))
    if high <= 0:
        return []
    spacing = (high - low) / (count + 1)
    rates = [round(low + spacing * index, DIGITS) for index in range(1, count + 1)]
    return [
        Step(number, parameters.concurrency, rate)
        for number, rate in enumerate((rate for rate in rates if rate > 0), start=3)
    ]


@dataclass(frozen=True, slots=True)
class StepRun:
    """A step as it ran: how long its requests took, from its first send to its last answer."""

    step: Step
    wall_seconds: float
    # With a rate: the offset of the step's last send from the step's start.
    last_send_offset: float | None = None
