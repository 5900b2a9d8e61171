"""Per-request scenarios: what a test forces on one request (the list is in the package doc).

A scenario comes from the `X-Emulator-Scenario` header or from `[[emulator:<spec>]]`
directives in the last user message; both are comma-separated lists of names and
`name=value` parameters, and they add up.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Final

_DIRECTIVE_MARK: Final = "[[emulator:"
_DIRECTIVE: Final = re.compile(r"\[\[emulator:([^\]]*)\]\]")


class ScenarioError(ValueError):
    """A scenario name or value the emulator does not know; answered with a 400."""


@dataclass(frozen=True, slots=True)
class Scenario:
    status: int | None = None
    rate_limit_times: int = 0
    retry_after_seconds: float | None = None
    timeout: bool = False
    invalid_json: bool = False
    truncated: bool = False
    mid_stream_error: bool = False
    ttft_seconds: float | None = None
    tokens_per_second: float | None = None
    # Lower-cased provider names failing for this request only, as if they were down.
    failing_providers: frozenset[str] = frozenset()


NO_SCENARIO: Final = Scenario()

# The flags that answer with an error status instead of the completion.
_STATUS_FLAGS: Final[dict[str, int]] = {
    "rate_limit": 429,
    "unauthorized": 401,
    "payment_required": 402,
    "forbidden": 403,
    "request_timeout": 408,
    "server_error": 500,
    "bad_gateway": 502,
    "unavailable": 503,
    "gateway_timeout": 504,
}
# The flags that switch on the Scenario field of their own name.
_SWITCHES: Final = ("timeout", "invalid_json", "truncated", "mid_stream_error")
# Field updates per flag; `Any` because `dataclasses.replace` takes heterogeneous kwargs.
_FLAGS: Final[dict[str, dict[str, Any]]] = {
    **{name: {"status": status} for name, status in _STATUS_FLAGS.items()},
    **{name: {name: True} for name in _SWITCHES},
    "rate_limit_once": {"rate_limit_times": 1},
}


def _within(
    parse: Callable[[str], float], low: float, high: float = math.inf
) -> Callable[[str], Any]:
    """A parser of `name=value` that refuses a value outside [low, high] (NaN too: it fails
    every comparison)."""

    def parsed(raw: str) -> float:
        value = parse(raw)
        if not low <= value <= high:
            raise ValueError(raw)
        return value

    return parsed


# The largest float as the bound refuses infinity.
_seconds = _within(float, 0, sys.float_info.max)
_PARAMETERS: Final[dict[str, tuple[str, Callable[[str], Any]]]] = {
    "rate_limit_times": ("rate_limit_times", _within(int, 0)),
    "retry_after": ("retry_after_seconds", _seconds),
    "ttft": ("ttft_seconds", _seconds),
    "delay": ("ttft_seconds", _seconds),
    "tps": ("tokens_per_second", _seconds),
    "status": ("status", _within(int, 400, 599)),
}


@lru_cache(maxsize=256)
def parse_scenario(spec: str) -> Scenario:
    """Parse `name,name=value,...`; cached because a load test repeats one spec."""
    scenario = NO_SCENARIO
    for item in spec.split(","):
        name, has_value, raw = item.strip().partition("=")
        name = name.strip().lower()
        if not name:
            continue
        if not has_value and name in _FLAGS:
            scenario = replace(scenario, **_FLAGS[name])
            continue
        if has_value and name == "fail_provider":
            # Several add up: `fail_provider=Alpha,fail_provider=Beta`.
            if not raw.strip():
                raise ScenarioError("Bad value for emulator scenario 'fail_provider': ''")
            failing = scenario.failing_providers | {raw.strip().lower()}
            scenario = replace(scenario, failing_providers=failing)
            continue
        if has_value and name in _PARAMETERS:
            field_name, parse = _PARAMETERS[name]
            try:
                value = parse(raw.strip())
            except ValueError:
                raise ScenarioError(f"Bad value for emulator scenario {name!r}: {raw!r}") from None
            scenario = replace(scenario, **{field_name: value})
            continue
        raise ScenarioError(f"Unknown emulator scenario {item.strip()!r}")
    return scenario


def directives(text: str) -> str:
    """The specs of every `[[emulator:...]]` in `text`, joined with commas."""
    if _DIRECTIVE_MARK not in text:  # the common case costs one substring scan
        return ""
    return ",".join(_DIRECTIVE.findall(text))


def scenario_for(header: str | None, text: str) -> Scenario:
    """The scenario of one request: its header plus the directives in its last user message."""
    spec = ",".join(part for part in (header, directives(text)) if part)
    return parse_scenario(spec) if spec else NO_SCENARIO
