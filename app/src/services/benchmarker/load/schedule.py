"""When an open-loop benchmark sends each request: offsets from the start, in seconds."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

from src.schemas.benchmarks import Arrival


def arrival_offsets(rate: float, arrival: Arrival, seed: int) -> Iterator[float]:
    """Constant arrivals are evenly spaced, 1/rate apart; Poisson arrivals have exponential gaps
    with mean 1/rate, from a generator seeded with `seed`, so a schedule can be replayed.
    The first request goes at 0.
    """
    if arrival == "constant":
        return (index / rate for index in itertools.count())
    rng = random.Random(seed)

    def poisson() -> Iterator[float]:
        offset = 0.0
        while True:
            yield offset
            offset += rng.expovariate(rate)

    return poisson()
