"""When an open-loop benchmark sends its requests: the offsets `arrival_offsets` gives."""

from __future__ import annotations

from itertools import islice

import pytest

from src.services.benchmarker.load.schedule import arrival_offsets


def test_constant_arrivals_are_evenly_spaced_from_zero() -> None:
    assert list(islice(arrival_offsets(4.0, "constant", 1), 5)) == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_constant_arrivals_ignore_the_seed() -> None:
    first = list(islice(arrival_offsets(3.0, "constant", 1), 10))

    assert list(islice(arrival_offsets(3.0, "constant", 2), 10)) == first


def test_poisson_arrivals_start_at_zero_and_replay_with_their_seed() -> None:
    first = list(islice(arrival_offsets(40.0, "poisson", 7), 200))

    assert first[0] == 0.0
    assert list(islice(arrival_offsets(40.0, "poisson", 7), 200)) == first
    assert list(islice(arrival_offsets(40.0, "poisson", 8), 200)) != first


def test_poisson_gaps_are_random_with_a_mean_of_one_over_the_rate() -> None:
    offsets = list(islice(arrival_offsets(40.0, "poisson", 7), 2001))
    gaps = [later - earlier for earlier, later in zip(offsets, offsets[1:], strict=False)]

    assert all(gap > 0 for gap in gaps)
    assert len(set(gaps)) == len(gaps)  # not evenly spaced
    assert sum(gaps) / len(gaps) == pytest.approx(1 / 40, rel=0.1)
