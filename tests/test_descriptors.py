"""The descriptor budget: MAX_CONNECTIONS against the process's descriptor limit.

The limits themselves are exercised against a live process in tests/e2e/test_preauth_limits.py.
"""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from src.api.gate.descriptors import (
    DEFAULT_BACKLOG,
    descriptor_budget,
    descriptors_needed,
    raise_descriptor_limit,
)
from tests.helpers.app import make_settings


def limit(monkeypatch: pytest.MonkeyPatch, soft: int, hard: int) -> list[tuple[int, int]]:
    """Pretend the process's descriptor limit is (soft, hard); returns what gets set."""
    state = [(soft, hard)]

    def getrlimit(which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return state[-1]

    def setrlimit(which: int, limits: tuple[int, int]) -> None:
        assert which == resource.RLIMIT_NOFILE
        state.append(limits)

    monkeypatch.setattr(resource, "getrlimit", getrlimit)
    monkeypatch.setattr(resource, "setrlimit", setrlimit)
    return state


def test_max_connections_is_kept_when_the_descriptor_limit_holds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit(monkeypatch, 20_000, 20_000)
    budget = descriptor_budget(make_settings(tmp_path, max_connections=1000))

    assert (budget.connections, budget.asked, budget.backlog) == (1000, 1000, 1000)


def test_the_soft_descriptor_limit_is_raised_as_far_as_max_connections_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path, max_connections=1000)
    needed = descriptors_needed(1000, settings.upstream_max_connections)
    state = limit(monkeypatch, 1024, 1_048_576)

    raise_descriptor_limit(settings)

    assert state[-1] == (needed, 1_048_576)
    assert descriptor_budget(settings).connections == 1000


def test_max_connections_is_lowered_to_what_a_low_hard_limit_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path, max_connections=1000)
    limit(monkeypatch, 512, 512)

    raise_descriptor_limit(settings)
    budget = descriptor_budget(settings)

    upstream = settings.upstream_max_connections
    assert descriptors_needed(budget.connections, upstream) <= 512
    assert descriptors_needed(budget.connections + 1, upstream) > 512
    assert budget.backlog == min(DEFAULT_BACKLOG, budget.connections)
    assert budget.descriptor_limit == 512
